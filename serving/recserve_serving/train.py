"""Fine-tune the MiniLM cross-encoder on interaction pairs, on 2 CPU cores in minutes.

The demo budget (about four minutes) is met with short sequences (64 tokens, the user
side truncated first) and frozen embeddings plus lower layers: the lower layers of a
sentence encoder already carry general language, the upper ones and the head learn the
task. Optional FGM adversarial training perturbs the embedding output along its loss
gradient, which regularises a model that sees only a few thousand pairs.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recserve_serving.data import Dataset, Pair
from recserve_serving.errors import RecserveError
from recserve_serving.evaluate import EvalSet, eval_set, evaluate_scorer, popularity_scores, ranking_metrics
from recserve_serving.model import Checkpoint, new_ranker, save_checkpoint, score_pairs
from recserve_serving.registry import Registry, ResolvedCheckpoint

log = logging.getLogger(__name__)

DEFAULT_STEPS = 200
DEFAULT_BATCH = 32
DEFAULT_MAX_LEN = 64
DEFAULT_SHAPE = "prefix"
PREFIX_MAX_LEN = 128
"""A prefix-shaped ranker reads its user once per request, so the user can have 96 tokens
(128 less the candidate's 32) for what 64-token cross pairs cost; histories run to ~70."""


def default_max_len(shape: str) -> int:
    return PREFIX_MAX_LEN if shape == "prefix" else DEFAULT_MAX_LEN


class TrainingBudgetExceeded(RecserveError):
    """Training ran past its wall-clock deadline; the caller registers nothing."""


LabelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
InputsLoss = Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
"""``(logits, labels, inputs) -> loss``: distillation also needs the inputs, for the teacher."""


@dataclass(frozen=True)
class TrainSettings:
    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH
    max_len: int = DEFAULT_MAX_LEN
    seed: int = 0
    lr: float = 1e-4
    head_lr: float = 2e-3
    freeze_layers: int = 3
    negatives_per_positive: int = 3
    adversarial: float | None = None
    eval_users: int = 100
    eval_candidates: int = 50


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze_lower(checkpoint: Checkpoint, layers: int) -> None:
    encoder: Any = checkpoint.model.encoder
    for parameter in encoder.embeddings.parameters():
        parameter.requires_grad_(False)
    for layer in encoder.encoder.layer[:layers]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)


