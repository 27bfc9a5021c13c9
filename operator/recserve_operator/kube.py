"""The one module that talks to the Kubernetes API (besides kopf's own machinery).

Thin on purpose: each function is one API call or one read of an object's state, with
404 turned into None and every other API failure into ``Unavailable`` (retry later).
Planners decide what objects should look like; this module only fetches and writes them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from recserve_operator.api.types import GROUP, PLURAL, VERSION
from recserve_serving.errors import InvalidRequest, NotFound, Unavailable

RAY_GROUP, RAY_VERSION, RAYSERVICES = "ray.io", "v1", "rayservices"
CONTROL_ANNOTATION = "recserve.dev/{action}"


@functools.cache
def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def _apis() -> tuple[Any, Any, Any]:
    from kubernetes import client

    api = _api_client()
    return client.BatchV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as error:
        if error.status == 404:
            return None
        raise Unavailable(f"Kubernetes API {what} failed ({error.status}): {error.reason}") from error


def current_namespace() -> str:
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts()
        return str(context["context"].get("namespace") or "default")
    except (config.ConfigException, KeyError, TypeError):
        return "default"


def get_job(namespace: str, name: str) -> dict[str, Any] | None:
    batch, _, _ = _apis()
    job = _call(f"read Job {namespace}/{name}", batch.read_namespaced_job, name, namespace)
    return None if job is None else _api_client().sanitize_for_serialization(job)


def create_job(body: dict[str, Any]) -> None:
    batch, _, _ = _apis()
    namespace = body["metadata"]["namespace"]
    _call(f"create Job {namespace}/{body['metadata']['name']}", batch.create_namespaced_job, namespace, body)


def get_cronjob(namespace: str, name: str) -> dict[str, Any] | None:
    batch, _, _ = _apis()
    found = _call(f"read CronJob {namespace}/{name}", batch.read_namespaced_cron_job, name, namespace)
    return None if found is None else _api_client().sanitize_for_serialization(found)


def create_cronjob(body: dict[str, Any]) -> None:
    batch, _, _ = _apis()
    namespace = body["metadata"]["namespace"]
    _call(
        f"create CronJob {namespace}/{body['metadata']['name']}",
        batch.create_namespaced_cron_job,
        namespace,
        body,
    )


def patch_cronjob(namespace: str, name: str, body: dict[str, Any]) -> None:
    """A JSON merge patch of the CronJob's spec and annotations: lists (containers, volumes, args)
    are replaced whole, so a mount or flag the planner dropped is dropped here too."""
    batch, _, _ = _apis()
    patch = {"metadata": {"annotations": body["metadata"]["annotations"]}, "spec": body["spec"]}
    _call(
        f"patch CronJob {namespace}/{name}",
        batch.patch_namespaced_cron_job,
        name,
        namespace,
        patch,
        _content_type="application/merge-patch+json",
    )


def delete_cronjob(namespace: str, name: str) -> None:
    """Deletes the CronJob and, in the background, the Jobs and pods it started."""
    batch, _, _ = _apis()
    _call(
        f"delete CronJob {namespace}/{name}",
        batch.delete_namespaced_cron_job,
        name,
        namespace,
        propagation_policy="Background",
    )


def job_pod_outputs(namespace: str, job_name: str, tail_lines: int = 20) -> tuple[str | None, str]:
    """(termination message of a succeeded pod, last log lines of the newest failed pod)."""
    _, core, _ = _apis()
    pods = _call("list pods", core.list_namespaced_pod, namespace, label_selector=f"job-name={job_name}")
    message, logs = None, ""
    for pod in pods.items if pods else []:
        for status in pod.status.container_statuses or []:
            terminated = status.state.terminated if status.state else None
            if terminated is None:
                continue
            if terminated.exit_code == 0 and terminated.message:
                message = terminated.message
            elif terminated.exit_code != 0:
                logs = (
                    terminated.message
                    or _call(
                        "read pod log",
                        core.read_namespaced_pod_log,
                        pod.metadata.name,
                        namespace,
                        tail_lines=tail_lines,
                    )
                    or ""
                )
    return message, logs


def get_rayservice(namespace: str, name: str) -> dict[str, Any] | None:
    _, _, custom = _apis()
    found: dict[str, Any] | None = _call(
        f"read RayService {namespace}/{name}",
        custom.get_namespaced_custom_object,
        RAY_GROUP,
        RAY_VERSION,
        namespace,
        RAYSERVICES,
        name,
    )
    return found


def create_rayservice(body: dict[str, Any]) -> None:
    _, _, custom = _apis()
    namespace = body["metadata"]["namespace"]
    _call(
        f"create RayService {namespace}/{body['metadata']['name']}",
        custom.create_namespaced_custom_object,
        RAY_GROUP,
        RAY_VERSION,
        namespace,
        RAYSERVICES,
        body,
    )


def patch_rayservice_spec(namespace: str, name: str, spec: dict[str, Any]) -> None:
    _, _, custom = _apis()
    _call(
        f"patch RayService {namespace}/{name}",
        custom.patch_namespaced_custom_object,
        RAY_GROUP,
        RAY_VERSION,
        namespace,
        RAYSERVICES,
        name,
        {"spec": spec},
    )


def get_model(namespace: str, name: str) -> dict[str, Any] | None:
    _, _, custom = _apis()
    found: dict[str, Any] | None = _call(
        f"read RecommenderModel {namespace}/{name}",
        custom.get_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
    )
    return found


def list_models_all_namespaces() -> list[dict[str, Any]]:
    _, _, custom = _apis()
    found = _call("list RecommenderModels", custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
    return list((found or {}).get("items") or [])


def annotate_canary_control(name: str, namespace: str | None, action: str) -> str:
    """Set ``recserve.dev/<action>`` to the live canary's digest; returns its checkpoint URI."""
    namespace = namespace or current_namespace()
    model = get_model(namespace, name)
    if model is None:
        raise NotFound(f"RecommenderModel {namespace}/{name} not found")
    canary = (model.get("status") or {}).get("canary") or {}
    if canary.get("state") not in {"Progressing", "Paused"}:
        raise InvalidRequest(
            f"{namespace}/{name} has no canary in progress (state: {canary.get('state', 'none')})"
        )
    _, _, custom = _apis()
    patch = {"metadata": {"annotations": {CONTROL_ANNOTATION.format(action=action): canary["digest"]}}}
    _call(
        f"annotate RecommenderModel {namespace}/{name}",
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        patch,
    )
    return str(canary.get("checkpoint"))


