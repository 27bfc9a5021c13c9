"""Scheduled retraining as a ``batch/v1`` CronJob running ``recserve retrain`` in the trainer image.

The CronJob is the cluster's form of ``spec.training``: Kubernetes owns the schedule, so a
retrain starts on time whether or not the operator is up, and ``concurrencyPolicy: Forbid``
keeps a slow retrain from overlapping the next. The operator only plans the object, applies it
when its planned form changes (the spec hash annotation) and reads its status back.

A retrain pod needs far less than a build Job, so it gets less: no Kubernetes API token (it
talks only to the registry), the artifact claim read-only (data, and the routers' feedback log
under ``online/``), the pseudonymization key read-only, and nothing writable but two emptyDirs.
It registers a version (alias ``spec.training.candidateAlias``) in the registry and nothing
else; the canary takes it from there.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from recserve_operator.api.status import RetrainRun, TrainingStatus
from recserve_operator.api.types import API_VERSION, KIND, RecommenderModel
from recserve_operator.planners.k8s_common import (
    TMP_MOUNT,
    artifact_volume,
    common_env,
    container_security_context,
    metadata,
    mlflow_env,
    pod_security_context,
    scratch_volume,
)
from recserve_operator.settings import OperatorSettings

TRAINING_COMPONENT = "retrain"
CRONJOB_NAME_LIMIT = 52
"""Kubernetes refuses longer CronJob names: a Job it starts is named ``<cronjob>-<11 digits>``
and must stay within 63 characters."""
SPEC_HASH_ANNOTATION = "recserve.dev/spec-hash"
STATE_MOUNT = "/var/lib/recserve/retrain"
"""The retrain's scratch state (warm-start copies, the split it evaluated on): an emptyDir,
since every run starts again from the registry and the feedback log."""
PSEUDONYM_DIR = "/var/run/recserve/pseudonym"
PSEUDONYM_KEY = "key"
"""The key's name in the Secret and its file name under ``PSEUDONYM_DIR``."""
STARTING_DEADLINE_SECONDS = 3600
"""A retrain missed by more than an hour (the controller-manager was down) waits for its next
slot instead of starting at an unplanned hour, and missed slots never pile up."""
BACKOFF_LIMIT = 1
"""One retry: a retrain is deterministic on its data, so a second failure is not a flake."""
SCHEDULE_TIME_ZONE = "Etc/UTC"
"""spec.training.schedule is read in UTC."""
SUCCESSFUL_HISTORY, FAILED_HISTORY = 3, 3
TTL_SECONDS_AFTER_FINISHED = 7 * 24 * 3600


def cronjob_name(model_name: str) -> str:
    """``<model>-retrain``, or for a name too long for a CronJob its head and a hash of the whole
    name, so two long names that share a head never collide."""
    name = f"{model_name}-retrain"
    if len(name) <= CRONJOB_NAME_LIMIT:
        return name
    digest = hashlib.sha256(model_name.encode()).hexdigest()[:8]
    head = model_name[: CRONJOB_NAME_LIMIT - len("-retrain") - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}-retrain"


def training_blocker(model: RecommenderModel, settings: OperatorSettings) -> str | None:
    """Why ``model``'s retrain cannot be scheduled with these settings, or None when it can.

    Both are installation settings, not spec problems: the model keeps serving and status says
    what to set."""
    if model.spec.training is None:
        return "spec.training is not set"
    if not settings.mlflow_tracking_uri:
        return (
            "not scheduled: the operator has no MLflow tracking URI (chart value config.mlflowTrackingUri), "
            "and a retrain registers its version there"
        )
    return None


