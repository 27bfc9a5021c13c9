"""The whole cluster path on a real node: ``kubectl apply`` a RecommenderModel, and the operator's
RayService becomes a Ray cluster whose head and worker pods run the serving image on the real
kubelet, Serve deploys the router and ranker, the model turns ``Ready``, a request through the
model's Kubernetes Service returns recommendations from the real engine, a canary step changes
the live router's weights without one failed request, and deleting the model removes the pods.

Real: the API server, scheduler, controller-manager (Jobs, EndpointSlices, garbage collector), the
operator (the chart's ServiceAccount), KubeRay (RayService → RayCluster → pods, Serve deployed
through the dashboard, reached over the API server's service proxy), the kubelet, containerd and
runc running the serving image, CoreDNS (workers find the head by its Service name), Ray Serve,
``kubectl port-forward`` to the serve Service. Simulated: the build Jobs' pods run on kwok nodes
(the builder image, with torch, is not built here); the test runs each Job's own ``recserve
build`` command on this machine, where the engines are already cached, and hands the result to
the pod as its termination message, with the engine's path as the pod would have written it.

The node has two CPUs, so the model asks for little: the head 500m (``RECSERVE_RAY_HEAD_CPU``),
each worker a quarter CPU plus a quarter of overhead, and a fixed size (one replica, so no Ray
autoscaler sidecar). The node's kubelet does not enforce CPU limits by CFS quota, so these
requests only decide placement.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane, free_port
from e2e.cluster.fleet import KWOK_ANNOTATION
from e2e.cluster.nodejoin import NODE_LABEL, NODE_TAINT
from e2e.cluster.process import Component
from e2e.cluster.realnode import RealNode
from e2e.harness import (
    ArtifactStore,
    OperatorProcess,
    apply,
    build_jobs,
    cluster_diagnosis,
    condition_summary,
    get_model,
    hand_result_to_pod,
    job_pods,
    run_build_job_locally,
)
from e2e.images import Images
from e2e.realpods import wait_containers_gone
from e2e.serving_checks import EXAMPLE, FP32_CANARY_VERSION
from recserve_operator.loadgen import BackgroundTraffic
from recserve_operator.settings import OperatorSettings
from recserve_serving.serve.config import SERVE_PORT
from recserve_serving.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.long

NAME = "real-ranker"
RAY = ("ray.io", "v1")
CANARY = {
    **FP32_CANARY_VERSION,
    "steps": [{"weight": 50, "pause": "1h"}],
    "stickyBy": "user_id",
    "analysis": {"maxErrorRate": 0.01, "minRequests": 1_000_000},
}


def real_node_model() -> dict[str, Any]:
    """The example, small enough for a two-CPU node, placed on the real node."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] = {"name": NAME}
    serving = doc["spec"]["serving"]
    serving["autoscaling"] = {**serving.get("autoscaling", {}), "minReplicas": 1, "maxReplicas": 1}
    serving.get("autoscaling", {}).pop("initialReplicas", None)
    serving["resources"] = {"cpus": 0.25, "memory": "512Mi"}
    serving["retrieval"] = {"candidates": 50, "defaultK": 10, "maxK": 20}
    doc["spec"]["placement"] = {
        "nodeSelector": dict([NODE_LABEL]),
        "tolerations": [{"key": NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
    }
    return doc


class KwokCordon:
    """Keeps build pods Pending while the test runs their command: kwok would complete a
    scheduled pod at once, before its result could be handed to it."""

    def __init__(self, kube: Any) -> None:
        self.core = client.CoreV1Api(kube)

    def set(self, cordoned: bool) -> None:
        for node in self.core.list_node().items:
            if KWOK_ANNOTATION in (node.metadata.annotations or {}):
                self.core.patch_node(node.metadata.name, {"spec": {"unschedulable": cordoned}})


@pytest.fixture
def cordon(kube: Any) -> Iterator[KwokCordon]:
    nodes = KwokCordon(kube)
    nodes.set(True)
    try:
        yield nodes
    finally:
        nodes.set(False)


def finish_build(
    kube: Any, job: Any, tmp_path: Path, test_state: Path, store_root: Path, cordon: KwokCordon
) -> dict[str, Any]:
    """Run the build Job's own command here (the engine is cached), put the engine in the store
    the pods mount, and hand the pod the message it would have written in the cluster."""
    (pod,) = wait_for(
        lambda: job_pods(kube, job.metadata.namespace, job.metadata.name), 60, message="build pod"
    )
    result: dict[str, Any] = json.loads(
        run_build_job_locally(kube, job, tmp_path, test_state / "engines", test_state / "retrieval")
    )
    built = Path(result["engineDir"])
    in_store = store_root / "engines" / built.name
    if not in_store.exists():
        shutil.copytree(built, in_store)
        subprocess.run(["chmod", "-R", "a+rX", str(in_store)], check=True)
    result["engineDir"] = f"{OperatorSettings().engine_root}/{built.name}"
    hand_result_to_pod(kube, pod, json.dumps(result))
    cordon.set(False)

    def complete() -> bool:
        status = client.BatchV1Api(kube).read_namespaced_job(job.metadata.name, job.metadata.namespace).status
        return any(c.type == "Complete" and c.status == "True" for c in status.conditions or [])

    wait_for(complete, 120, message=f"build Job {job.metadata.name} Complete")
    cordon.set(True)
    return result


def live_router_weight(plane: ControlPlane, namespace: str) -> int:
    """The canary weight the running router holds, read from Serve's REST API on the head (over
    the API server's service proxy, as KubeRay reaches it): what the RayService's spec says is
    only what KubeRay was asked to apply."""
    cluster = plane.kubectl(
        "get", "rayclusters", "-n", namespace, "-o", "jsonpath={.items[0].status.head.serviceName}"
    )
    path = f"/api/v1/namespaces/{namespace}/services/{cluster.stdout}:dashboard/proxy/api/serve/applications/"
    apps = json.loads(plane.kubectl("get", "--raw", path).stdout)["applications"]
    router = apps[NAME]["deployments"]["Router"]["deployment_config"]["user_config"]
    return int(router["canaryWeight"])


class PortForward:
    """``kubectl port-forward svc/NAME`` on 127.0.0.1, by pid: how a user reaches a Service."""

    def __init__(self, plane: ControlPlane, namespace: str, service: str, workdir: Path) -> None:
        self.port = free_port()
        argv = [
            str(plane.binaries.kubectl), "--kubeconfig", str(plane.kubeconfig), "-n", namespace,
            "port-forward", "--address", "127.0.0.1", f"svc/{service}", f"{self.port}:{SERVE_PORT}",
        ]  # fmt: skip
        self.component = Component("port-forward", argv, workdir / "port-forward.log", cwd=workdir)

    def __enter__(self) -> str:
        self.component.start()
        url = f"http://127.0.0.1:{self.port}"

        def answers() -> bool:
            self.component.check_alive()
            return httpx.get(f"{url}/-/healthz", timeout=5).status_code == 200

        wait_for(answers, 60, interval=0.5, message=f"port-forward to {url}")
        return url

    def __exit__(self, *exc: object) -> None:
        self.component.stop()


def test_a_model_on_the_real_node_serves_through_its_service_steps_a_canary_and_deletes_clean(
    control_plane: ControlPlane,
    kube: Any,
    real_node_with_dns: RealNode,
    namespace: str,
    chart: Any,
    images: Images,
    store: dict[str, Path],
    test_state: Path,
    cordon: KwokCordon,
    tmp_path: Path,
    record_property: Any,
) -> None:
    real_node = real_node_with_dns
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    image = images.named("recserve-serving")
    timings = {"image_import_s": real_node.import_archive(images.archives[image], image)}
    store_root = store["engine"].parents[1]
    artifacts = ArtifactStore(kube, namespace)
    install = chart()
    env = {
        "RECSERVE_MLFLOW_TRACKING_URI": f"sqlite:///{test_state / 'mlflow.db'}",
        "RECSERVE_SERVING_IMAGE": image,
        "RECSERVE_RAY_HEAD_CPU": "500m",
        "RECSERVE_RAY_HEAD_MEMORY": "2Gi",
        "RECSERVE_RAY_WORKER_OVERHEAD_CPU": "0.25",
    }
    stable_doc = real_node_model()

    def status() -> dict[str, str]:
        return condition_summary(get_model(kube, namespace, NAME))

    def ray_pods() -> list[Any]:
        return list(core.list_namespaced_pod(namespace, label_selector="ray.io/is-ray-node=yes").items)

    try:
        with OperatorProcess(install, tmp_path, env=env) as operator:
            started = time.monotonic()
            apply(control_plane, namespace, stable_doc)
            (job,) = wait_for(lambda: build_jobs(kube, namespace, NAME), 120, message="the stable build Job")
            artifacts.open(host_path=store_root)
            finish_build(kube, job, tmp_path, test_state, store_root, cordon)
            timings["build_handed_s"] = time.monotonic() - started

            def ready() -> bool:
                for pod in ray_pods():
                    for container in pod.status.container_statuses or []:
                        assert container.restart_count < 3, (pod.metadata.name, container)
                return status().get("Ready") == "True"

            try:
                wait_for(
                    ready, 900, interval=2.0, message=f"model {NAME} Ready (a RayService on the real node)"
                )
            except WaitTimeout:
                print(cluster_diagnosis(control_plane, namespace, NAME))
                raise
            timings["apply_to_ready_s"] = time.monotonic() - started
            pods = ray_pods()
            assert {p.spec.node_name for p in pods} == {real_node.name}, [
                (p.metadata.name, p.spec.node_name) for p in pods
            ]
            kinds = sorted(p.metadata.labels["ray.io/node-type"] for p in pods)
            assert kinds == ["head", "worker"], kinds
            assert status()["phase"] == "Ready"

            with PortForward(control_plane, namespace, f"{NAME}-serve-svc", tmp_path) as url:
                sent = time.monotonic()
                answer = httpx.post(f"{url}/v1/recommend", json={"user_id": 42, "k": 5}, timeout=60)
                timings["first_recommend_s"] = time.monotonic() - sent
                assert answer.status_code == 200, answer.text
                items = answer.json()["items"]
                assert len(items) == 5 and all(item["title"] for item in items)

                traffic = BackgroundTraffic(url, concurrency=2, round_requests=40, round_seconds=5)
                canary_doc = copy.deepcopy(stable_doc)
                canary_doc["spec"]["rollout"] = {"canary": CANARY}
                apply(control_plane, namespace, canary_doc)
                (canary_job,) = wait_for(
                    lambda: [
                        j for j in build_jobs(kube, namespace, NAME) if j.metadata.name != job.metadata.name
                    ],
                    120,
                    message="the canary's build Job",
                )
                finish_build(kube, canary_job, tmp_path, test_state, store_root, cordon)

                def stepped() -> bool:
                    model = get_model(kube, namespace, NAME)
                    return (model.get("status", {}).get("canary") or {}).get("weight") == 50

                wait_for(stepped, 900, interval=2.0, message="the canary's first step (weight 50)")
                timings["canary_step_s"] = time.monotonic() - started

                def running_apps() -> set[str]:
                    service = custom.get_namespaced_custom_object(*RAY, namespace, "rayservices", NAME)
                    apps = (service.get("status", {}).get("activeServiceStatus") or {}).get(
                        "applicationStatuses"
                    )
                    return {name for name, app in (apps or {}).items() if app.get("status") == "RUNNING"}

                wait_for(lambda: len(running_apps()) == 3, 300, message="router, stable and canary RUNNING")

                # KubeRay applies the patched serve config to the running cluster on its own pass.
                wait_for(
                    lambda: live_router_weight(control_plane, namespace) == 50,
                    300,
                    interval=1.0,
                    message="the live router at canary weight 50",
                )
                timings["canary_weight_live_s"] = time.monotonic() - started

                served_by = get_model(kube, namespace, NAME)["status"]
                labels = {served_by["stable"]["label"], served_by["canary"]["label"]}

                def both_versions_answer() -> bool:
                    return labels <= {label for r in list(traffic.rounds)[-4:] for label in r.versions}

                wait_for(both_versions_answer, 300, interval=2.0, message="traffic on both versions")
                rounds = traffic.finish()
            served = sum(r.requests for r in rounds)
            failed = sum(r.errors for r in rounds)
            print(f"\ncanary traffic on the real node: {served} requests, {failed} failed")
            assert served > 20 and failed == 0, [r.failures[:3] for r in rounds]
            assert {p.spec.node_name for p in ray_pods()} == {real_node.name}

            deleted = time.monotonic()
            control_plane.kubectl(
                "delete", "recommendermodel", NAME, "-n", namespace, "--wait=true", "--timeout=120s"
            )
            wait_for(lambda: not ray_pods(), 300, interval=1.0, message="the Ray pods deleted")
            wait_containers_gone(real_node, 180, "the pods' containers")
            timings["delete_to_gone_s"] = time.monotonic() - deleted
            assert "Traceback" not in operator.log
    finally:
        artifacts.close()
        for key, value in timings.items():
            record_property(key, round(value, 2))
        print("real-node RayService timings:", {k: round(v, 1) for k, v in timings.items()})
