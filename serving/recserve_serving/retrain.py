"""One retrain: warm-start from the stable version, fine-tune on what is new, judge, register.

The stable checkpoint (``models:/NAME@champion`` unless told otherwise) is loaded, its lower
layers frozen as ``train`` does, and fine-tuned with ``train.fit`` (or ``dp.fit_private`` when
``privacy.dp_epsilon`` is set) on ``retrain_data``'s pairs. Parent and child are then scored on
the same held-out newest slice with ``evaluate``'s metrics; the child is registered as the next
version whatever it scored, with its lineage and the verdict as tags, and the candidate alias
moves to it only when it is no worse than the parent on the gate metric (within ``max_drop``).
A rejected version stays in the registry, tagged with the figures, so that a bad week is
visible rather than silently skipped.

Everything is written to a temporary directory under the registry's state and registered from
there: a run that fails or runs out of time (``budget.max_minutes``) registers nothing and leaves
nothing behind. A fusion head (``fusion.json``) of the parent is carried over unchanged: it
weighs retrieval features against the ranker's score, and refitting it needs the retrieval
index this step does not build; the head was fitted on the parent's score scale, which a short
fine-tune moves little, and the slice metrics here are of the ranker alone.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch
from pydantic import BaseModel

from recserve_serving.data import Dataset
from recserve_serving.errors import CheckpointError
from recserve_serving.evaluate import EvalSet, evaluate_scorer
from recserve_serving.fusion import FUSION_FILE
from recserve_serving.lineage import (
    DATA_CUTOFF_TAG,
    DP_DELTA_TAG,
    DP_EPSILON_TAG,
    FEEDBACK_DIGEST_TAG,
    PARENT_VERSION_TAG,
    REASON_TAG,
    VERDICT_TAG,
    training_tags,
)
from recserve_serving.loaded_data import LoadedData
from recserve_serving.model import Checkpoint, load_checkpoint, save_checkpoint, score_pairs
from recserve_serving.registry import CHAMPION, Registry, ResolvedCheckpoint
from recserve_serving.retrain_data import (
    NothingToRetrain,
    Pseudonymize,
    Split,
    combine,
    holdout_eval_set,
    split,
    training_pairs,
    visible_dataset,
)
from recserve_serving.train import TrainingBudgetExceeded, TrainSettings, fit, freeze_lower
from recserve_serving.trainingspec import TrainingSpec

log = logging.getLogger(__name__)

PROMOTED: Final = "promoted-to-candidate"
REJECTED: Final = "rejected"
NOTHING: Final = "nothing-to-retrain"
Verdict = Literal["promoted-to-candidate", "rejected", "nothing-to-retrain"]
FREEZE_LAYERS = 3
FINE_TUNE_LR = 5e-5
FINE_TUNE_HEAD_LR = 5e-4
"""Lower than a first training's (1e-4, 2e-3): the weights start trained, and a few hundred steps
on a week's feedback should adjust them, not overwrite what the whole history taught them."""


class RetrainResult(BaseModel):
    """What one retrain did, for the CLI, a CronJob's log and ``--report``."""

    model: str
    parent_uri: str
    parent_version: str | None
    new_version: str | None = None
    verdict: Verdict
    reason: str
    gate_metric: str
    max_drop: float
    candidate_alias: str
    parent_metrics: dict[str, float] = {}
    new_metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    cutoff: int | None = None
    holdout_start: int | None = None
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    train_seconds: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class RetrainInputs:
    """The data side of a retrain: the platform's table, the log's events, who was erased, and
    the keyed pseudonym function that joins the first two."""

    loaded: LoadedData
    events: list[dict[str, Any]]
    erased: frozenset[str]
    pseudonymize: Pseudonymize


@dataclass(frozen=True)
class RetrainOptions:
    stable_alias: str = CHAMPION
    steps: int | None = None
    cutoff: int | None = None
    """Overrides the parent's ``recserve.data_cutoff`` (a version registered before lineage tags)."""
    eval_users: int = 100
    eval_candidates: int = 50
    seed: int = 0


def parent_cutoff(registry: Registry, parent: ResolvedCheckpoint, override: int | None) -> int:
    """Where the parent's training data ends: its ``recserve.data_cutoff`` tag, or ``override``."""
    if override is not None:
        return override
    tags = registry.version_tags(parent.name, str(parent.version))
    raw = tags.get(DATA_CUTOFF_TAG)
    if raw is None:
        raise CheckpointError(
            f"{parent.uri} (version {parent.version}) has no {DATA_CUTOFF_TAG} tag, so what is new since "
            "it was trained is unknown: retrain it once with recserve train (which records it), or pass "
            "--cutoff UNIX_SECONDS"
        )
    try:
        return int(float(raw))
    except ValueError:
        raise CheckpointError(
            f"{parent.uri}: tag {DATA_CUTOFF_TAG}={raw!r} is not Unix seconds; fix the tag or pass --cutoff"
        ) from None


