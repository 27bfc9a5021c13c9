"""The serving image as a pod on the real node, created through the API server, answering
``/v1/recommend`` (opt-in: RECSERVE_E2E_REAL_NODE=1, and in the ``long`` tier with the images).

``test_images.py`` runs the serving image under podman; here the same OCI archive is imported
into the real node's containerd and the kubelet runs it with runc, as a KubeRay head pod would
run: ``ray start --head`` as the image's uid with a read-only root filesystem, every capability
dropped, emptyDirs for ``/tmp``, the home directory and ``/dev/shm``, and the engine and
retrieval index that ``recserve build`` wrote mounted read-only at the operator's paths
(hostPath volumes standing in for the artifact claim). The test deploys the serve config the
operator renders for the cluster through the Serve REST API on the pod's IP, the pod turns Ready
by an httpGet probe on Serve's HTTP port, and the test asks it for a recommendation over the
node's link. Deleting the pod must leave no container behind in containerd.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.realnode import RealNode
from e2e.images import Images
from e2e.realpods import store_pod, wait_containers_gone
from e2e.serving_checks import apply_stable, assert_recommendations, pseudonym_key_dir
from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_operator.planners.k8s_common import IMAGE_UID
from recserve_operator.planners.rayservice import DASHBOARD_PORT, GCS_PORT
from recserve_operator.rollout.serve_rest import ServeRestTarget
from recserve_operator.settings import PSEUDONYM_MOUNT, OperatorSettings
from recserve_serving.serve.config import SERVE_PORT
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.long

POD = "serving"
USER_ID = 42


def serving_pod(image: str, engine: Path, index: Path, key_dir: Path) -> dict[str, Any]:
    """A Ray head pod for the real node, secured as the operator's pod templates are; Ray binds
    the pod's IP (from the downward API) so that the dashboard and Serve are reachable on it."""
    ray_start = [
        "ray", "start", "--head", "--block", f"--port={GCS_PORT}", "--node-ip-address=$POD_IP",
        "--include-dashboard=true", "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
        "--num-cpus=3", "--object-store-memory=134217728", "--temp-dir=/tmp/ray", "--disable-usage-stats",
    ]  # fmt: skip
    env = [{"name": k, "value": v} for k, v in {**LOCAL_RAY_ENV, "OMP_NUM_THREADS": "2"}.items()]
    env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    container = {
        "name": "ray-head",
        "image": image,
        "command": ["bash", "-c", "exec " + " ".join(ray_start)],
        "env": env,
        "ports": [{"containerPort": SERVE_PORT}, {"containerPort": DASHBOARD_PORT}],
        "readinessProbe": {"httpGet": {"path": "/-/healthz", "port": SERVE_PORT}, "periodSeconds": 2},
    }
    shm = (
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        {"name": "shm", "mountPath": "/dev/shm"},
    )
    online = (
        {"name": "online", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "online", "mountPath": OperatorSettings().online_dir},
    )
    key = (  # the key Secret's stand-in, as engine and index stand in for the artifact claim
        {"name": "pseudonym", "hostPath": {"path": str(key_dir), "type": "Directory"}},
        {"name": "pseudonym", "mountPath": PSEUDONYM_MOUNT, "readOnly": True},
    )
    pod = store_pod(POD, container, engine, index, tmp_size="1Gi", extra_volumes=(shm, online, key))
    pod["spec"]["terminationGracePeriodSeconds"] = 10
    return pod


def test_the_serving_image_runs_as_a_pod_on_the_real_node_and_recommends(
    control_plane: ControlPlane,
    real_node: RealNode,
    namespace: str,
    images: Images,
    store: dict[str, Path],
    record_property: Any,
    tmp_path: Path,
) -> None:
    settings = OperatorSettings()
    image = images.named("recserve-serving")
    timings: dict[str, float] = {"image_import_s": real_node.import_archive(images.archives[image], image)}
    engine_in_store = f"{settings.engine_root}/{store['engine'].name}"
    core = client.CoreV1Api(control_plane.api_client())
    created = time.monotonic()
    key_dir = pseudonym_key_dir(tmp_path)
    core.create_namespaced_pod(namespace, serving_pod(image, store["engine"], store["index"], key_dir))

    def status() -> Any:
        found = core.read_namespaced_pod(POD, namespace).status
        for container in found.container_statuses or []:
            if container.restart_count or container.state.terminated:
                logs = control_plane.kubectl("logs", "-n", namespace, POD, check=False)
                raise AssertionError(f"ray start exited in the pod:\n{(logs.stdout + logs.stderr)[-4000:]}")
        return found

    def running() -> Any:
        found = status()
        return found if found.phase == "Running" and found.pod_ip else None

    pod_ip = wait_for(running, 300, interval=0.5, message=f"pod {POD} Running on the real node").pod_ip
    timings["create_to_running_s"] = time.monotonic() - created
    target = ServeRestTarget(f"http://{pod_ip}:{DASHBOARD_PORT}")

    def serve_api_up() -> bool:
        status()
        target.status()
        return True

    wait_for(serve_api_up, 300, interval=1.0, message="Ray's Serve REST API on the pod's IP")
    timings["create_to_serve_api_s"] = time.monotonic() - created
    desired, _ = apply_stable(target, engine_in_store)

    def ready() -> Any:
        failed = target.failed_applications(desired.name)
        assert not failed, f"applications failed in the pod: {failed}"
        found = status()
        return any(c.type == "Ready" and c.status == "True" for c in found.conditions or [])

    wait_for(ready, 300, interval=1.0, message=f"pod {POD} Ready by its probe on Serve's port")
    timings["create_to_ready_s"] = time.monotonic() - created
    url = f"http://{pod_ip}:{SERVE_PORT}/v1/recommend"
    for attempt in ("first_request_s", "second_request_s"):
        sent = time.monotonic()
        response = httpx.post(url, json={"user_id": USER_ID, "k": 5}, timeout=60)
        timings[attempt] = time.monotonic() - sent
        assert_recommendations(response, 5)

    uid = control_plane.kubectl("exec", "-n", namespace, POD, "--", "id", "-u").stdout.strip()
    assert uid == str(IMAGE_UID)
    touch = control_plane.kubectl("exec", "-n", namespace, POD, "--", "touch", "/opt/written", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stdout + touch.stderr

    deleted = time.monotonic()
    core.delete_namespaced_pod(POD, namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, 120, interval=0.5, message="pod deleted")
    wait_containers_gone(real_node, 120, "the pod's containers (and its sandbox)")
    timings["delete_to_gone_s"] = time.monotonic() - deleted
    for key, value in timings.items():
        record_property(key, round(value, 2))
    print("real-node serving timings:", {k: round(v, 2) for k, v in timings.items()})
