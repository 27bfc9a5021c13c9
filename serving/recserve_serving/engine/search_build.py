"""Build a recipe's engine, searching its candidates first when it has ``search``.

Each candidate goes through ``build_engine`` unchanged, so it is content-addressed, cached and
gated like any recipe (a candidate built before is a cache hit), and a candidate that cannot
be built or fails its gate is recorded with the reason instead of ending the search. Passed
engines are then timed on the same recommend-shaped benchmark (``throughput``), the fastest is
chosen (``search``), and the record is written under ``reports/search-<key>.json``: a second
build with the same checkpoint, candidates, machine and benchmark reads the choice from it
and only fetches that engine (rebuilding it if the cache lost it), measuring nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recserve_serving.data import Dataset
from recserve_serving.engine import cache
from recserve_serving.engine.build import (
    BuiltEngine,
    backend_version,
    build_engine,
    concrete_backend,
)
from recserve_serving.engine.gate import GateReport
from recserve_serving.engine.runtime import load_engine
from recserve_serving.engine.search import (
    SearchReport,
    Trial,
    failure_message,
    record_path,
    search_key,
    summary,
)
from recserve_serving.engine.throughput import Workload, measure, recommend_texts
from recserve_serving.errors import QualityGateFailed, RecipeError
from recserve_serving.evaluate import EvalSettings
from recserve_serving.example_data import load_example
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.registry import ResolvedCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchedEngine(BuiltEngine):
    """The chosen candidate's engine, with the search that chose it."""

    search: SearchReport | None = None


def search_of(built: BuiltEngine) -> SearchReport | None:
    return built.search if isinstance(built, SearchedEngine) else None


def host_id() -> str:
    """The machine a measurement is valid for: its CPU ISA and its GPU, if any."""
    gpu = cache.gpu_capability()
    return cache.hardware("onnxruntime") + (f"+cuda-{gpu}" if gpu else "")


def _concrete(recipe: OptimizationRecipe) -> dict[str, object]:
    """A candidate as the build will key it: ``auto`` resolved, and the backend's version (a
    backend this machine lacks keys as missing; its build then fails with the reason)."""
    backend = concrete_backend(recipe)
    try:
        version = backend_version(backend)
    except ImportError:
        version = f"{backend}-missing"
    return {**recipe.model_copy(update={"backend": backend}).to_dict(), "version": version}


def _trial(
    recipe: OptimizationRecipe,
    texts: tuple[list[str], list[str]],
    workload: Workload,
    build: Callable[[OptimizationRecipe], BuiltEngine],
) -> Trial:
    """Build, gate and time one candidate; a recipe or gate failure becomes the trial's reason."""
    name, metric = summary(recipe), recipe.quality_gate.metric
    try:
        built = build(recipe)
    except RecipeError as error:
        return Trial(name, passed=False, reason=f"not built: {error}")
    except QualityGateFailed as error:
        gate = GateReport.read(Path(error.report)) if error.report else None
        return Trial(
            name,
            passed=False,
            reason="; ".join(gate.failures) if gate else str(error).splitlines()[0],
            quality=gate.engine.get(metric) if gate else None,
            drop=gate.drop if gate else None,
            report=error.report,
        )
    engine = load_engine(built.path, workload.threads)
    speed = measure(engine.score, *texts, repeats=workload.repeats)
    del engine
    report = built.report
    return Trial(
        name,
        passed=True,
        engine_key=built.manifest.key,
        quality=report.engine.get(metric) if report else built.manifest.metrics.get(metric),
        drop=report.drop if report else built.manifest.metrics.get(f"{metric}_drop"),
        pairs_per_s=speed.pairs_per_s,
        median_ms=speed.median_ms,
        best_ms=speed.best_ms,
    )


def build_best(
    resolved: ResolvedCheckpoint,
    recipe: OptimizationRecipe,
    cache_root: Path,
    *,
    workload: Workload | None = None,
    data: Dataset | None = None,
    evaluation: EvalSettings | None = None,
    seed: int = 0,
    index_dir: Path | None = None,
) -> BuiltEngine:
    """``build_engine`` for a recipe without ``search``; for one with it, the chosen candidate's
    engine as a ``SearchedEngine``. Raises QualityGateFailed listing every candidate and why it
    failed when none passed (the record is written first, so that is not measured again)."""

    def build(candidate: OptimizationRecipe, loaded: Dataset | None = data) -> BuiltEngine:
        return build_engine(
            resolved,
            candidate,
            cache_root,
            data=loaded,
            evaluation=evaluation,
            seed=seed,
            index_dir=index_dir,
        )

    if recipe.search is None:
        return build(recipe)
    workload = workload or Workload()
    candidates = recipe.candidates()
    key = search_key(resolved.digest, [_concrete(c) for c in candidates], host_id(), workload.describe())
    path = record_path(Path(cache_root), key)
    with cache.key_lock(Path(cache_root), f"search-{key}"):
        report = SearchReport.read(path)
        if report is None:
            loaded = data if data is not None else load_example()
            texts = recommend_texts(loaded, workload.pairs)
            trials = []
            for index, candidate in enumerate(candidates):
                log.info(
                    "search %s: candidate %d/%d: %s", key[:12], index + 1, len(candidates), summary(candidate)
                )
                trials.append(_trial(candidate, texts, workload, lambda c: build(c, loaded)))
            metric = recipe.quality_gate.metric
            report = SearchReport.decide(key, resolved.digest, metric, workload.describe(), trials)
            report.write(path)
    if report.chosen is None:
        raise QualityGateFailed(
            f"search for {resolved.uri}: {failure_message(report.trials)}\n(record: {path})", report=str(path)
        )
    built = build(candidates[report.chosen])
    return SearchedEngine(built.path, built.manifest, built.cache_hit, built.report, search=report)