def gate(spec: TrainingSpec, parent: Mapping[str, float], child: Mapping[str, float]) -> tuple[Verdict, str]:
    """The verdict and its reason with the figures: pass when child >= parent - max_drop."""
    metric = spec.gate_metric
    floor = parent[metric] - spec.max_drop
    figures = f"{metric} {child[metric]:.4f} vs stable {parent[metric]:.4f} (max drop {spec.max_drop:g})"
    if child[metric] >= floor:
        return PROMOTED, f"{figures}: no worse; @{spec.candidate_alias} moved"
    return REJECTED, f"{figures}: below the floor {floor:.4f}; @{spec.candidate_alias} not moved"


def _slice_metrics(checkpoint: Checkpoint, data: Dataset, evals: EvalSet) -> dict[str, float]:
    torch.set_num_threads(2)
    with torch.inference_mode():
        return evaluate_scorer(lambda u, i: score_pairs(checkpoint, u, i), data, evals)


def _remaining(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TrainingBudgetExceeded(
            "the retrain ran past spec.training.budget.maxMinutes before registering; nothing was "
            "registered: raise budget.maxMinutes or lower budget.steps"
        )


def retrain(
    registry: Registry, name: str, spec: TrainingSpec, inputs: RetrainInputs, options: RetrainOptions
) -> RetrainResult:
    """Fine-tune ``models:/NAME@stable_alias`` on what came after its cutoff; see the module doc."""
    started = time.monotonic()
    deadline = started + spec.budget.max_minutes * 60
    parent = registry.resolve(f"models:/{name}@{options.stable_alias}")
    cutoff = parent_cutoff(registry, parent, options.cutoff)
    result = RetrainResult(
        model=name,
        parent_uri=parent.uri,
        parent_version=parent.version,
        verdict=NOTHING,
        reason="",
        gate_metric=spec.gate_metric,
        max_drop=spec.max_drop,
        candidate_alias=spec.candidate_alias,
        cutoff=cutoff,
    )
    combined = combine(inputs.loaded, inputs.events, inputs.erased, inputs.pseudonymize)
    counts = {
        "logged_events": combined.logged_events,
        "duplicate_events": combined.duplicates,
        "unknown_items": combined.unknown_items,
        "malformed_events": combined.malformed,
        "erased_excluded": combined.erased_rows,
    }
    try:
        parts = split(
            combined.interactions,
            cutoff,
            holdout_fraction=spec.holdout_fraction,
            min_new_interactions=spec.min_new_interactions,
            window_days=spec.window_days,
        )
        data = visible_dataset(inputs.loaded, parts, f"{inputs.loaded.digest}+{combined.feedback_digest}")
        evals = holdout_eval_set(
            data, parts, users=options.eval_users, candidates=options.eval_candidates, seed=options.seed
        )
    except NothingToRetrain as why:
        return result.model_copy(
            update={"reason": str(why), "counts": counts, "seconds": time.monotonic() - started}
        )
    counts |= {
        "new": parts.new_count,
        "new_train": len(parts.train),
        "holdout": len(parts.holdout),
        "holdout_users": len(evals.cases),
        "before_cutoff": len(parts.old),
    }
    log.info("retrain %s from version %s: %s", name, parent.version, counts)
    checkpoint = load_checkpoint(parent.path)
    parent_metrics = _slice_metrics(checkpoint, data, evals)
    trained = _fine_tune(checkpoint, data, parts, spec, options, deadline)
    counts |= trained.counts
    new_metrics = _slice_metrics(checkpoint, data, evals)
    verdict, reason = gate(spec, parent_metrics, new_metrics)
    tags = _lineage(parent, parts, inputs, combined.feedback_digest, verdict, reason, trained)
    metrics = {
        **new_metrics,
        **{f"parent_{k}": v for k, v in parent_metrics.items()},
        **{f"count_{k}": float(v) for k, v in counts.items()},
        **trained.metrics,
    }
    with tempfile.TemporaryDirectory(prefix="recserve-retrain-", dir=registry.state) as scratch:
        out = Path(scratch) / "checkpoint"
        checkpoint.meta.extra.update({"retrained_from": parent.uri, "retrain_steps": trained.steps})
        save_checkpoint(checkpoint, out)
        if (parent.path / FUSION_FILE).is_file():
            shutil.copy2(parent.path / FUSION_FILE, out / FUSION_FILE)
        _remaining(deadline)
        aliases = (spec.candidate_alias,) if verdict == PROMOTED else ()
        registered = registry.register(name, out, metrics, tags=tags, aliases=aliases)
    return result.model_copy(
        update={
            "new_version": registered.version,
            "verdict": verdict,
            "reason": reason,
            "parent_metrics": parent_metrics,
            "new_metrics": new_metrics,
            "counts": counts,
            "holdout_start": parts.holdout_start,
            "dp_epsilon": trained.dp_epsilon,
            "dp_delta": trained.dp_delta,
            "train_seconds": trained.metrics.get("train_seconds", 0.0),
            "seconds": time.monotonic() - started,
        }
    )


@dataclass(frozen=True)
class _Trained:
    steps: int
    metrics: dict[str, float]
    counts: dict[str, int]
    data_start: int
    data_end: int
    dp_epsilon: float | None = None
    dp_delta: float | None = None


def _fine_tune(
    checkpoint: Checkpoint,
    data: Dataset,
    parts: Split,
    spec: TrainingSpec,
    options: RetrainOptions,
    deadline: float,
) -> _Trained:
    """Fit ``checkpoint`` in place: ``fit``'s listwise loop, or DP-SGD when the spec asks for it."""
    steps = options.steps if options.steps is not None else spec.budget.steps
    batch = spec.budget.batch_size
    depth = int(checkpoint.model.encoder.config.num_hidden_layers)
    freeze_lower(checkpoint, min(FREEZE_LAYERS, depth // 2))
    rng = np.random.default_rng(options.seed)
    privacy = spec.privacy
    # DP: each distinct positive once (a repeated example would spend its budget twice).
    wanted = steps * batch if privacy.dp_epsilon is None else None
    built = training_pairs(data, parts, wanted, rng, replay_fraction=spec.replay_fraction)
    counts = {
        "train_groups_new": built.new_groups,
        "train_groups_replay": built.replay_groups,
        "new_positives": built.new_positives,
        "replay_positives": built.replay_positives,
    }
    start, end = parts.window_start, int(parts.train.timestamp.max())
    if privacy.dp_epsilon is None:
        settings = TrainSettings(
            steps=steps,
            batch_size=batch,
            max_len=checkpoint.meta.max_len,
            seed=options.seed,
            lr=FINE_TUNE_LR,
            head_lr=FINE_TUNE_HEAD_LR,
        )
        metrics = fit(checkpoint, data, settings, pairs=built.pairs, deadline=deadline)
        return _Trained(int(metrics["train_steps"]), metrics, counts, start, end)
    from recserve_serving.dp import PrivateSettings, fit_private

    private = fit_private(
        checkpoint,
        built.pairs,
        PrivateSettings(
            steps=steps,
            examples_per_step=max(1, batch // 4),
            target_epsilon=privacy.dp_epsilon,
            delta=privacy.dp_delta,
            max_grad_norm=privacy.max_grad_norm,
            lr=FINE_TUNE_LR,
            head_lr=FINE_TUNE_HEAD_LR,
            seed=options.seed,
        ),
        deadline=deadline,
    )
    metrics = {
        "train_seconds": private.seconds,
        "train_steps": float(private.steps),
        "train_loss": private.train_loss,
        "dp_epsilon": private.epsilon,
        "dp_delta": private.delta,
        "dp_noise_multiplier": private.noise_multiplier,
        "dp_sample_rate": private.sample_rate,
    }
    counts["dp_examples"] = private.examples
    return _Trained(private.steps, metrics, counts, start, end, private.epsilon, private.delta)


def _lineage(
    parent: ResolvedCheckpoint,
    parts: Split,
    inputs: RetrainInputs,
    feedback_digest: str,
    verdict: Verdict,
    reason: str,
    trained: _Trained,
) -> dict[str, str]:
    tags = training_tags(
        data_cutoff=trained.data_end, data_digest=inputs.loaded.digest, data_start=trained.data_start
    )
    tags |= {
        PARENT_VERSION_TAG: str(parent.version),
        FEEDBACK_DIGEST_TAG: feedback_digest,
        VERDICT_TAG: verdict,
        REASON_TAG: reason[:4000],
    }
    if trained.dp_epsilon is not None:
        tags[DP_EPSILON_TAG] = f"{trained.dp_epsilon:.6g}"
        tags[DP_DELTA_TAG] = f"{trained.dp_delta:.6g}"
    return tags