def model_document(model: RecommenderModel) -> dict[str, Any]:
    """What ``--model-json`` carries: the spec, and only the metadata that names the model (no
    status, uid or annotations, so the CronJob changes only when the spec does)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": model.metadata.name, "namespace": model.metadata.namespace},
        "spec": model.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def feedback_dir(model: RecommenderModel, settings: OperatorSettings) -> str:
    """Where the model's routers append the interaction log (``ServeSite.online_dir`` per model,
    then ``feedback/``, as ``recserve_serving.serve.app`` opens it)."""
    return f"{settings.online_dir}/{model.metadata.name}/feedback"


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def plan_training_cronjob(model: RecommenderModel, settings: OperatorSettings) -> dict[str, Any]:
    """The retrain CronJob of ``model``. Call only when ``training_blocker`` is None."""
    blocker = training_blocker(model, settings)
    if blocker is not None:
        raise ValueError(f"{model.metadata.namespace}/{model.metadata.name}: {blocker}")
    training = model.spec.training
    assert training is not None  # training_blocker checked it
    assert settings.mlflow_tracking_uri is not None

    volumes, mounts, store_env = artifact_volume(settings, read_only=True)
    # The routers' online/ folder of the same claim, at the path they write it, read-only here.
    mounts = [
        *mounts,
        {"name": "artifacts", "mountPath": settings.online_dir, "subPath": "online", "readOnly": True},
    ]
    for name, path in (("tmp", TMP_MOUNT), ("state", STATE_MOUNT)):
        volume, mount = scratch_volume(name, path)
        volumes, mounts = [*volumes, volume], [*mounts, mount]
    volumes.append(
        {
            "name": "pseudonym-key",
            "secret": {
                "secretName": settings.pseudonym_secret,
                "items": [{"key": PSEUDONYM_KEY, "path": PSEUDONYM_KEY}],
                "defaultMode": 0o440,
            },
        }
    )
    mounts.append({"name": "pseudonym-key", "mountPath": PSEUDONYM_DIR, "readOnly": True})
    name = model.metadata.name or ""
    container: dict[str, Any] = {
        "name": "retrain",
        "image": settings.trainer_image,
        "args": [
            "retrain",
            name,
            "--model-json",
            json.dumps(model_document(model), sort_keys=True),
            "--tracking-uri",
            settings.mlflow_tracking_uri,
            "--feedback-dir",
            feedback_dir(model, settings),
            "--key-file",
            f"{PSEUDONYM_DIR}/{PSEUDONYM_KEY}",
            "--state",
            STATE_MOUNT,
        ],
        # HOME on the scratch volume: the root filesystem is read-only, and torch and Hugging
        # Face write caches under it.
        "env": [
            *common_env(settings),
            *mlflow_env(settings),
            *store_env,
            {"name": "HOME", "value": TMP_MOUNT},
        ],
        "resources": {kind: dict(values) for kind, values in settings.trainer_resources.items()},
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    if settings.trainer_pull_policy:
        container["imagePullPolicy"] = settings.trainer_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.trainer_service_account:
        pod_spec["serviceAccountName"] = settings.trainer_service_account
    meta = metadata(model, cronjob_name(name), TRAINING_COMPONENT)
    spec: dict[str, Any] = {
        "schedule": training.schedule,
        # Pinned, so that a schedule means the same hour whatever zone the controller-manager runs in.
        "timeZone": SCHEDULE_TIME_ZONE,
        "suspend": training.suspend,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": SUCCESSFUL_HISTORY,
        "failedJobsHistoryLimit": FAILED_HISTORY,
        "jobTemplate": {
            "metadata": {"labels": dict(meta["labels"])},
            "spec": {
                "backoffLimit": BACKOFF_LIMIT,
                "activeDeadlineSeconds": training.budget.max_minutes * 60,
                "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
                "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod_spec},
            },
        },
    }
    meta["annotations"] = {SPEC_HASH_ANNOTATION: spec_hash(spec)}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta, "spec": spec}


def needs_update(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the live CronJob must be patched: its planned form changed (the hash), or someone
    changed its schedule or suspension by hand, which the spec owns. Anything else the API server
    defaults or normalizes (quantities) is left alone, so an unchanged spec writes nothing."""
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    if annotations.get(SPEC_HASH_ANNOTATION) != wanted["metadata"]["annotations"][SPEC_HASH_ANNOTATION]:
        return True
    live = current.get("spec") or {}
    return bool(
        live.get("schedule") != wanted["spec"]["schedule"]
        or bool(live.get("suspend")) != wanted["spec"]["suspend"]
    )


def owned_by(cronjob: dict[str, Any], model: RecommenderModel) -> bool:
    """Whether ``cronjob`` is this model's (an owner reference to its uid, or, before the model
    had one, recserve's labels for it): only those are ever deleted."""
    meta = cronjob.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if model.metadata.uid:
        return any(ref.get("uid") == model.metadata.uid for ref in refs)
    labels = meta.get("labels") or {}
    return bool(
        labels.get("recserve.dev/model") == model.metadata.name
        and labels.get("app.kubernetes.io/component") == TRAINING_COMPONENT
    )


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def last_run(active: int, scheduled: datetime | None, succeeded: datetime | None) -> RetrainRun | None:
    """The last run's outcome from the CronJob's own status: running while a Job is active;
    succeeded when the last success is no older than the last start; failed when it ended
    (nothing active) after a start that never succeeded."""
    if active:
        return "Running"
    if scheduled is None:
        return None
    if succeeded is not None and succeeded >= scheduled:
        return "Succeeded"
    return "Failed"


def training_status(
    model: RecommenderModel, cronjob: dict[str, Any] | None, message: str | None = None
) -> TrainingStatus | None:
    """``status.training`` from spec and the observed CronJob (None: not scheduled, ``message``
    says why). None when spec has no training."""
    training = model.spec.training
    if training is None:
        return None
    if cronjob is None:
        return TrainingStatus(schedule=training.schedule, suspended=training.suspend, message=message)
    observed = cronjob.get("status") or {}
    active = len(observed.get("active") or [])
    scheduled = _time(observed.get("lastScheduleTime"))
    succeeded = _time(observed.get("lastSuccessfulTime"))
    live = cronjob.get("spec") or {}
    return TrainingStatus(
        cron_job=(cronjob.get("metadata") or {}).get("name"),
        schedule=str(live.get("schedule", training.schedule)),
        suspended=bool(live.get("suspend", training.suspend)),
        last_schedule_time=scheduled,
        last_successful_time=succeeded,
        active=active,
        last_run=last_run(active, scheduled, succeeded),
        message=message,
    )