def termination_json(message: str | None) -> dict[str, Any] | None:
    if not message:
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def node_gpu_inventory() -> list[dict[str, Any]]:
    """Each node's labels and allocatable capacity, for placement checks at admission."""
    _, core, _ = _apis()
    nodes = _call("list nodes", core.list_node)
    return [
        {"labels": dict(n.metadata.labels or {}), "capacity": dict(n.status.allocatable or {})}
        for n in (nodes.items if nodes else [])
    ]


def _networking() -> Any:
    from kubernetes import client

    return client.NetworkingV1Api(_api_client())


def get_network_policy(namespace: str, name: str) -> dict[str, Any] | None:
    found = _call(
        f"read NetworkPolicy {namespace}/{name}",
        _networking().read_namespaced_network_policy,
        name,
        namespace,
    )
    return None if found is None else _api_client().sanitize_for_serialization(found)


def create_network_policy(body: dict[str, Any]) -> None:
    namespace = body["metadata"]["namespace"]
    _call(
        f"create NetworkPolicy {namespace}/{body['metadata']['name']}",
        _networking().create_namespaced_network_policy,
        namespace,
        body,
    )


def patch_network_policy_spec(namespace: str, name: str, spec: dict[str, Any]) -> None:
    _call(
        f"patch NetworkPolicy {namespace}/{name}",
        _networking().patch_namespaced_network_policy,
        name,
        namespace,
        {"spec": spec},
    )
