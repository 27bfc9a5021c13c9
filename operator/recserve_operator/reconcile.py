"""The reconcile core: one level-based pass from spec, status and the observed world.

Every pass recomputes everything from its inputs and returns the status it should have,
the events of the transitions it made, and when to look again; the caller writes status
only if it differs. The same core drives the cluster (kopf handlers) and the embedded
default (``recserve up``), each through its own ``Platform``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, replace
from datetime import datetime

from recserve_operator.api.status import (
    CANARY_HEALTHY,
    ENGINE_READY,
    READY,
    RECONCILING,
    STALLED,
    CanaryStatus,
    ChampionStatus,
    Phase,
    RecommenderModelStatus,
    VersionStatus,
)
from recserve_operator.api.types import AnalysisSpec, CanarySpec, CanaryStep, CheckpointRef, RecommenderModel
from recserve_operator.planners.analysis import WindowMetrics, judge
from recserve_operator.planners.canary import (
    FINISHED,
    CanaryDecision,
    CanaryIdentity,
    Controls,
    EngineFailure,
    Event,
    engine_failed,
    next_canary,
    recipe_fingerprint,
    restart_window,
    same_canary,
)
from recserve_operator.planners.conditions import ConditionSpec, merge_conditions
from recserve_operator.planners.serve_config import DeployPlan, ServedVersion
from recserve_operator.platform import CheckpointInfo, DeployOutcome, EngineOutcome, Platform
from recserve_serving.errors import (
    AliasNotSet,
    CheckpointError,
    EngineError,
    QualityGateFailed,
    RecipeError,
    Unavailable,
)
from recserve_serving.recipe import OptimizationRecipe
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


def _version_status(
    checkpoint: CheckpointInfo, engine: EngineOutcome, recipe: OptimizationRecipe, label: str
) -> VersionStatus:
    return VersionStatus(
        checkpoint=checkpoint.uri,
        version=checkpoint.version,
        digest=checkpoint.digest,
        recipe=recipe_fingerprint(recipe),
        label=label,
        engine_dir=engine.engine_dir,
        engine=engine.status,
    )


def _as_version(canary: CanaryStatus) -> VersionStatus:
    return VersionStatus.model_validate(canary.model_dump(include=set(VersionStatus.model_fields)))


def _same_version(a: VersionStatus, b: VersionStatus) -> bool:
    """Same checkpoint content under the same recipe (a recipe not recorded does not differ)."""
    return a.digest == b.digest and (a.recipe is None or b.recipe is None or a.recipe == b.recipe)


def _failed(error: EngineError) -> EngineOutcome:
    if isinstance(error, QualityGateFailed):
        return EngineOutcome("Failed", message=str(error), failure="QualityGateFailed", report=error.report)
    return EngineOutcome("Failed", message=str(error), failure="EngineFailed")


PROMOTION_NOT_IN_SPEC = "PromotionNotInSpec"
CHAMPION = "champion"
_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[\w.-]+)/?$")
MOVED_ALIAS_STEPS = (CanaryStep(weight=10, pause="2m"), CanaryStep(weight=50, pause="2m"))
MOVED_ALIAS_ANALYSIS = AnalysisSpec(max_error_rate=0.01, min_requests=100)
"""How a moved stable alias is canaried when spec names no canary to borrow steps and analysis from."""


def moved_alias_canary(model: RecommenderModel) -> CanarySpec:
    """The canary of the version spec.checkpoint now resolves to: spec's own canary settings when it
    has a canary (its steps, analysis, stickiness; the stable recipe), else ``MOVED_ALIAS_*``."""
    spec = model.spec
    own = spec.rollout.canary
    ref = CheckpointRef(uri=spec.checkpoint.uri)
    if own is None:
        return CanarySpec(checkpoint=ref, steps=list(MOVED_ALIAS_STEPS), analysis=MOVED_ALIAS_ANALYSIS)
    return own.model_copy(update={"checkpoint": ref, "optimization": None, "fault_injection": None})


def promotion_alias(model: RecommenderModel, registered: str) -> str:
    """The alias a promotion of ``registered``'s version moves: the one spec.checkpoint follows when
    it names an alias of the same registered model (so stable follows the promotion), else champion."""
    match = _MODELS_ALIAS.match(model.spec.checkpoint.uri)
    return match["alias"] if match and match["name"] == registered else CHAMPION


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
        self.canary_spec: CanarySpec | None = model.spec.rollout.canary
        """The canary this pass rolls out: spec's, or that of a moved stable alias."""
        self.champion = self.previous.champion
        self.spec_digest: str | None = None
        self.no_canary_note = "no canary: spec names none, or its checkpoint is what stable serves"

    def status(
        self,
        phase: Phase,
        conditions: list[ConditionSpec],
        *,
        stable: VersionStatus | None = None,
        canary: CanaryStatus | None = None,
        endpoint: str | None = None,
    ) -> RecommenderModelStatus:
        # Fields this pass does not own (written beside it, e.g. training) are carried over.
        return self.previous.model_copy(
            update={
                "observed_generation": self.generation,
                "phase": phase,
                "conditions": merge_conditions(
                    self.previous.conditions, conditions, self.generation, self.now
                ),
                "stable": stable if stable is not None else self.previous.stable,
                "canary": canary,
                "endpoint": endpoint if endpoint is not None else self.previous.endpoint,
                "champion": self.champion,
            }
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

    def recipe(self, canary: bool) -> OptimizationRecipe:
        spec = self.model.spec
        if canary and self.canary_spec is not None and self.canary_spec.optimization is not None:
            return self.canary_spec.optimization
        return spec.optimization

    def engine(self, version: str, checkpoint: CheckpointInfo, canary: bool) -> EngineOutcome:
        try:
            return self.platform.ensure_engine(self.model, version, checkpoint, self.recipe(canary))
        except EngineError as error:
            # Whatever raised it, a build or load that fails belongs to the version that asked.
            return _failed(error)

    def run(self) -> Outcome:
        spec = self.model.spec
        try:
            stable_ckpt = self.platform.resolve(spec.checkpoint.uri)
        except CheckpointError as error:
            return self.stalled("CheckpointNotFound", str(error))
        except Unavailable as error:
            return self.waiting("Pending", "RegistryUnavailable", str(error), 30, retry=True)
        served = self.serving_before_alias_moved(stable_ckpt)
        if served is not None:
            # spec.checkpoint is unchanged but names another version now (its alias moved): the
            # version serving keeps serving, and the new one earns its traffic as a canary.
            self.canary_spec = moved_alias_canary(self.model)
            assert served.engine_dir is not None
            return self.rollout(ServedVersion(served.label or _label(stable_ckpt), served.engine_dir), served)
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
        stable_status = _version_status(stable_ckpt, stable_engine, self.recipe(canary=False), stable.label)
        self.note_new_engine(stable.label, stable_status)
        return self.rollout(stable, stable_status)

    def serving_before_alias_moved(self, resolved: CheckpointInfo) -> VersionStatus | None:
        """What serves now, when unchanged spec.checkpoint resolves to another version and the
        strategy is Canary; None when there is nothing to guard (first deploy, same version, a
        promotion that moved the alias itself, an edit of spec.checkpoint, strategy Immediate)."""
        if self.model.spec.rollout.strategy == "Immediate":
            return None
        served = self.previous.stable
        if served is None or served.engine_dir is None or served.digest == resolved.digest:
            return None
        canary = self.previous.canary
        promoted = canary is not None and canary.state == "Promoted"
        if promoted and canary is not None and canary.digest == resolved.digest:
            return None  # the promotion moved the alias: stable now names what already serves
        written_as, was = served.checkpoint, served.digest
        if promoted and canary is not None and canary.digest == served.digest:
            if canary.replaced is None:
                return None
            # A promoted canary serves in place of what spec.checkpoint named then.
            written_as, was = canary.replaced.checkpoint, canary.replaced.digest
        if resolved.digest == was:
            return None
        return served if written_as == self.model.spec.checkpoint.uri else None

    def note_new_engine(self, label: str, version: VersionStatus) -> None:
        engine = version.engine
        seen = (
            {self.previous.stable.engine.key}
            if self.previous.stable and self.previous.stable.engine
            else set()
        )
        replaced = self.previous.canary.replaced if self.previous.canary else None
        if replaced is not None and replaced.engine is not None:
            seen.add(replaced.engine.key)  # stable by spec, while a promoted canary serves in its place
        if engine is not None and engine.key not in seen:
            message = f"engine {engine.key[:12]} for {label} ready ({engine.backend}, {engine.precision})"
            self.events.append(Event("Normal", "EngineBuilt", message))

    def rollout(self, stable: ServedVersion, stable_status: VersionStatus) -> Outcome:
        canary_spec = self.canary_spec
        if canary_spec is None:
            return self.without_canary(stable, stable_status)
        try:
            canary_ckpt = self.platform.resolve(canary_spec.checkpoint.uri)
        except AliasNotSet as error:
            # models:/NAME@candidate before any retrain set it: nothing to canary yet, not an error.
            self.no_canary_note = f"{error}; no canary until it is set (a retrain sets it)"
            return self.without_canary(stable, stable_status)
        except (CheckpointError, RecipeError) as error:
            return self.stalled("CanaryInvalid", str(error), engine_ready=True)
        except Unavailable as error:
            return self.waiting("Pending", "RegistryUnavailable", str(error), 30, retry=True)
        canary_recipe = recipe_fingerprint(self.recipe(canary=True))
        if canary_ckpt.digest == stable_status.digest and canary_recipe == stable_status.recipe:
            # The canary names what stable serves (a candidate alias right after its promotion
            # moved champion, or before any retrain): there is nothing to roll out.
            return self.without_canary(stable, stable_status)
        identity = CanaryIdentity(
            canary_ckpt.uri,
            canary_ckpt.version,
            canary_ckpt.digest,
            recipe=recipe_fingerprint(self.recipe(canary=True)),
        )
        previous = self.previous.canary
        same = previous if previous is not None and same_canary(previous, identity) else None
        known = same if same is not None and same.recipe is not None else None
        if known is not None and known.state in FINISHED and (known.state != "Promoted" or known.engine_dir):
            # Decided for this checkpoint and recipe: the decision holds without asking for the
            # engine again, so a build Job removed by its TTL cannot undo or restart it.
            served = None
            if known.state == "Promoted" and known.engine_dir:
                served = ServedVersion(known.label or _label(canary_ckpt), known.engine_dir)
            return self.deploy(stable, stable_status, CanaryDecision(known), served, "")
        try:
            canary_engine = self.engine("canary", canary_ckpt, canary=True)
        except (CheckpointError, RecipeError) as error:
            return self.stalled("CanaryInvalid", str(error), engine_ready=True)
        except Unavailable as error:
            return self.waiting("Pending", "RegistryUnavailable", str(error), 30, retry=True)
        if canary_engine.state == "Failed":
            failure = EngineFailure(canary_engine.failure, canary_engine.message, canary_engine.report)
            decision = engine_failed(identity, previous, failure, self.now)
            if decision.event:
                self.events.append(decision.event)
            return self.deploy(stable, stable_status, decision, None, "")
        engine_dir, engine_status = canary_engine.engine_dir, canary_engine.status
        if (canary_engine.state != "Ready" or engine_dir is None) and known is not None and known.engine_dir:
            # A live canary keeps serving from the engine it had while its build Job runs again.
            engine_dir, engine_status = known.engine_dir, known.engine
        if engine_dir is None:
            if same is not None and same.state == "Promoted":
                # Promoted before its engine directory was recorded: leave serving as it is
                # until the engine is back, rather than fall back to the replaced version.
                return self.waiting("Building", "EngineBuilding", "rebuilding the promoted engine", 10)
            held = same if same is not None and same.state in FINISHED else None
            waiting = "" if held else canary_engine.message or "building the canary engine"
            return self.deploy(stable, stable_status, CanaryDecision(held), None, waiting)
        if engine_status is not None:
            identity = replace(identity, engine_key=engine_status.key)
        label = _label(canary_ckpt)
        if label == stable.label and engine_status is not None:
            # Same checkpoint, new recipe: metrics and the version header must still tell them apart.
            label = f"{label}+{engine_status.precision}-{engine_status.key[:7]}"
        canary_served = ServedVersion(label, engine_dir)
        decision = self.canary_step(identity, stable.label, canary_served.label)
        if decision.status is not None:
            update = {
                "engine": engine_status,
                "engine_dir": engine_dir,
                "label": label,
                "recipe": identity.recipe,
            }
            decision = replace(decision, status=decision.status.model_copy(update=update))
        if decision.event:
            self.events.append(decision.event)
        return self.deploy(stable, stable_status, decision, canary_served, "")

    def without_canary(self, stable: ServedVersion, stable_status: VersionStatus) -> Outcome:
        """No canary in spec. A promoted canary removed from spec while spec.checkpoint still names
        the version it replaced keeps serving: going back must be asked for, never implied."""
        promoted = self.previous.canary
        if (
            self.canary_spec is not None
            and promoted is not None
            and promoted.state == "Promoted"
            and promoted.digest == stable_status.digest
        ):
            # Spec's canary and stable both name the promoted version now (the promotion moved
            # the stable alias): keep the record of the promotion while spec keeps its canary.
            return self.deploy(stable, stable_status, CanaryDecision(promoted), None, "")
        if (
            promoted is not None
            and promoted.state == "Promoted"
            and promoted.engine_dir
            and promoted.replaced is not None
            and _same_version(promoted.replaced, stable_status)
        ):
            served = ServedVersion(promoted.label or promoted.checkpoint, promoted.engine_dir)
            return self.deploy(stable, stable_status, CanaryDecision(promoted), served, "")
        return self.deploy(stable, stable_status, CanaryDecision(None), None, "")

    def metrics(self, stable_label: str, canary_label: str, since: datetime) -> WindowMetrics | None:
        try:
            return self.platform.canary_metrics(self.model, stable_label, canary_label, since, self.now)
        except Unavailable:
            return None

    def canary_step(self, identity: CanaryIdentity, stable_label: str, canary_label: str) -> CanaryDecision:
        canary_spec = self.canary_spec
        assert canary_spec is not None
        current = self.previous.canary
        analysis = None
        live = (
            current is not None
            and same_canary(current, identity)
            and current.state in {"Progressing", "Paused"}
        )
        if live and current is not None:
            metrics = self.metrics(stable_label, canary_label, current.step_started_at or self.now)
            if metrics is not None:
                if metrics.window_start is not None:
                    current, restarted = restart_window(current, metrics.window_start)
                    if restarted is not None:
                        self.events.append(restarted)
                analysis = judge(canary_spec.analysis, metrics, self.now)
        decision = next_canary(canary_spec, identity, current, analysis, self.controls, self.now)
        began = decision.status.step_started_at if decision.status is not None else None
        window_opened = began == self.now and (
            not live or current is None or current.step_started_at != began
        )
        if window_opened and decision.status is not None and decision.status.state == "Progressing":
            # The step's baseline is taken as the step begins, so its window is its whole pause.
            self.metrics(stable_label, canary_label, self.now)
        return decision

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
        self.spec_digest = stable_status.digest  # what spec.checkpoint names, before a promotion stands in
        if decision.promoted and canary_served is not None and canary is not None:
            if canary.replaced is None:
                canary = canary.model_copy(update={"replaced": stable_status})
                decision = replace(decision, status=canary)
            stable, stable_status = canary_served, _as_version(canary)
        if decision.promoted and canary is not None:
            self.record_promotion(canary)
        plan = DeployPlan(stable)
        canary_spec = self.canary_spec
        if serving_canary and canary_served is not None and canary_spec is not None:
            split = TrafficSplit(canary_weight=decision.weight, shadow_percent=canary_spec.shadow_percent)
            # A drill's faults live only while the version is a canary: promoted, it serves clean.
            drilled = replace(canary_served, fault_injection=canary_spec.fault_injection)
            plan = DeployPlan(stable, drilled, split)
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
        promotion_not_in_spec = (
            canary is not None
            and canary.state == "Promoted"
            and self.canary_spec is None
            and canary.digest != self.spec_digest
        )
        if not deployed.ready:
            phase: Phase = "Deploying"
            reason, message = "Deploying", deployed.message or "waiting for the serving application"
        elif failed_canary and canary is not None:
            phase, reason = "Degraded", self.canary_condition(canary).reason
            message = f"canary {canary.checkpoint} {canary.state.lower()}; serving {plan.stable.label}"
            if canary.message:
                message = f"{message}: {canary.message}"
        elif promotion_not_in_spec and canary is not None and canary.replaced is not None:
            phase, reason = "Ready", PROMOTION_NOT_IN_SPEC
            message = (
                f"serving {plan.stable.label}, promoted from canary {canary.checkpoint}; spec.checkpoint "
                f"still names the replaced {canary.replaced.checkpoint}. Set spec.checkpoint (and "
                "spec.optimization) to the promoted version to record the promotion, or name another "
                "version to replace it"
            )
            previous_ready = self.previous.condition(READY)
            if previous_ready is None or previous_ready.reason != PROMOTION_NOT_IN_SPEC:
                self.events.append(Event("Warning", PROMOTION_NOT_IN_SPEC, message))
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

    def record_promotion(self, canary: CanaryStatus) -> None:
        """Move the registry alias to a promoted registry version, once per promotion: later passes
        see it in status.champion and leave the registry alone, so a person who moves the alias
        again is not overruled (that move is canaried like any other)."""
        match = re.match(r"^models:/(?P<name>[^/@]+)", canary.checkpoint)
        if match is None or canary.version is None:
            return
        name = match["name"]
        alias = promotion_alias(self.model, name)
        done = self.champion
        if done is not None and (done.model, done.alias, done.version) == (name, alias, canary.version):
            return
        try:
            self.platform.move_alias(name, alias, canary.version)
        except (Unavailable, CheckpointError) as error:
            self.events.append(
                Event(
                    "Warning",
                    "ChampionNotMoved",
                    f"models:/{name}@{alias} not moved to {canary.version}: {error}",
                )
            )
            return
        self.champion = ChampionStatus(
            model=name, alias=alias, version=canary.version, moved_at=self.now, from_canary=canary.checkpoint
        )
        self.events.append(
            Event(
                "Normal",
                "ChampionMoved",
                f"models:/{name}@{alias} now names version {canary.version} (promoted canary {canary.checkpoint})",
            )
        )

    def canary_condition(self, canary: CanaryStatus | None) -> ConditionSpec:
        if canary is None:
            return ConditionSpec(CANARY_HEALTHY, "True", "NoCanary", self.no_canary_note)
        analysis = canary.analysis
        detail = analysis.message if analysis else "no analysis yet"
        if canary.state in {"RolledBack", "Aborted"}:
            specific = canary.reason in {"ProgressDeadlineExceeded", "QualityGateFailed", "EngineFailed"}
            reason = f"Canary{canary.reason}" if specific else f"Canary{canary.state}"
            return ConditionSpec(CANARY_HEALTHY, "False", reason, canary.message or detail)
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
