"""Pieces shared by every manifest the operator plans: names, labels, owner references, storage."""

from __future__ import annotations

from typing import Any

from recserve_operator.api.types import API_VERSION, KIND, RecommenderModel
from recserve_operator.settings import MLFLOW_SECRET_KEYS, PVC_PREFIX, OperatorSettings
from recserve_serving.offline import OFFLINE_ENV

MANAGED_BY = "recserve-operator"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


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
    settings: OperatorSettings,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, env) that make the artifact store visible at ``artifact_mount``."""
    claim = settings.artifact_store.removeprefix(PVC_PREFIX).split("/", 1)[0]
    volumes = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": claim}}]
    mounts = [{"name": "artifacts", "mountPath": settings.artifact_mount}]
    return volumes, mounts, [{"name": "RECSERVE_PVC_ROOT", "value": settings.artifact_mount}]


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
