"""Pieces shared by every manifest the operator plans: names, labels, owner references, storage."""

from __future__ import annotations

from typing import Any

from recserve_operator.api.types import API_VERSION, KIND, RecommenderModel
from recserve_operator.settings import OperatorSettings
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
    store = settings.artifact_store
    if store.startswith("pvc://"):
        claim = store.removeprefix("pvc://").split("/", 1)[0]
        volumes = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": claim}}]
        mounts = [{"name": "artifacts", "mountPath": settings.artifact_mount}]
        return volumes, mounts, [{"name": "RECSERVE_PVC_ROOT", "value": settings.artifact_mount}]
    if store.startswith("s3://"):
        volumes = [{"name": "artifacts", "emptyDir": {}}]
        mounts = [{"name": "artifacts", "mountPath": settings.artifact_mount}]
        env: list[dict[str, Any]] = [
            {"name": "RECSERVE_ARTIFACT_STORE", "value": store},
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": "recserve-s3", "key": "accessKey"}},
            },
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "recserve-s3", "key": "secretKey"}},
            },
        ]
        return volumes, mounts, env
    raise ValueError(f"artifact store must be pvc://CLAIM or s3://BUCKET/PREFIX, got {store!r}")


def common_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in OFFLINE_ENV.items()]
    if settings.mlflow_tracking_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": settings.mlflow_tracking_uri})
    return env
