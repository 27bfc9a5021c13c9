"""The KubeRay ``RayService`` (``ray.io/v1``) that serves one RecommenderModel.

Shape: a CPU-only head (it runs the Serve controller, proxy and router, never a ranker),
and one worker group whose pods each hold a whole ranker replica, so a replica's
placement group (pipeline × tensor shards, STRICT_PACK) always fits on one node. GPU
worker groups select their product by node label and tolerate the GPU taint. The Ray
autoscaler adds worker pods between bounds derived from Serve's replica bounds; the Serve
replica counts themselves stay inside Ray and never appear in anything tracked in git.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from recserve_operator.api.types import RecommenderModel
from recserve_operator.planners.k8s_common import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    artifact_volume,
    common_env,
    gpu_tolerations,
    metadata,
)
from recserve_operator.settings import OperatorSettings
from recserve_serving.release import RAY_VERSION
from recserve_serving.serve.config import SERVE_PORT
from recserve_serving.serving_spec import quantity_bytes

GCS_PORT = 6379
DASHBOARD_PORT = 8265
SERVING_COMPONENT = "serving"


def worker_group_name(gpu_product: str | None, gpus: float) -> str:
    if not gpus:
        return "cpu"
    product = re.sub(r"[^a-z0-9]+", "-", (gpu_product or "any").lower()).strip("-")
    return f"gpu-{product}"[:50]


def _container(
    image: str, requests: dict[str, Any], mounts: list[dict[str, Any]], env: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": "ray",
        "image": image,
        "resources": {"requests": dict(requests), "limits": dict(requests)},
        "volumeMounts": mounts,
        "env": env,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }


def _head(
    settings: OperatorSettings,
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    container = _container(settings.serving_image, {"cpu": "2", "memory": "4Gi"}, mounts, env)
    container["ports"] = [
        {"containerPort": GCS_PORT, "name": "gcs"},
        {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
        {"containerPort": SERVE_PORT, "name": "serve"},
    ]
    return {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "1"},
        "template": {"spec": {"containers": [container], "volumes": volumes}},
    }


def _worker_group(
    model: RecommenderModel,
    settings: OperatorSettings,
    versions: int,
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    serving = model.spec.serving
    resources, shards = serving.resources, serving.parallelism.shards
    cpus = math.ceil(resources.cpus * shards) + 1
    memory_gib = math.ceil(quantity_bytes(resources.memory) * shards / 2**30) + 1
    requests: dict[str, Any] = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    start_params = {"num-cpus": str(cpus)}
    pod: dict[str, Any] = {"containers": [], "volumes": volumes}
    gpu_product = resources.gpu_product or settings.default_gpu_product
    if resources.gpus:
        gpus = math.ceil(resources.gpus * shards)
        requests[GPU_RESOURCE] = str(gpus)
        start_params["num-gpus"] = str(gpus)
        pod["tolerations"] = gpu_tolerations()
        if gpu_product:
            pod["nodeSelector"] = {GPU_PRODUCT_LABEL: gpu_product}
    pod["containers"] = [_container(settings.serving_image, requests, mounts, env)]
    autoscaling = serving.autoscaling
    return {
        "groupName": worker_group_name(gpu_product, resources.gpus),
        "replicas": autoscaling.min_replicas * versions,
        "minReplicas": autoscaling.min_replicas * versions,
        "maxReplicas": autoscaling.max_replicas * versions,
        "rayStartParams": start_params,
        "template": {"spec": pod},
    }


def plan_rayservice(
    model: RecommenderModel, serve_config: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """The RayService for a rendered serve config (``plan_hand_over``'s step); its worker group
    has room for every ranker application in it."""
    volumes, mounts, store_env = artifact_volume(settings)
    env = [*common_env(settings), *store_env]
    versions = max(1, len(serve_config["applications"]) - 1)  # every app but the router
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata(model, model.metadata.name or "", SERVING_COMPONENT),
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 60},
                "headGroupSpec": _head(settings, mounts, volumes, env),
                "workerGroupSpecs": [_worker_group(model, settings, versions, mounts, volumes, env)],
            },
        },
    }
