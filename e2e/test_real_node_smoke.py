"""``make test``'s smoke of the built serving image on the real node: one pod through the API server.

The full scenario (the serving image as a Ray head answering ``/v1/recommend``:
``test_real_node_serving.py``) and the podman runs of ``test_images.py`` are in ``make test-all``.
What ``make test`` keeps is the chain every one of them stands on, cheaply: the serving image
built for real by ``scripts/build-images.sh`` (only that image, cached by content), its OCI
archive imported into the real node's containerd, and one pod created through the API server,
scheduled onto the real node by its label and toleration, run by the kubelet with runc as a
serving pod runs (uid 1000, read-only root filesystem, every capability dropped, no privilege
escalation), doing real work with the image: the serving path without Ray (retrieval from the
index and the ranker's ONNX Runtime engine, both from the ``store`` fixture, mounted read-only by
hostPath at the operator's paths) for one user. Its answer is read back through the API (the
pod's log, which the API server fetches from the kubelet, as ``kubectl logs`` does), and deleting
the pod must leave no container in containerd.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.realnode import RealNode
from e2e.images import Images
from e2e.realpods import store_pod, wait_containers_gone
from e2e.serving_checks import RECOMMEND
from recserve_operator.planners.k8s_common import IMAGE_UID
from recserve_operator.settings import OperatorSettings
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.waiting import wait_for

POD = "serving-smoke"
USER_ID = 42
CANDIDATES = 20


def recommend_pod(image: str, engine: Path, engine_in_store: str, index: Path) -> dict[str, Any]:
    """A pod for the real node that runs the serving path once, secured as the operator's serving
    pods are; the store is read-only hostPath volumes at the operator's paths (standing in for
    the artifact claim), scratch space is emptyDirs. It stays up once it has answered: a pod
    deleted while running has its containers removed by the kubelet at once, where a completed
    one's wait for the kubelet's garbage collection (up to a minute)."""
    settings = OperatorSettings()
    args = [engine_in_store, settings.index_dir, str(USER_ID), str(CANDIDATES)]
    container = {
        "name": "recommend",
        "image": image,
        "command": ["bash", "-c", 'python -c "$0" "$@" && exec sleep infinity', RECOMMEND, *args],
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
    }
    pod = store_pod(POD, container, engine, index)
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    return pod


def test_the_built_serving_image_runs_a_recommendation_in_a_pod_on_the_real_node(
    control_plane: ControlPlane,
    real_node: RealNode,
    namespace: str,
    serving_image: Images,
    store: dict[str, Path],
    record_property: Any,
) -> None:
    image = serving_image.named("recserve-serving")
    timings = {"image_import_s": real_node.import_archive(serving_image.archives[image], image)}
    engine_in_store = f"{OperatorSettings().engine_root}/{store['engine'].name}"
    core = client.CoreV1Api(control_plane.api_client())
    created = time.monotonic()
    core.create_namespaced_pod(
        namespace, recommend_pod(image, store["engine"], engine_in_store, store["index"])
    )

    def logs() -> str:
        """The container's output, read through the API server (which asks the kubelet). Raw:
        the client would parse a log that is one JSON document and return the dict's repr."""
        response = core.read_namespaced_pod_log(POD, namespace, _preload_content=False)
        return str(response.data.decode())

    def answered() -> Any:
        pod = core.read_namespaced_pod(POD, namespace)
        if pod.status.phase in ("Failed", "Succeeded"):
            raise AssertionError(f"the pod exited ({pod.status.phase}):\n{logs()[-4000:]}")
        lines = logs().splitlines() if pod.status.phase == "Running" else []
        return (pod, json.loads(lines[-1])) if lines and lines[-1].startswith("{") else None

    pod, inside = wait_for(answered, 180, interval=1.0, message=f"pod {POD} answering on the real node")
    timings["create_to_answer_s"] = time.monotonic() - created
    assert pod.spec.node_name == real_node.name

    assert inside["uid"] == inside["gid"] == IMAGE_UID and not inside["root_writable"]
    assert inside["torch"] is False, "the serving image must not ship torch"
    assert inside["engine"].endswith(":" + EngineManifest.read(store["engine"]).key[:12])
    assert len(inside["candidates"]) == len(set(inside["candidates"])) == CANDIDATES
    scores = inside["scores"]
    assert len(scores) == CANDIDATES and all(math.isfinite(s) for s in scores)
    assert len({round(s, 4) for s in scores}) > 1, "a real ranker's scores differ between items"

    deleted = time.monotonic()
    core.delete_namespaced_pod(POD, namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, 60, interval=0.5, message="pod deleted")
    timings["delete_to_pod_gone_s"] = time.monotonic() - deleted
    wait_containers_gone(real_node, 60, "the pod's container (and its sandbox)")
    timings["delete_to_containers_gone_s"] = time.monotonic() - deleted
    for key, value in timings.items():
        record_property(key, round(value, 2))
    print("real-node smoke timings:", {k: round(v, 2) for k, v in timings.items()})
