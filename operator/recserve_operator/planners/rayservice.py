"""The KubeRay ``RayService`` (``ray.io/v1``) that serves one RecommenderModel.

Shape: a CPU-only head (it runs the Serve controller, proxy and router, never a ranker),
and one worker group whose pods each hold a whole ranker replica, so a replica's
placement group (pipeline × tensor shards, STRICT_PACK) always fits on one node. GPU
worker groups select their product by node label and tolerate the GPU taint. The Ray
autoscaler adds worker pods between bounds derived from Serve's replica bounds (a group whose
bounds are equal runs without it); the Serve
replica counts themselves stay inside Ray and never appear in anything tracked in git.

Every Ray pod carries the model's serving labels (``serving_pod_labels``): KubeRay keeps a
template's labels and adds its own ``ray.io/*`` ones, so the model's NetworkPolicy
(``planners/network_policy.py``) selects exactly these pods, across KubeRay's cluster
replacements, by labels this module sets.
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
    TMP_MOUNT,
    artifact_volume,
    common_env,
    container_security_context,
    gpu_tolerations,
    labels,
    metadata,
    online_volume,
    pod_security_context,
    pseudonym_volume,
    scratch_volume,
)
from recserve_operator.settings import OperatorSettings
from recserve_serving.release import RAY_VERSION
from recserve_serving.serve.config import SERVE_PORT
from recserve_serving.serving_spec import quantity_bytes

GCS_PORT = 6379
DASHBOARD_PORT = 8265
DASHBOARD_AGENT_PORT = 52365
"""KubeRay's default ``dashboard-agent-listen-port``: the raylet's health endpoint is served there."""
RAY_METRICS_PORT = 8080
"""KubeRay's default ``metrics-export-port`` of every Ray pod (Ray's own Prometheus metrics)."""
MAX_SERVED_VERSIONS = 3
"""Versions one model's Ray cluster serves at once at most: stable, a canary, and during a
hand-over the outgoing stable. KubeRay 1.5 never changes the worker bounds of a live RayService's
cluster (its spec hash leaves replicas, minReplicas and maxReplicas out, and only appended worker
groups update a cluster in place), so an autoscaled group is created with room for all of them;
Ray's autoscaler starts those workers only when replicas wait for them."""
SERVING_COMPONENT = "serving"
HOME_MOUNT = "/home/ray"
"""The images' home directory: Ray, torch and Triton keep caches under ``$HOME``, which the
read-only root filesystem would otherwise refuse."""


def serving_pod_labels(model: RecommenderModel) -> dict[str, str]:
    return labels(model, SERVING_COMPONENT)


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
        "securityContext": container_security_context(),
    }


def _pod_template(model: RecommenderModel, pod: dict[str, Any]) -> dict[str, Any]:
    """``spec.placement`` joins what the group itself needs (a GPU product, the GPU taint)."""
    placement = model.spec.placement
    selector = {**placement.node_selector, **pod.pop("nodeSelector", {})}
    tolerations = [*pod.pop("tolerations", []), *(t.manifest() for t in placement.tolerations)]
    spec: dict[str, Any] = {"securityContext": pod_security_context(), **pod}
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    return {"metadata": {"labels": serving_pod_labels(model)}, "spec": spec}


