"""What the reconcile core needs from the world, as one interface with two implementations.

``reconcile`` is written once; a cluster (Jobs, KubeRay, Prometheus) and the embedded
default (in-process builds, a local Ray cluster, a scrape of ``/metrics``) each provide a
``Platform``. Methods raise ``CheckpointError``/``RecipeError`` for problems the user must
fix and ``Unavailable`` for problems that pass (registry down, API busy). Both deploy the
same way up to applying a serve config (``serve_step``); only where they apply it differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from recserve_operator.api.status import EngineStatus
from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.analysis import WindowMetrics
from recserve_operator.planners.serve_config import (
    DeployPlan,
    HandOver,
    ServeObservation,
    ServeSite,
    plan_hand_over,
    plan_serve_config,
)
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.serve.config import check_with_ray

EngineState = Literal["Ready", "Building", "Failed"]
FailureReason = Literal["QualityGateFailed", "EngineFailed"]


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
    failure: FailureReason = "EngineFailed"
    """When Failed: a quality gate the engine did not pass, or any other build or load error."""
    report: str | None = None
    """When the gate failed: where its report is."""


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
    ) -> EngineOutcome:
        """The engine for ``checkpoint`` under ``recipe``; a build that fails (its gate, or a corrupt
        engine) is a Failed outcome, never an exception, so it stays with the version it belongs to."""
        ...

    def deploy(self, model: RecommenderModel, plan: DeployPlan) -> DeployOutcome: ...

    def move_alias(self, name: str, alias: str, version: str) -> None:
        """Point registered model ``name``'s ``alias`` at ``version`` (a promotion); ``Unavailable``
        when the registry cannot be reached, so the pass tries again."""
        ...

    def teardown(self, model: RecommenderModel) -> None:
        """Remove what serves ``model`` where no owner reference will (the model is being deleted)."""
        ...

    def canary_metrics(
        self, model: RecommenderModel, stable: str, canary: str, since: datetime, now: datetime
    ) -> WindowMetrics | None:
        """The canary's window since ``since`` (None when metrics cannot be read right now).

        A window that could only begin later than ``since`` (a scrape baseline lost to a
        restart) says so in ``window_start``; one called with ``since == now`` starts a window."""
        ...


def serve_step(
    model: RecommenderModel, plan: DeployPlan, site: ServeSite, observed: ServeObservation
) -> HandOver:
    """The serve config to apply now on the way to ``plan``, already accepted by Ray Serve's own
    schema, so that a bad config fails here and not asynchronously where it is applied."""
    step = plan_hand_over(plan_serve_config(model, plan, site), observed)
    check_with_ray(step.rendered)
    return step
