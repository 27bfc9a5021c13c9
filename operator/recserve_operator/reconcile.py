"""The reconcile core: one level-based pass from spec, status and the observed world.

Every pass recomputes everything from its inputs and returns the status it should have,
the events of the transitions it made, and when to look again; the caller writes status
only if it differs. The same core drives the cluster (kopf handlers) and the embedded
default (``recserve up``), each through its own ``Platform``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from recserve_operator.api.status import (
    CANARY_HEALTHY,
    ENGINE_READY,
    READY,
    RECONCILING,
    STALLED,
    CanaryStatus,
    Phase,
    RecommenderModelStatus,
    VersionStatus,
)
from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.analysis import judge
from recserve_operator.planners.canary import CanaryDecision, CanaryIdentity, Controls, Event, next_canary
from recserve_operator.planners.conditions import ConditionSpec, merge_conditions
from recserve_operator.planners.serve_config import DeployPlan, ServedVersion
from recserve_operator.platform import CheckpointInfo, DeployOutcome, EngineOutcome, Platform
from recserve_serving.errors import CheckpointError, RecipeError, Unavailable
from recserve_serving.redact import redact
from recserve_serving.serve.config import TrafficSplit

BUILD_POLL_SECONDS = 10.0
DEPLOY_POLL_SECONDS = 5.0
STEADY_RESYNC_SECONDS = 60.0


@dataclass
class Outcome:
    status: RecommenderModelStatus
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    retry_reason: str | None = None
    """Set when the pass could not finish for a passing reason (the caller backs off)."""
    stalled_reason: str | None = None
    """Set when the user must change something; retrying alone will not help."""


def _label(checkpoint: CheckpointInfo) -> str:
    return f"{checkpoint.name}/{checkpoint.version}" if checkpoint.version else checkpoint.name


def _version_status(checkpoint: CheckpointInfo, engine: EngineOutcome | None) -> VersionStatus:
    return VersionStatus(
        checkpoint=checkpoint.uri,
        version=checkpoint.version,
        digest=checkpoint.digest,
        engine=engine.status if engine else None,
    )


class _Pass:
    """The state of one reconcile pass, so each step reads as one small method."""

    def __init__(
        self, model: RecommenderModel, platform: Platform, controls: Controls, now: datetime
    ) -> None:
        self.model = model
        self.platform = platform
        self.controls = controls
        self.now = now
        self.previous = model.status or RecommenderModelStatus()
        self.generation = model.metadata.generation
        self.events: list[Event] = []

    def status(
        self,
        phase: Phase,
        conditions: list[ConditionSpec],
        *,
        stable: VersionStatus | None = None,
        canary: CanaryStatus | None = None,
        endpoint: str | None = None,
    ) -> RecommenderModelStatus:
        return RecommenderModelStatus(
            observed_generation=self.generation,
            phase=phase,
            conditions=merge_conditions(self.previous.conditions, conditions, self.generation, self.now),
            stable=stable if stable is not None else self.previous.stable,
            canary=canary,
            endpoint=endpoint if endpoint is not None else self.previous.endpoint,
        )

    def stalled(self, reason: str, message: str, *, engine_ready: bool = False) -> Outcome:
        message = redact(message)  # compared with the (redacted) message already in status
        if not already_stalled(self.previous, reason, message, self.generation):
            self.events.append(Event("Warning", reason, message))  # once per stall, not per resync
        conditions = [
            ConditionSpec(READY, "False", reason, message),
            ConditionSpec(RECONCILING, "False", reason, message),
            ConditionSpec(STALLED, "True", reason, message),
            ConditionSpec(ENGINE_READY, "True" if engine_ready else "False", reason, message),
        ]
        status = self.status("Failed", conditions, canary=self.previous.canary)
        return Outcome(status, self.events, stalled_reason=f"{reason}: {message}")

    def waiting(
        self, phase: Phase, reason: str, message: str, requeue: float, *, retry: bool = False
    ) -> Outcome:
        conditions = [
            ConditionSpec(READY, "True" if self.previous.endpoint else "False", reason, message),
            ConditionSpec(RECONCILING, "True", reason, message),
            ConditionSpec(STALLED, "False", reason, message),
            ConditionSpec(ENGINE_READY, "False" if phase == "Building" else "True", reason, message),
        ]
        status = self.status(phase, conditions, canary=self.previous.canary)
        return Outcome(
            status, self.events, requeue_after=requeue, retry_reason=f"{reason}: {message}" if retry else None
        )

    def engine(self, version: str, checkpoint: CheckpointInfo, canary: bool) -> EngineOutcome:
        spec = self.model.spec
        recipe = spec.canary_recipe if canary and spec.canary_recipe else spec.optimization
        return self.platform.ensure_engine(self.model, version, checkpoint, recipe)

    def run(self) -> Outcome:
        spec = self.model.spec
        try:
            stable_ckpt = self.platform.resolve(spec.checkpoint.uri)
        except CheckpointError as error:
            return self.stalled("CheckpointNotFound", str(error))
        except Unavailable as error:
            return self.waiting("Pending", "RegistryUnavailable", str(error), 30, retry=True)
        try:
            stable_engine = self.engine("stable", stable_ckpt, canary=False)
        except (RecipeError, CheckpointError) as error:
            return self.stalled("InvalidRecipe", str(error))
        if stable_engine.state == "Failed":
            return self.stalled("EngineBuildFailed", stable_engine.message)
        if stable_engine.state == "Building" or stable_engine.engine_dir is None:
            return self.waiting(
                "Building", "EngineBuilding", stable_engine.message or "building", BUILD_POLL_SECONDS
            )
        stable = ServedVersion(_label(stable_ckpt), stable_engine.engine_dir)
        stable_status = _version_status(stable_ckpt, stable_engine)
        self.note_new_engine(stable.label, stable_status)
        return self.rollout(stable, stable_status)

    def note_new_engine(self, label: str, version: VersionStatus) -> None:
        engine = version.engine
        before = self.previous.stable.engine if self.previous.stable else None
        if engine is not None and (before is None or before.key != engine.key):
            message = f"engine {engine.key[:12]} for {label} ready ({engine.backend}, {engine.precision})"
            self.events.append(Event("Normal", "EngineBuilt", message))

    def rollout(self, stable: ServedVersion, stable_status: VersionStatus) -> Outcome:
        canary_spec = self.model.spec.rollout.canary
        decision = CanaryDecision(None)
        canary_served: ServedVersion | None = None
        canary_waiting = ""
        if canary_spec is not None:
            try:
                canary_ckpt = self.platform.resolve(canary_spec.checkpoint.uri)
                canary_engine = self.engine("canary", canary_ckpt, canary=True)
            except (CheckpointError, RecipeError) as error:
                return self.stalled("CanaryInvalid", str(error), engine_ready=True)
            except Unavailable as error:
                return self.waiting("Pending", "RegistryUnavailable", str(error), 30, retry=True)
            if canary_engine.state == "Failed":
                return self.stalled("CanaryBuildFailed", canary_engine.message, engine_ready=True)
            if canary_engine.state == "Ready" and canary_engine.engine_dir:
                identity = CanaryIdentity(
                    canary_ckpt.uri,
                    canary_ckpt.version,
                    canary_ckpt.digest,
                    canary_engine.status.key if canary_engine.status else None,
                )
                label = _label(canary_ckpt)
                if label == stable.label and canary_engine.status is not None:
                    # Same checkpoint, new recipe: metrics and the version header must still tell them apart.
                    label = f"{label}+{canary_engine.status.precision}-{canary_engine.status.key[:7]}"
                canary_served = ServedVersion(label, canary_engine.engine_dir)
                decision = self.canary_step(identity, stable.label, canary_served.label)
                if decision.status is not None:
                    decision = CanaryDecision(
                        decision.status.model_copy(update={"engine": canary_engine.status}),
                        decision.event,
                        decision.requeue_after,
                    )
            else:
                canary_waiting = canary_engine.message or "building the canary engine"
        if decision.event:
            self.events.append(decision.event)
        return self.deploy(stable, stable_status, decision, canary_served, canary_waiting)

    def canary_step(self, identity: CanaryIdentity, stable_label: str, canary_label: str) -> CanaryDecision:
        canary_spec = self.model.spec.rollout.canary
        assert canary_spec is not None
        current = self.previous.canary
        analysis = None
        live = (
            current is not None
            and current.digest == identity.digest
            and current.state in {"Progressing", "Paused"}
        )
        if live and current is not None:
            since = current.step_started_at or self.now
            try:
                metrics = self.platform.canary_metrics(self.model, stable_label, canary_label, since)
            except Unavailable:
                metrics = None
            if metrics is not None:
                analysis = judge(canary_spec.analysis, metrics, self.now)
        return next_canary(canary_spec, identity, current, analysis, self.controls, self.now)

    def deploy(
        self,
        stable: ServedVersion,
        stable_status: VersionStatus,
        decision: CanaryDecision,
        canary_served: ServedVersion | None,
        canary_waiting: str,
    ) -> Outcome:
        canary = decision.status
        serving_canary = canary is not None and canary.state in {"Progressing", "Paused"}
        if decision.promoted and canary_served is not None and canary is not None:
            stable, stable_status = (
                canary_served,
                VersionStatus(
                    checkpoint=canary.checkpoint,
                    version=canary.version,
                    digest=canary.digest,
                    engine=canary.engine,
                ),
            )
        plan = DeployPlan(stable)
        canary_spec = self.model.spec.rollout.canary
        if serving_canary and canary_served is not None and canary_spec is not None:
            split = TrafficSplit(canary_weight=decision.weight, shadow_percent=canary_spec.shadow_percent)
            plan = DeployPlan(stable, canary_served, split)
        try:
            deployed = self.platform.deploy(self.model, plan)
        except Unavailable as error:
            return self.waiting("Deploying", "RolloutUnavailable", str(error), 30, retry=True)
        return self.settle(plan, deployed, stable_status, decision, canary_waiting)

    def settle(
        self,
        plan: DeployPlan,
        deployed: DeployOutcome,
        stable_status: VersionStatus,
        decision: CanaryDecision,
        canary_waiting: str,
    ) -> Outcome:
        canary = decision.status
        progressing = canary is not None and canary.state in {"Progressing", "Paused"}
        failed_canary = canary is not None and canary.state in {"RolledBack", "Aborted"}
        if not deployed.ready:
            phase: Phase = "Deploying"
            reason, message = "Deploying", deployed.message or "waiting for the serving application"
        elif failed_canary and canary is not None:
            phase, reason = "Degraded", f"Canary{canary.state}"
            message = f"canary {canary.checkpoint} {canary.state.lower()}; serving {plan.stable.label}"
        elif progressing and canary is not None:
            phase, reason = "Progressing", f"Canary{canary.state}"
            message = f"canary {canary.checkpoint} at {canary.weight}% (step {canary.step + 1})"
        elif canary_waiting:
            phase, reason, message = "Building", "CanaryEngineBuilding", canary_waiting
        else:
            phase, reason, message = "Ready", "Serving", f"serving {plan.stable.label}"
        reconciling = phase in {"Deploying", "Progressing", "Building"}
        conditions = [
            ConditionSpec(READY, "True" if deployed.ready else "False", reason, message),
            ConditionSpec(RECONCILING, "True" if reconciling else "False", reason, message),
            ConditionSpec(STALLED, "True" if failed_canary else "False", reason, message),
            ConditionSpec(ENGINE_READY, "True", "EngineReady", f"engine for {plan.stable.label} is built"),
            self.canary_condition(canary),
        ]
        status = self.status(
            phase, conditions, stable=stable_status, canary=canary, endpoint=deployed.endpoint
        )
        requeue = STEADY_RESYNC_SECONDS
        if not deployed.ready or not deployed.settled:
            requeue = DEPLOY_POLL_SECONDS
        elif progressing and decision.requeue_after is not None:
            requeue = max(1.0, min(decision.requeue_after, STEADY_RESYNC_SECONDS))
        elif canary_waiting:
            requeue = BUILD_POLL_SECONDS
        return Outcome(status, self.events, requeue_after=requeue)

    @staticmethod
    def canary_condition(canary: CanaryStatus | None) -> ConditionSpec:
        if canary is None:
            return ConditionSpec(CANARY_HEALTHY, "True", "NoCanary", "no canary in spec")
        analysis = canary.analysis
        detail = analysis.message if analysis else "no analysis yet"
        if canary.state in {"RolledBack", "Aborted"}:
            return ConditionSpec(CANARY_HEALTHY, "False", f"Canary{canary.state}", detail)
        if analysis is None or analysis.verdict == "Inconclusive":
            return ConditionSpec(CANARY_HEALTHY, "Unknown", "AnalysisPending", detail)
        return ConditionSpec(CANARY_HEALTHY, "True", f"Canary{canary.state}", detail)


def already_stalled(
    status: RecommenderModelStatus, reason: str, message: str, generation: int | None
) -> bool:
    """Whether ``status`` already reports this stall for this generation (its event was sent)."""
    stalled = next((c for c in status.conditions if c.type == STALLED), None)
    return (
        stalled is not None
        and stalled.status == "True"
        and stalled.reason == reason
        and stalled.message == message[:32_000]
        and stalled.observed_generation == generation
    )


def reconcile(
    model: RecommenderModel, platform: Platform, now: datetime, controls: Controls | None = None
) -> Outcome:
    """One pass for ``model``; never raises for expected failures, it reports them in ``Outcome``."""
    return _redacted(_Pass(model, platform, controls or Controls(), now).run())


def _redacted(outcome: Outcome) -> Outcome:
    """Messages quote URLs from errors; credentials in them must not reach status or events,
    which anyone who may read the model can see."""
    status = outcome.status.model_copy(
        update={
            "conditions": [
                c.model_copy(update={"message": redact(c.message)}) for c in outcome.status.conditions
            ]
        }
    )
    return Outcome(
        status,
        [dataclasses.replace(e, message=redact(e.message)) for e in outcome.events],
        outcome.requeue_after,
        redact(outcome.retry_reason) if outcome.retry_reason else None,
        redact(outcome.stalled_reason) if outcome.stalled_reason else None,
    )