class _FGM:
    """Fast Gradient Method on the embedding output (works with frozen embeddings)."""

    def __init__(self, embeddings: nn.Module, epsilon: float) -> None:
        self.epsilon = epsilon
        self.captured: torch.Tensor | None = None
        self.delta: torch.Tensor | None = None
        self.handle = embeddings.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if self.delta is not None:
            return output + self.delta
        if torch.is_grad_enabled():
            output.retain_grad() if output.requires_grad else output.requires_grad_(True)
            self.captured = output
        return output

    def adversarial_loss(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        if self.captured is None or self.captured.grad is None:
            return None
        grad = self.captured.grad.detach()
        norm = grad.norm()
        self.captured = None
        if not torch.isfinite(norm) or norm == 0:
            return None
        self.delta = self.epsilon * grad / norm
        try:
            return loss_fn()
        finally:
            self.delta = None


def _batches(pairs: list[Pair], batch_size: int) -> list[list[Pair]]:
    return [pairs[i : i + batch_size] for i in range(0, len(pairs) - batch_size + 1, batch_size)]


def listwise_loss(group: int) -> LabelLoss:
    """Softmax cross-entropy of each positive against its own negatives (same user text).

    It optimises the ranking the metrics measure, and unlike binary cross-entropy on a 1:3
    label mix it does not first spend its steps learning the label prior.
    """

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        grouped = logits.view(-1, group)
        targets = labels.view(-1, group).argmax(dim=1)
        return nn.functional.cross_entropy(grouped, targets)

    return loss


def fit(
    checkpoint: Checkpoint,
    data: Dataset,
    settings: TrainSettings,
    *,
    loss_for: InputsLoss | None = None,
    pairs: list[Pair] | None = None,
    deadline: float | None = None,
) -> dict[str, float]:
    """Train ``checkpoint.model`` in place on freshly sampled pairs; distillation passes ``loss_for``.

    ``loss_for(logits, labels, inputs)`` replaces the default listwise loss so the same loop
    (threads, schedule, FGM, seeding) serves fine-tuning, pruning recovery and distillation.
    ``deadline`` (a ``time.monotonic()`` instant): past it, ``TrainingBudgetExceeded`` is raised
    between steps, so a retrain with a wall-clock budget stops without a half-trained result.
    """
    torch.set_num_threads(2)
    seed_everything(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = checkpoint.model.train()
    if pairs is None:
        pairs = data.training_pairs(
            settings.steps * settings.batch_size, rng, negatives_per_positive=settings.negatives_per_positive
        )
    group = 1 + settings.negatives_per_positive
    if settings.batch_size % group:
        raise ValueError(f"batch_size {settings.batch_size} must be a multiple of 1 + negatives ({group})")
    groups = [pairs[i : i + group] for i in range(0, len(pairs) - group + 1, group)]
    batches = _batches([p for i in rng.permutation(len(groups)) for p in groups[i]], settings.batch_size)
    head = list(model.head.parameters())
    body = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": settings.lr}, {"params": head, "lr": settings.head_lr}], weight_decay=0.01
    )
    warmup = max(1, len(batches) // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (len(batches) - s) / max(1, len(batches) - warmup))),
    )
    encoder: Any = model.encoder
    fgm = _FGM(encoder.embeddings, settings.adversarial) if settings.adversarial else None
    criterion = listwise_loss(group)
    losses: list[float] = []
    start = time.perf_counter()
    for batch in batches:
        if deadline is not None and time.monotonic() > deadline:
            raise TrainingBudgetExceeded(
                f"training stopped after {len(losses)} of {len(batches)} steps: the time budget ran out; "
                "raise spec.training.budget.maxMinutes or lower budget.steps"
            )
        inputs = checkpoint.encode(
            [p.user_text for p in batch], [p.item_text for p in batch], settings.max_len
        )
        labels = torch.tensor([p.label for p in batch], dtype=torch.float32)

        def compute(inputs: dict[str, torch.Tensor] = inputs, labels: torch.Tensor = labels) -> torch.Tensor:
            logits = model(**inputs)
            return loss_for(logits, labels, inputs) if loss_for else criterion(logits, labels)

        loss = compute()
        loss.backward()  # type: ignore[no-untyped-call]
        if fgm is not None:
            adversarial = fgm.adversarial_loss(compute)
            if adversarial is not None:
                adversarial.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(body + head, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if len(losses) % 20 == 0 or len(losses) == len(batches):
            elapsed = time.perf_counter() - start
            log.info(
                "step %d/%d loss %.4f (%.1fs)", len(losses), len(batches), np.mean(losses[-20:]), elapsed
            )
    if fgm is not None:
        fgm.handle.remove()
    model.eval()
    tail = losses[-max(1, len(losses) // 5) :]
    return {
        "train_seconds": time.perf_counter() - start,
        "train_steps": float(len(batches)),
        "train_loss": float(np.mean(tail)) if tail else math.nan,
    }


def checkpoint_metrics(checkpoint: Checkpoint, data: Dataset, evals: EvalSet) -> dict[str, float]:
    """Ranking metrics of the checkpoint itself, eager fp32 on 2 threads: the reference."""
    torch.set_num_threads(2)
    with torch.inference_mode():
        return evaluate_scorer(lambda u, i: score_pairs(checkpoint, u, i), data, evals)


def evaluate_checkpoint(
    checkpoint: Checkpoint, data: Dataset, *, users: int = 100, candidates: int = 50, seed: int = 0
) -> dict[str, float]:
    """Eager fp32 quality of a checkpoint, and most-popular on the same lists for comparison."""
    evals = eval_set(data, users=users, candidates=candidates, seed=seed)
    metrics = checkpoint_metrics(checkpoint, data, evals)
    popular = ranking_metrics(data, evals, popularity_scores(data, evals))
    metrics["most_popular_ndcg@10"] = popular["ndcg@10"]
    metrics["most_popular_auc"] = popular["auc"]
    return metrics


def train_ranker(
    data: Dataset,
    out_dir: Path,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    max_len: int | None = None,
    seed: int = 0,
    adversarial: float | None = None,
    freeze_layers: int = 3,
    eval_users: int = 100,
    eval_candidates: int = 50,
    layers: int | None = None,
    index_dir: Path | None = None,
    shape: str = DEFAULT_SHAPE,
) -> dict[str, float]:
    """Fine-tune from the bundled MiniLM (its first ``layers`` layers when given), save the
    checkpoint to ``out_dir``, return its metrics. A shallow encoder freezes at most half its
    layers, so there is always something left to learn.

    With ``index_dir`` (where the content index is cached), the encoder trains on the hybrid
    retriever's hard negatives and the checkpoint gets a fusion head (``ranker_data``);
    without it, on sampled negatives and no head, as the distillation student does.
    ``shape`` is ``prefix`` (the user encoded once per request) or ``cross`` (full attention
    over each pair); ``max_len`` defaults to the shape's own."""
    max_len = default_max_len(shape) if max_len is None else max_len
    settings = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        max_len=max_len,
        seed=seed,
        adversarial=adversarial,
        freeze_layers=freeze_layers,
        eval_users=eval_users,
        eval_candidates=eval_candidates,
    )
    started = time.perf_counter()
    seed_everything(seed)
    checkpoint = new_ranker(max_len=max_len, layers=layers, shape=shape)
    if layers is not None:
        freeze_layers = min(freeze_layers, layers // 2)
    freeze_lower(checkpoint, freeze_layers)
    retrieval = None
    pairs = None
    if index_dir is not None:
        from recserve_serving.ranker_data import hard_negative_pairs, retrieval_training

        retrieval = retrieval_training(data, Path(index_dir), seed=seed)
        pairs = hard_negative_pairs(
            retrieval,
            steps * batch_size,
            np.random.default_rng(seed),
            negatives_per_positive=settings.negatives_per_positive,
        )
    metrics = fit(checkpoint, data, settings, pairs=pairs)
    checkpoint.meta.extra.update(
        {
            "steps": steps,
            "batch_size": batch_size,
            "seed": seed,
            "adversarial": adversarial,
            "layers": layers,
            "shape": shape,
        }
    )
    save_checkpoint(checkpoint, Path(out_dir))
    if retrieval is not None:
        from recserve_serving.ranker_data import fit_head

        started_head = time.perf_counter()

        def score(users: list[str], items: list[str]) -> np.ndarray:
            with torch.inference_mode():
                return score_pairs(checkpoint, users, items)

        choice = fit_head(retrieval, score, np.random.default_rng(seed))
        choice.head.write(Path(out_dir))
        metrics["fusion_ranker_weight"] = choice.head.ranker_weight
        metrics["fusion_check_ndcg@10"] = choice.fitted_ndcg
        metrics["retrieval_check_ndcg@10"] = choice.retrieval_ndcg
        metrics["fusion_seconds"] = time.perf_counter() - started_head
    metrics.update(
        evaluate_checkpoint(checkpoint, data, users=eval_users, candidates=eval_candidates, seed=seed)
    )
    metrics["wall_seconds"] = time.perf_counter() - started
    return metrics


def train_and_register(
    registry: Registry, name: str, data: Dataset | None = None, **settings: Any
) -> tuple[ResolvedCheckpoint, dict[str, float]]:
    """Train (``train_ranker`` keyword settings) in a scratch dir under the state, register, return both.

    The version records its data's newest timestamp (``recserve.data_cutoff``): a later retrain
    fine-tunes on what arrived after it."""
    from recserve_serving.example_data import load_example
    from recserve_serving.lineage import training_tags

    data = data if data is not None else load_example()
    settings.setdefault("index_dir", registry.state / "retrieval")
    timestamps = data.interactions.timestamp
    tags = training_tags(
        data_cutoff=int(timestamps.max()), data_digest=data.digest, data_start=int(timestamps.min())
    )
    with tempfile.TemporaryDirectory(prefix="recserve-train-", dir=registry.state) as scratch:
        out = Path(scratch) / "checkpoint"
        metrics = train_ranker(data, out, **settings)
        return registry.register(name, out, metrics, tags=tags), metrics
