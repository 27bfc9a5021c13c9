"""The canary state machine: (status, spec, analysis verdict, controls, clock) → next status.

Pure and level-based: the same inputs give the same answer, so a restarted operator
resumes from status alone, without resetting weights. Rules, in order:

1. no canary in spec → no canary;
2. a canary whose identity (checkpoint + digest + recipe, and engine key once built) differs
   from status → start at step 0;
3. a finished canary (Promoted, RolledBack, Aborted) stays finished until spec changes: a
   decision is never undone by its engine being rebuilt;
4. ``abort`` → weight 0, Aborted; ``promote`` → Promoted (the canary becomes stable);
5. a failing analysis → rollback to 0 at once, even mid-step;
6. a step whose pause has elapsed advances on Pass, holds on Inconclusive (too little
   traffic) or when no analysis could be made (metrics unreachable), and the last step
   passing promotes;
7. a step still without a verdict ``progressDeadline`` after its pause ended → rollback:
   a canary that never serves gets no traffic, and would otherwise hold forever.

A canary whose engine cannot be built, or fails its quality gate, is rolled back before it
gets any traffic (``engine_failed``): the failure belongs to the canary, never to stable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from recserve_operator.api.status import AnalysisResult, CanaryState, CanaryStatus
from recserve_operator.api.types import CanarySpec
from recserve_serving.recipe import OptimizationRecipe

EventType = Literal["Normal", "Warning"]
FINISHED: frozenset[CanaryState] = frozenset({"Promoted", "RolledBack", "Aborted"})


@dataclass(frozen=True)
class CanaryIdentity:
    """Which canary the spec asks for, once resolved: a moved alias or a new recipe is a new canary."""

    checkpoint: str
    version: str | None
    digest: str
    engine_key: str | None = None
    recipe: str | None = None


def recipe_fingerprint(recipe: OptimizationRecipe) -> str:
    """Names a recipe before its engine (and so its engine key) exists."""
    return hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EngineFailure:
    """Why a canary's engine could not be had: a failed quality gate or a build/load error."""

    reason: Literal["QualityGateFailed", "EngineFailed"]
    message: str
    report: str | None = None


@dataclass(frozen=True)
class Controls:
    """Manual overrides from annotations, each naming the canary digest it applies to."""

    promote: bool = False
    abort: bool = False


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class CanaryDecision:
    status: CanaryStatus | None
    event: Event | None = None
    requeue_after: float | None = None

    @property
    def weight(self) -> int:
        return 0 if self.status is None else self.status.weight

    @property
    def promoted(self) -> bool:
        return self.status is not None and self.status.state == "Promoted"


def _started(spec: CanarySpec, identity: CanaryIdentity, now: datetime) -> CanaryDecision:
    first = spec.steps[0]
    status = CanaryStatus(
        checkpoint=identity.checkpoint,
        version=identity.version,
        digest=identity.digest,
        state="Progressing",
        weight=first.weight,
        step=0,
        step_started_at=now,
        recipe=identity.recipe,
    )
    message = f"canary {identity.checkpoint} started at {first.weight}% (step 1/{len(spec.steps)})"
    return CanaryDecision(
        status, Event("Normal", "CanaryStarted", message), requeue_after=first.pause_seconds
    )


def _finish(
    current: CanaryStatus, state: CanaryState, reason: str, event: Event, now: datetime
) -> CanaryDecision:
    weight = 100 if state == "Promoted" else 0
    update = {
        "state": state,
        "weight": weight,
        "step_started_at": now,
        "reason": reason,
        "message": event.message,
    }
    return CanaryDecision(current.model_copy(update=update), event)


def same_canary(current: CanaryStatus, identity: CanaryIdentity) -> bool:
    """Whether status describes the canary spec asks for; unknown parts (an engine key before
    the build, a recipe in a status written before recipes were recorded) do not differ."""
    same_engine = (
        identity.engine_key is None or current.engine is None or current.engine.key == identity.engine_key
    )
    same_recipe = identity.recipe is None or current.recipe is None or current.recipe == identity.recipe
    return (
        current.checkpoint == identity.checkpoint
        and current.digest == identity.digest
        and same_engine
        and same_recipe
    )


def engine_failed(
    identity: CanaryIdentity, current: CanaryStatus | None, failure: EngineFailure, now: datetime
) -> CanaryDecision:
    """The canary's engine failed: roll the canary back (it never had traffic) and say why, once."""
    if current is not None and same_canary(current, identity) and current.state in FINISHED:
        return CanaryDecision(current)
    what = "failed its quality gate" if failure.reason == "QualityGateFailed" else "could not be built"
    message = f"canary engine for {identity.checkpoint} {what}; stable keeps serving"
    if failure.report:
        message += f" (report: {failure.report})"
    message = f"{message}: {failure.message}"[:4000]
    status = CanaryStatus(
        checkpoint=identity.checkpoint,
        version=identity.version,
        digest=identity.digest,
        recipe=identity.recipe,
        state="RolledBack",
        weight=0,
        step=0,
        step_started_at=now,
        reason=failure.reason,
        message=message,
        report=failure.report,
    )
    return CanaryDecision(status, Event("Warning", f"Canary{failure.reason}", message))


