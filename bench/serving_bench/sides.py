"""The two paths compared: the optimized manifest and today's, each a checkpoint and an engine.

The bench makes sure both checkpoints are in its state first (training the two it knows how
to train when they are missing, through ``recserve train --if-missing``), then fetches each
engine from the cache or builds it the way ``recserve up`` would, so that the engine measured
in-process is the one the Serve path loads.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.serving_bench.processes import say

TRAINABLE: dict[str, tuple[str, ...]] = {
    "movielens-ranker": (),  # the seed model, `recserve train` defaults (prefix shape)
    "movielens-ranker-cross": ("--shape", "cross"),  # today's model: full attention over each pair
}
"""Registered names the bench trains when its state lacks them, with their ``recserve train`` options."""


@dataclass
class Side:
    """One path of the comparison: a manifest, its checkpoint and its engine, loaded in-process."""

    label: str  # "optimized" or "today"
    manifest: Path
    document: dict[str, Any]
    spec: Any
    name: str
    checkpoint_uri: str
    checkpoint_dir: Path
    shape: str
    engine: Any
    engine_dir: Path
    cache_hit: bool
    chosen: str = ""  # what a search chose, when the manifest asks for one

    def describe(self) -> str:
        engine = self.engine
        recipe = self.spec.optimization
        return (
            f"{self.label}: `{self.manifest.name}`, checkpoint {self.checkpoint_uri} ({self.shape} shape), "
            f"engine {engine.name} (`{self.engine_dir.name}`, {'cached' if self.cache_hit else 'built'}), "
            f"recipe {recipe.backend}/{recipe.precision}, max length {engine.manifest.max_sequence_length}, "
            f"chunks of {chunk_pairs(engine)} pairs, {engine.threads} threads"
            + (f"; search chose {self.chosen}" if self.chosen else "")
        )


QUICK_MAX_DROP = 1.0
"""``--quick``'s quality gate: its checkpoints are trained for a few steps (near random), so INT8
noise alone could fail a real gate; the smoke checks that every path works, not the quality."""


def quick_manifest(manifest: Path, directory: Path) -> Path:
    """A copy of ``manifest`` in ``directory`` whose quality gate lets any drop pass (quick runs)."""
    import yaml

    document = yaml.safe_load(manifest.read_text())
    gate = document["spec"].setdefault("optimization", {}).setdefault("qualityGate", {})
    gate["maxDrop"] = QUICK_MAX_DROP
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / manifest.name
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy


def chunk_pairs(engine: Any) -> int:
    """Pairs per engine call: ``maxBatchSize``, or fewer for a prefix-shaped engine (one user per chunk)."""
    if getattr(engine.manifest, "model_shape", "cross") == "prefix":
        from recserve_serving.engine.base import PREFIX_CHUNK

        return min(PREFIX_CHUNK, int(engine.max_batch_size))
    return int(engine.max_batch_size)


def registered_name(uri: str) -> str | None:
    from recserve_operator.embedded.checkpoints import registered_name as name_of

    return name_of(uri)


def ensure_checkpoints(
    state: Path, uris: list[str], train_options: tuple[str, ...], env: dict[str, str]
) -> None:
    """``recserve train NAME --if-missing`` for every known name among ``uris`` (each ~5 minutes
    on a quiet 2-core machine the first time; nothing once registered)."""
    recserve = str(Path(sys.executable).with_name("recserve"))
    done: set[str] = set()
    for uri in uris:
        name = registered_name(uri)
        if name is None or name not in TRAINABLE or name in done:
            continue
        done.add(name)
        command = [recserve, "train", "--name", name, *TRAINABLE[name], *train_options]
        command += ["--state", str(state), "--if-missing"]
        say(f"checkpoint {uri}: {' '.join(command[1:])}")
        subprocess.run(command, env=env, check=True, start_new_session=True)


def engine_for(resolved: Any, spec: Any, cache_root: Path, candidates: int) -> tuple[Any, str]:
    """The engine ``recserve up`` serves for this spec: ``build_best`` where this checkout has the
    recipe search (it picks a candidate when the recipe has ``search``), else ``build_engine``.
    (built engine, what a search chose or "")."""
    recipe = spec.optimization
    try:
        from recserve_serving.engine.search_build import build_best, search_of
        from recserve_serving.engine.throughput import Workload
    except ImportError:
        if getattr(recipe, "search", None) is not None:
            raise RuntimeError(
                "the manifest asks for optimization.search, which this checkout cannot run"
            ) from None
        from recserve_serving.engine.build import build_engine

        return build_engine(resolved, recipe, cache_root), ""
    threads = getattr(spec.serving.resources, "engine_threads", None)
    workload = Workload(pairs=candidates, **({"threads": threads} if threads else {}))
    built = build_best(resolved, recipe, cache_root, workload=workload)
    search = search_of(built)
    return built, (str(search.winner.recipe) if search is not None else "")


def load_side(label: str, manifest: Path, state: Path, candidates: int | None) -> Side:
    """Resolve the manifest's checkpoint (never training: ``ensure_checkpoints`` comes first) and
    fetch or build its engine (not timed)."""
    import yaml

    from recserve_operator.validate import load_model
    from recserve_serving.engine.runtime import load_engine
    from recserve_serving.registry import Registry

    model = load_model(manifest)
    spec = model.spec
    say(f"{label}: resolving {spec.checkpoint.uri} in {state}")
    resolved = Registry(state).resolve(spec.checkpoint.uri)
    say(f"{label}: engine from the cache, or built as `recserve up` would (not timed)")
    built, chosen = engine_for(
        resolved, spec, state / "engines", candidates or spec.serving.retrieval.candidates
    )
    engine = load_engine(built.path)
    side = Side(
        label=label,
        manifest=manifest,
        document=yaml.safe_load(manifest.read_text()),
        spec=spec,
        name=model.metadata.name or "movielens-ranker",
        checkpoint_uri=resolved.uri,
        checkpoint_dir=Path(resolved.path),
        shape=str(getattr(engine.manifest, "model_shape", "cross")),
        engine=engine,
        engine_dir=Path(built.path),
        cache_hit=built.cache_hit,
        chosen=chosen,
    )
    say(side.describe())
    return side