def _head(
    model: RecommenderModel,
    settings: OperatorSettings,
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    requests = {"cpu": settings.ray_head_cpu, "memory": settings.ray_head_memory}
    container = _container(settings.serving_image, requests, mounts, env)
    container["ports"] = [
        {"containerPort": GCS_PORT, "name": "gcs"},
        {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
        {"containerPort": SERVE_PORT, "name": "serve"},
    ]
    # The dashboard listens on the pod IP, not 127.0.0.1: KubeRay's RayService controller
    # deploys and watches Serve applications through the dashboard's REST API on the head
    # Service (port DASHBOARD_PORT), from the KubeRay operator's pod. The same port also takes
    # Ray job submissions (arbitrary code), so the model's NetworkPolicy admits it from the
    # KubeRay operator and the model's own Ray pods only.
    return {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "1"},
        "template": _pod_template(model, {"containers": [container], "volumes": volumes}),
    }


def _raylet_ready_probe() -> dict[str, Any]:
    """A worker is ready when its raylet is. KubeRay's default probe for RayService workers also
    asks for a Serve HTTP proxy on the worker, but only the head runs one here (``HeadOnly``:
    requests enter through the router, which calls rankers by handle), so that probe would keep
    every worker unready for good."""
    check = f"wget --tries 1 -T 2 -q -O- http://localhost:{DASHBOARD_AGENT_PORT}/api/local_raylet_healthz | grep success"
    return {
        "exec": {"command": ["bash", "-c", check]},
        "initialDelaySeconds": 10,
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 10,
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
    # Ray's logical CPUs hold the replica's shards and a placement group's coordinator; the pod
    # requests the shards' CPUs plus the configured overhead for the raylet and object store.
    cpus = math.ceil(resources.cpus * shards) + 1
    cpu_millis = round((resources.cpus * shards + settings.ray_worker_overhead_cpu) * 1000)
    memory_gib = math.ceil(quantity_bytes(resources.memory) * shards / 2**30) + 1
    requests: dict[str, Any] = {"cpu": _cpu_quantity(cpu_millis), "memory": f"{memory_gib}Gi"}
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
    container = _container(settings.serving_image, requests, mounts, env)
    container["readinessProbe"] = _raylet_ready_probe()
    pod["containers"] = [container]
    autoscaling = serving.autoscaling
    room = MAX_SERVED_VERSIONS if _autoscaled(model) else versions
    return {
        "groupName": worker_group_name(gpu_product, resources.gpus),
        "replicas": autoscaling.min_replicas * versions,
        "minReplicas": autoscaling.min_replicas * versions,
        "maxReplicas": autoscaling.max_replicas * room,
        "rayStartParams": start_params,
        "template": _pod_template(model, pod),
    }


def _autoscaled(model: RecommenderModel) -> bool:
    """Ray's autoscaler (a sidecar of the head, with API access to patch the RayCluster) adds
    worker pods when Serve's replicas outgrow them. A fixed-size model (equal replica bounds)
    runs without the sidecar and its permissions: its workers are the ones KubeRay creates, and
    a canary's replicas must fit their spare logical CPUs."""
    autoscaling = model.spec.serving.autoscaling
    return autoscaling.min_replicas < autoscaling.max_replicas


def _cpu_quantity(millis: int) -> str:
    """Whole cores as Kubernetes prints them (``2``), anything else in millicores (``1500m``)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def plan_rayservice(
    model: RecommenderModel, serve_config: dict[str, Any], settings: OperatorSettings
) -> dict[str, Any]:
    """The RayService for a rendered serve config (``plan_hand_over``'s step); its worker group
    has room for every ranker application in it."""
    volumes, mounts, store_env = artifact_volume(settings, read_only=True)
    for name, path in (("tmp", TMP_MOUNT), ("home", HOME_MOUNT)):
        volume, mount = scratch_volume(name, path)
        volumes, mounts = [*volumes, volume], [*mounts, mount]
    # Wherever Serve places the router (it asks for a tenth of a CPU), it can append feedback.
    online, online_mount = online_volume(settings)
    volumes, mounts = [*volumes, online], [*mounts, online_mount]
    # ...and key the users it writes down, for which it reads the pseudonym Secret.
    key, key_mount = pseudonym_volume(settings)
    volumes, mounts = [*volumes, key], [*mounts, key_mount]
    env = [*common_env(settings), *store_env]
    versions = max(1, len(serve_config["applications"]) - 1)  # every app but the router
    workers = _worker_group(model, settings, versions, mounts, volumes, env)
    cluster: dict[str, Any] = {"rayVersion": RAY_VERSION}
    if _autoscaled(model):
        cluster["enableInTreeAutoscaling"] = True
        cluster["autoscalerOptions"] = {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 60,
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }
    cluster["headGroupSpec"] = _head(model, settings, mounts, volumes, env)
    cluster["workerGroupSpecs"] = [workers]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata(model, model.metadata.name or "", SERVING_COMPONENT),
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "rayClusterConfig": cluster,
        },
    }
