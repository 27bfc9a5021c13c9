"""kopf handlers: thin glue from watch events to the reconcile core and back to the API.

Every handler parses the object, runs one ``reconcile`` pass through the platform
``recserve operator`` chose, emits the pass's events, and patches status only when it
changed. Invalid specs (possible when the webhook is off) become ``Stalled`` with an event
and a ``PermanentError``; passing failures become ``TemporaryError`` with a delay.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf

from recserve_operator import kube, metrics
from recserve_operator.api.status import READY, RECONCILING, STALLED, RecommenderModelStatus, TrainingStatus
from recserve_operator.api.types import GROUP, PLURAL, VERSION, RecommenderModel
from recserve_operator.planners.canary import Controls
from recserve_operator.planners.conditions import ConditionSpec, merge_conditions
from recserve_operator.planners.training_job import training_status
from recserve_operator.platform import Platform
from recserve_operator.reconcile import already_stalled, reconcile
from recserve_operator.validate import check_document
from recserve_serving.errors import Unavailable

log = logging.getLogger("recserve.operator")
RESOURCE = (GROUP, VERSION, PLURAL)
TICK_ENV = "RECSERVE_OPERATOR_TICK_SECONDS"


def _tick_seconds(raw: str | None) -> float:
    """The resync period (default 10 s). Each canary step, rollout hand-over step and readiness
    change is noticed on a tick, so a test that walks a whole rollout sets it shorter (e2e
    rollout: 2 s); a step still lasts its whole pause."""
    if not raw:
        return 10.0
    value = float(raw)
    if not 0.5 <= value <= 300:
        raise ValueError(f"{TICK_ENV}={raw!r}: must be a number of seconds from 0.5 to 300")
    return value


TICK_SECONDS = _tick_seconds(os.environ.get(TICK_ENV))
UNSCHEDULED = (
    "not scheduled: this operator rolls out to a Ray cluster's Serve REST API (--serve-rest), whose "
    "feedback log is on the operator's disk; run recserve retrain {name} there by hand"
)


class TrainingScheduler(Protocol):
    """Keeps a model's scheduled retraining in line with ``spec.training`` (the cluster's
    CronJob); returns ``status.training``, raises ``Unavailable`` when the API fails."""

    def sync_training(self, model: RecommenderModel) -> TrainingStatus | None: ...


_platform: Platform | None = None
_training: TrainingScheduler | None = None


def use_platform(chosen: Platform, training: TrainingScheduler | None = None) -> None:
    """Set by ``recserve operator`` before kopf starts: the command line picks the platform, and
    with it whether retrains are scheduled here (KubeRay: a CronJob per model) or not at all."""
    global _platform, _training
    _platform = chosen
    _training = training


def platform() -> Platform:
    if _platform is None:
        raise RuntimeError("no platform: recserve operator sets one before kopf starts")
    return _platform


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler progress and diff bases live in annotations: status is for users and GitOps tools only.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="recserve.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="recserve.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300


def controls(body: kopf.Body) -> Controls:
    annotations = body.metadata.annotations
    digest = ((body.get("status") or {}).get("canary") or {}).get("digest")
    return Controls(
        promote=bool(digest) and annotations.get(kube.CONTROL_ANNOTATION.format(action="promote")) == digest,
        abort=bool(digest) and annotations.get(kube.CONTROL_ANNOTATION.format(action="abort")) == digest,
    )


def _write_status(body: kopf.Body, patch: kopf.Patch, status: RecommenderModelStatus) -> None:
    wanted = status.to_dict()
    current = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    if wanted != current:
        patch.status.update(wanted)
        for key in set(current) - set(wanted):
            patch.status[key] = None


def _reject(body: kopf.Body, patch: kopf.Patch, problems: list[str]) -> None:
    message = "; ".join(problems)[:4000]
    previous = RecommenderModelStatus.model_validate(
        {k: v for k, v in (body.get("status") or {}).items() if k in {"conditions"}}
    )
    now = datetime.now(UTC)
    generation = body.metadata.get("generation")
    conditions = merge_conditions(
        previous.conditions,
        [
            ConditionSpec(READY, "False", "InvalidSpec", message),
            ConditionSpec(RECONCILING, "False", "InvalidSpec", message),
            ConditionSpec(STALLED, "True", "InvalidSpec", message),
        ],
        generation,
        now,
    )
    status = RecommenderModelStatus(observed_generation=generation, phase="Failed", conditions=conditions)
    _write_status(body, patch, status)
    if not already_stalled(previous, "InvalidSpec", message, generation):
        kopf.warn(body, reason="InvalidSpec", message=message)
    raise kopf.PermanentError(f"invalid spec: {message}")


_passes: dict[str, threading.Lock] = {}
_passes_guard = threading.Lock()


def _pass_lock(body: kopf.Body) -> threading.Lock:
    """One reconcile pass per object at a time: kopf runs a timer beside event handlers, and
    two passes of one model must never deploy (or build) against each other."""
    with _passes_guard:
        return _passes.setdefault(str(body.metadata.uid), threading.Lock())


def reconcile_object(body: kopf.Body, patch: kopf.Patch, *, wait: bool = True) -> None:
    lock = _pass_lock(body)
    if not lock.acquire(blocking=wait):
        return  # a resync while a pass is running: that pass is the resync
    try:
        _reconcile_object(body, patch)
    finally:
        lock.release()


def _reconcile_object(body: kopf.Body, patch: kopf.Patch) -> None:
    status = body.get("status")
    document: dict[str, Any] = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: v for k, v in dict(body.metadata).items() if k != "managedFields"},
        "spec": body.get("spec"),
    }
    if isinstance(status, dict):
        document["status"] = {k: v for k, v in status.items() if k != "kopf"}
    model, problems = check_document(document)
    if model is None:
        _reject(body, patch, [str(p) for p in problems])
        return
    outcome = reconcile(model, platform(), datetime.now(UTC), controls(body))
    training, training_error = sync_training(model)
    status = outcome.status.model_copy(update={"training": training})
    metrics.observe(body.metadata.name or "", body.metadata.namespace or "", status, outcome.events)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    _write_status(body, patch, status)
    if outcome.stalled_reason:
        log.warning("%s/%s stalled: %s", body.metadata.namespace, body.metadata.name, outcome.stalled_reason)
    elif outcome.retry_reason:
        metrics.RECONCILE_ERRORS.inc()
        raise kopf.TemporaryError(outcome.retry_reason, delay=outcome.requeue_after or 30)
    if training_error:
        metrics.RECONCILE_ERRORS.inc()
        raise kopf.TemporaryError(training_error, delay=30)


def sync_training(model: RecommenderModel) -> tuple[TrainingStatus | None, str | None]:
    """(``status.training``, the API failure to retry on) after the serving pass, beside it
    rather than inside the reconcile core: a retrain schedule that cannot be applied is reported
    and retried, and never holds up or degrades serving (Ready and the phase ignore it)."""
    if _training is None:
        return training_status(model, None, UNSCHEDULED.format(name=model.metadata.name)), None
    try:
        return _training.sync_training(model), None
    except Unavailable as error:
        message = f"retrain CronJob not applied: {error}"
        previous = model.status.training if model.status else None
        if model.spec.training is None:
            return (previous.model_copy(update={"message": message}) if previous else None), message
        if previous is not None:
            return previous.model_copy(update={"message": message}), message
        return training_status(model, None, message), message


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
def on_change(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    reconcile_object(body, patch)


@kopf.timer(*RESOURCE, interval=TICK_SECONDS, initial_delay=TICK_SECONDS)
def on_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Level-based resync: canary steps, build completion and deleted children are noticed here."""
    reconcile_object(body, patch, wait=False)


@kopf.on.delete(*RESOURCE)
def on_delete(body: kopf.Body, **_: Any) -> None:
    """Owner references let Kubernetes delete the RayService and Jobs; what has no owner
    reference (Serve applications on a shared Ray cluster, with ``--serve-rest``) is removed
    here, before kopf lets the deletion finish. A failure is retried, so nothing is orphaned."""
    document = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": body.metadata.name, "namespace": body.metadata.namespace},
        "spec": body.get("spec"),
    }
    model, _problems = check_document(document)
    if model is not None:
        try:
            platform().teardown(model)
        except Unavailable as error:
            raise kopf.TemporaryError(f"teardown of {body.metadata.name}: {error}", delay=10) from error
    log.info(
        "RecommenderModel %s/%s deleted; children go with it", body.metadata.namespace, body.metadata.name
    )