def restart_window(current: CanaryStatus, window_start: datetime) -> tuple[CanaryStatus, Event | None]:
    """Start the step's window again at ``window_start`` when the metrics baseline is younger than
    the step (an operator restart lost it): a step is judged only on a full window of traffic
    observed after the baseline, never on the few seconds since the restart."""
    started = current.step_started_at
    if started is None or window_start <= started:
        return current, None
    message = (
        f"canary metrics baseline taken again at {window_start.isoformat()}; step {current.step + 1} "
        "restarts its window so it is judged on a full pause of traffic"
    )
    restarted = current.model_copy(update={"step_started_at": window_start})
    return restarted, Event("Normal", "CanaryWindowRestarted", message)


def _with_analysis(current: CanaryStatus, analysis: AnalysisResult | None) -> CanaryStatus:
    return current if analysis is None else current.model_copy(update={"analysis": analysis})


def next_canary(
    spec: CanarySpec | None,
    identity: CanaryIdentity | None,
    current: CanaryStatus | None,
    analysis: AnalysisResult | None,
    controls: Controls,
    now: datetime,
) -> CanaryDecision:
    """The next canary status; ``analysis`` is None when no metrics could be read."""
    if spec is None or identity is None:
        return CanaryDecision(None)
    if current is None or not same_canary(current, identity):
        return _started(spec, identity, now)
    if current.state in FINISHED:
        return CanaryDecision(current)
    if controls.abort:
        event = Event(
            "Warning", "CanaryAborted", f"canary {identity.checkpoint} aborted by request; weight 0%"
        )
        return _finish(current, "Aborted", "Aborted", event, now)
    if controls.promote:
        event = Event("Normal", "CanaryPromoted", f"canary {identity.checkpoint} promoted by request")
        return _finish(current, "Promoted", "PromotedByRequest", event, now)

    current = _with_analysis(current, analysis)
    if analysis is not None and analysis.verdict == "Fail":
        event = Event(
            "Warning",
            "CanaryRolledBack",
            f"canary {identity.checkpoint} failed analysis at {current.weight}%: {analysis.message}; weight 0%",
        )
        return _finish(current, "RolledBack", "AnalysisFailed", event, now)

    step = spec.steps[min(current.step, len(spec.steps) - 1)]
    started = current.step_started_at or now
    remaining = (started + timedelta(seconds=step.pause_seconds) - now).total_seconds()
    if remaining > 0:
        return CanaryDecision(current.model_copy(update={"state": "Progressing"}), requeue_after=remaining)
    if analysis is None or analysis.verdict == "Inconclusive":
        why = "no metrics could be read" if analysis is None else analysis.message
        deadline_left = spec.progress_deadline_seconds + remaining
        if deadline_left <= 0:
            event = Event(
                "Warning",
                "CanaryRolledBack",
                f"canary {identity.checkpoint} had no verdict at {current.weight}% within progressDeadline "
                f"{spec.progress_deadline} after step {current.step + 1}'s pause ({why}); weight 0%",
            )
            return _finish(current, "RolledBack", "ProgressDeadlineExceeded", event, now)
        paused = current.model_copy(update={"state": "Paused"})
        held = None
        if current.state != "Paused":
            held = Event("Normal", "CanaryPaused", f"canary held at {current.weight}%: {why}")
        requeue = min(30.0, max(step.pause_seconds, 1), max(deadline_left, 1.0))
        return CanaryDecision(paused, held, requeue_after=requeue)

    if current.step + 1 >= len(spec.steps):
        event = Event(
            "Normal",
            "CanaryPromoted",
            f"canary {identity.checkpoint} passed all {len(spec.steps)} steps and is now stable",
        )
        return _finish(current, "Promoted", "StepsPassed", event, now)
    nxt = spec.steps[current.step + 1]
    advanced = current.model_copy(
        update={
            "state": "Progressing",
            "step": current.step + 1,
            "weight": nxt.weight,
            "step_started_at": now,
        }
    )
    message = f"canary {identity.checkpoint} at {nxt.weight}% (step {current.step + 2}/{len(spec.steps)})"
    return CanaryDecision(
        advanced, Event("Normal", "CanaryStepAdvanced", message), requeue_after=nxt.pause_seconds
    )
