"""The embedded default as a ``Platform``: in-process builds, a local Ray cluster, scraped metrics.

Resolution and builds are memoised per pass inputs: an engine directory never changes
once published, and re-hashing a checkpoint every few seconds would only burn the CPU the
replicas need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from recserve_operator.analysis.scrape import ScrapeProvider
from recserve_operator.api.status import EngineStatus
from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.analysis import WindowMetrics
from recserve_operator.planners.serve_config import DeployPlan, ServeSite
from recserve_operator.platform import CheckpointInfo, DeployOutcome, EngineOutcome, serve_step
from recserve_operator.rollout.serve_rest import ServeRestTarget
from recserve_serving.errors import EngineError, QualityGateFailed, Unavailable
from recserve_serving.recipe import OptimizationRecipe

if TYPE_CHECKING:
    from recserve_serving.data import Dataset
    from recserve_serving.dataspec import DataSpec

RESOLVE_TTL_SECONDS = 30.0
_GATE_METRICS = ("ndcg@10", "auc", "ndcg@10_drop", "auc_drop")


def engine_status(manifest: Any, search: Any = None) -> EngineStatus:
    """Status detail of a built engine, from its manifest (the operator's view of an engine) and,
    when a search chose it, that search's report."""
    metrics: dict[str, float] = dict(manifest.metrics)
    size = metrics.get("size_bytes")
    return EngineStatus(
        key=manifest.key,
        backend=manifest.backend,
        precision=manifest.precision,
        size_bytes=int(size) if size is not None else None,
        quality={k: v for k, v in metrics.items() if k in _GATE_METRICS},
        p50_ms=metrics.get("p50_ms_max_batch") or metrics.get("p50_ms"),
        p99_ms=metrics.get("p99_ms_max_batch") or metrics.get("p99_ms"),
        search=None if search is None else search.status(),
    )


def failed_engine(error: EngineError) -> EngineOutcome:
    """A build or cached engine that failed, as an outcome for the version that asked for it."""
    if isinstance(error, QualityGateFailed):
        return EngineOutcome("Failed", message=str(error), failure="QualityGateFailed", report=error.report)
    return EngineOutcome("Failed", message=str(error), failure="EngineFailed")


class EmbeddedPlatform:
    def __init__(
        self,
        state: Path,
        host: str,
        port: int,
        say: Callable[[str], None],
    ) -> None:
        from recserve_serving.registry import Registry

        self.state = state
        self.site = ServeSite(
            index_dir=str(state / "retrieval"), online_dir=str(state / "online"), host=host, port=port
        )
        self.say = say
        self.registry = Registry(state)
        self.target: ServeRestTarget | None = None
        self.metrics = ScrapeProvider()
        self._resolved: dict[str, tuple[float, Any]] = {}
        self._engines: dict[tuple[str, str, str, str], EngineOutcome] = {}
        self._datasets: dict[str, Dataset] = {}
        self._applied: dict[str, dict[str, Any]] = {}

    @property
    def endpoint(self) -> str:
        return f"http://{self.site.host}:{self.site.port}"

    def _resolve_local(self, uri: str) -> Any:
        from recserve_operator.embedded.checkpoints import ensure_checkpoint

        cached = self._resolved.get(uri)
        if cached is not None and time.monotonic() - cached[0] < RESOLVE_TTL_SECONDS:
            return cached[1]
        resolved = ensure_checkpoint(self.registry, uri, self.say)
        self._resolved[uri] = (time.monotonic(), resolved)
        return resolved

    def train_if_missing(self, model: RecommenderModel) -> None:
        """Train the checkpoints a manifest opts in to training (``recserve.dev/train-if-missing``)
        on its own data when the registry lacks them: a fresh machine serves any example."""
        from recserve_operator.embedded.checkpoints import TRAIN_IF_MISSING, ensure_checkpoint

        if model.metadata.annotations.get(TRAIN_IF_MISSING) != "true":
            return
        uris = [model.spec.checkpoint.uri]
        if model.spec.rollout.canary is not None:
            uris.append(model.spec.rollout.canary.checkpoint.uri)
        for uri in uris:
            ensure_checkpoint(self.registry, uri, self.say, train_if_missing=True, data=model.spec.data)

    def resolve(self, uri: str) -> CheckpointInfo:
        resolved = self._resolve_local(uri)
        return CheckpointInfo(uri=uri, name=resolved.name, version=resolved.version, digest=resolved.digest)

    def move_alias(self, name: str, alias: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        from recserve_serving.registry_http import registry_failure

        try:
            self.registry.client.set_registered_model_alias(name, alias, version)
        except MlflowException as error:
            raise registry_failure(f"models:/{name}@{alias}", self.registry.tracking_uri, error) from error
        self._resolved.clear()  # a cached resolution of the alias is now stale

    def dataset(self, spec: DataSpec) -> Dataset:
        """The model's data, read and checked once per mapping (DataError names what is wrong)."""
        from recserve_serving.data import load_dataset

        key = spec.model_dump_json()
        if key not in self._datasets:
            self._datasets[key] = load_dataset(spec)
        return self._datasets[key]

    def ensure_engine(
        self, model: RecommenderModel, version: str, checkpoint: CheckpointInfo, recipe: OptimizationRecipe
    ) -> EngineOutcome:
        from recserve_serving.engine.search_build import build_best, search_of
        from recserve_serving.engine.throughput import Workload

        serving = model.spec.serving
        workload = Workload(pairs=serving.retrieval.candidates, threads=serving.resources.engine_threads)
        memo = (
            checkpoint.digest,
            recipe.model_dump_json(),
            workload.describe(),
            model.spec.data_or_example.model_dump_json(),
        )
        if memo in self._engines:
            return self._engines[memo]
        resolved = self._resolve_local(checkpoint.uri)
        self.say(f"{version}: building engine for {checkpoint.uri} ({recipe.backend}, {recipe.precision})")
        try:
            data = self.dataset(model.spec.data_or_example)
            built = build_best(resolved, recipe, self.state / "engines", workload=workload, data=data)
        except EngineError as error:
            # Remembered like a success: the same checkpoint and recipe fail the same way, and a
            # fixed manifest (another recipe or checkpoint) is another memo key.
            self.say(f"{version}: engine failed: {error}")
            outcome = failed_engine(error)
        else:
            self.say(f"{version}: engine {'cached' if built.cache_hit else 'built'}: {built.path}")
            search = search_of(built)
            if search is not None:
                self.say(f"{version}: search chose {search.winner.recipe} of {len(search.trials)} candidates")
            status = engine_status(built.manifest, search)
            outcome = EngineOutcome("Ready", engine_dir=str(built.path), status=status)
        self._engines[memo] = outcome
        return outcome

    def deploy(self, model: RecommenderModel, plan: DeployPlan) -> DeployOutcome:
        if self.target is None:
            raise Unavailable("the local Ray cluster is not running")
        name = model.metadata.name or ""
        step = serve_step(model, plan, self.site, self.target.observe(name))
        if step.rendered != self._applied.get(name):
            self.target.apply_for(name, step.rendered)
            self._applied[name] = step.rendered
        failed = self.target.failed_applications(name)
        if failed:
            details = "; ".join(f"{name} is {why}" for name, why in sorted(failed.items()))
            raise Unavailable(f"Ray Serve reports failed applications: {details}")
        try:
            ready = httpx.get(f"{self.endpoint}/v2/health/ready", timeout=10).status_code == 200
        except httpx.HTTPError as error:
            return DeployOutcome(False, None, f"router not answering yet: {error}", settled=False)
        return DeployOutcome(
            ready,
            self.endpoint if ready else None,
            ("" if step.settled else "handing traffic over to a new version")
            if ready
            else "rankers not ready",
            settled=step.settled,
        )

    def teardown(self, model: RecommenderModel) -> None:
        name = model.metadata.name or ""
        if self.target is not None:
            self.target.apply_for(name, None)
        self._applied.pop(name, None)

    def canary_metrics(
        self, model: RecommenderModel, stable: str, canary: str, since: datetime, now: datetime
    ) -> WindowMetrics | None:
        name = model.metadata.name or ""
        return self.metrics.canary_window(self.endpoint, name, stable, canary, since, now)
