"""Pieces shared by every manifest the operator plans: names, labels, owner references, storage."""

from __future__ import annotations

from typing import Any

from recserve_operator.api.types import API_VERSION, KIND, RecommenderModel
from recserve_operator.settings import (
    MLFLOW_SECRET_KEYS,
    PSEUDONYM_MOUNT,
    PSEUDONYM_SECRET_KEY,
    PVC_PREFIX,
    OperatorSettings,
)
from recserve_serving.offline import OFFLINE_ENV

MANAGED_BY = "recserve-operator"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
IMAGE_UID = 1000
"""The ``USER`` of the serving/builder images (docker/serving*.Dockerfile); the pods run as it."""
TMP_MOUNT = "/tmp"
"""Ray's temp dir (``/tmp/ray``: sessions, logs, sockets) and Python's ``tempfile`` live here."""


def labels(model: RecommenderModel, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "recserve",
        "app.kubernetes.io/instance": model.metadata.name or "",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "recserve.dev/model": model.metadata.name or "",
    }


def owner_reference(model: RecommenderModel) -> dict[str, Any]:
    """Makes Kubernetes garbage-collect what we create when the model is deleted."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": model.metadata.name,
        "uid": model.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(model: RecommenderModel, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": labels(model, component),
    }
    if model.metadata.uid:
        meta["ownerReferences"] = [owner_reference(model)]
    return meta


def gpu_tolerations() -> list[dict[str, Any]]:
    """GPU pools are usually tainted so that only pods asking for GPUs land there."""
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def artifact_volume(
    settings: OperatorSettings, *, read_only: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, env) that make the artifact store visible at ``artifact_mount``.

    Only build Jobs write engines. Serving pods run user-reachable code (Serve apps, Ray's
    worker processes), so they get the store ``read_only``: code that runs there cannot
    replace an engine that other models load.
    """
    claim = settings.artifact_store.removeprefix(PVC_PREFIX).split("/", 1)[0]
    source: dict[str, Any] = {"claimName": claim, **({"readOnly": True} if read_only else {})}
    volumes = [{"name": "artifacts", "persistentVolumeClaim": source}]
    mounts = [{"name": "artifacts", "mountPath": settings.artifact_mount, "readOnly": read_only}]
    return volumes, mounts, [{"name": "RECSERVE_PVC_ROOT", "value": settings.artifact_mount}]


def online_volume(settings: OperatorSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) of the artifact claim's ``online/`` folder, writable, at
    ``settings.online_dir``: where routers append the feedback log and keep an embedded history
    store. Only that folder is writable there; engines and indexes stay read-only."""
    claim = settings.artifact_store.removeprefix(PVC_PREFIX).split("/", 1)[0]
    volume = {"name": "online", "persistentVolumeClaim": {"claimName": claim}}
    return volume, {"name": "online", "mountPath": settings.online_dir, "subPath": "online"}


def pseudonym_volume(settings: OperatorSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, volumeMount) of the pseudonym key Secret, read-only at ``PSEUDONYM_MOUNT``: what
    routers key users' log lines and history entries with. Mode 0440 with the pods' ``fsGroup``
    lets the images' user read it and nobody else; the Secret must exist (the chart creates it),
    or the pods wait for it rather than start a router that could write raw ids."""
    volume = {
        "name": "pseudonym-key",
        "secret": {
            "secretName": settings.pseudonym_secret,
            "items": [{"key": PSEUDONYM_SECRET_KEY, "path": PSEUDONYM_SECRET_KEY}],
            "defaultMode": 0o440,
        },
    }
    return volume, {"name": "pseudonym-key", "mountPath": PSEUDONYM_MOUNT, "readOnly": True}


def pod_security_context() -> dict[str, Any]:
    """Every pod the operator plans runs as the images' unprivileged user under the runtime's
    default seccomp filter; ``fsGroup`` lets that user read and write the shared volumes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "fsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privilege escalation, no capabilities, nothing written outside the mounted volumes
    (each pod mounts an emptyDir at ``TMP_MOUNT`` for its scratch files)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def scratch_volume(name: str, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": name, "emptyDir": {}}, {"name": name, "mountPath": path}


def common_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in OFFLINE_ENV.items()]


def mlflow_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """The registry's address and, by Secret reference, its credentials: only build Jobs read
    the registry, so serving pods get neither."""
    if not settings.mlflow_tracking_uri:
        return []
    env: list[dict[str, Any]] = [{"name": "MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri}]
    secret = settings.mlflow_credentials_secret
    if secret:
        env += [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for name, key in MLFLOW_SECRET_KEYS.items()
        ]
    return env
