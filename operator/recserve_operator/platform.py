"""What the reconcile core needs from the world, as one interface with two implementations.

``reconcile`` is written once; a cluster (Jobs, KubeRay, Prometheus) and the embedded
default (in-process builds, a local Ray cluster, a scrape of ``/metrics``) each provide a
``Platform``. Methods raise ``CheckpointError``/``RecipeError`` for problems the user must
fix and ``Unavailable`` for problems that pass (registry down, API busy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from recserve_operator.api.status import EngineStatus
from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.analysis import WindowMetrics
from recserve_serving.recipe import OptimizationRecipe

EngineState = Literal["Ready", "Building", "Failed"]


@dataclass(frozen=True)
class CheckpointInfo:
    """A resolved checkpoint: the URI as written, the registry version it meant, its digest."""

    uri: str
    name: str
    version: str | None
    digest: str


@dataclass(frozen=True)
class EngineOutcome:
    state: EngineState
    engine_dir: str | None = None
    status: EngineStatus | None = None
    message: str = ""


@dataclass(frozen=True)
class ServedVersion:
    label: str
    engine_dir: str


@dataclass(frozen=True)
class TrafficSplit:
    canary_weight: int = 0
    shadow_percent: float = 0.0


@dataclass(frozen=True)
class DeployPlan:
    """What should be served: the stable engine, maybe a canary engine, and the traffic split."""

    stable: ServedVersion
    canary: ServedVersion | None
    traffic: TrafficSplit


@dataclass(frozen=True)
class DeployOutcome:
    ready: bool
    endpoint: str | None
    message: str = ""
    settled: bool = True
    """False while a version is still being handed over (look again soon)."""


class Platform(Protocol):
    def resolve(self, uri: str) -> CheckpointInfo: ...

    def ensure_engine(
        self, model: RecommenderModel, version: str, checkpoint: CheckpointInfo, recipe: OptimizationRecipe
    ) -> EngineOutcome: ...

    def deploy(self, model: RecommenderModel, plan: DeployPlan) -> DeployOutcome: ...

    def teardown(self, model: RecommenderModel) -> None:
        """Remove what serves ``model`` where no owner reference will (the model is being deleted)."""
        ...

    def canary_metrics(
        self, model: RecommenderModel, stable: str, canary: str, since: datetime
    ) -> WindowMetrics | None:
        """The canary's window since ``since`` (None when metrics cannot be read right now)."""
        ...
