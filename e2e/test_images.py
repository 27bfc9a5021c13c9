"""The serving image, built for real, runs the serving path in a real container.

``scripts/build-images.sh`` builds the images with podman (runc) from a Debian base made with
debootstrap; a warm run only compares stamps. The container runs as a serving pod would: as the
image's non-root user, with a read-only root filesystem, every capability dropped, no privilege
escalation, ``/tmp`` and the home directory as scratch, and the artifact store mounted read-only
at the operator's path, holding a real engine and retrieval index that ``recserve build`` (what
a build Job runs) wrote for the test registry's ``movielens-ranker``.

In it, the router's half of the data path (the bundled catalog shipped in the image, and retrieval from the index in the store) and the ranker's half (the ONNX Runtime
engine from the store) answer one recommendation. The same code on the same engine and index
outside the container must give the same candidates and the same scores: what the image runs
is what the test suite checks. The image has no torch, and the container no network.

The second test runs the serving path itself in the image, as on a KubeRay head pod: Ray, the
serve config the operator renders for the cluster, and ``/v1/recommend`` over HTTP. The third
runs the operator image against the e2e API server.

All are in the ``long`` tier (make test-all), with the image build: see ``pytestmark`` below.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from e2e.cluster.controlplane import ControlPlane
from e2e.harness import PEERING, apply, build_jobs, condition_summary, get_model, registry_free_model
from e2e.images import Images
from e2e.serving_checks import RECOMMEND, apply_stable, assert_recommendations, pseudonym_key_dir
from recserve_operator.embedded.local_ray import LOCAL_RAY_ENV
from recserve_operator.embedded.processes import free_port
from recserve_operator.planners.k8s_common import IMAGE_UID
from recserve_operator.planners.rayservice import DASHBOARD_PORT, GCS_PORT, HOME_MOUNT
from recserve_operator.rollout.serve_rest import ServeRestTarget
from recserve_operator.settings import PSEUDONYM_MOUNT, OperatorSettings
from recserve_serving.offline import OFFLINE_ENV
from recserve_serving.serve.config import SERVE_PORT
from recserve_serving.waiting import wait_for

# make test-all only: a cold image build (~4 CPU-minutes) does not fit what a cold `make test`
# has to spare; scripts/test.sh --all builds the images in the background.
pytestmark = pytest.mark.long

REPO = Path(__file__).resolve().parents[1]
USER_ID = 42
CANDIDATES = 20


@pytest.fixture
def leftover_check(images: Images) -> Iterator[None]:
    yield
    assert images.leftovers("recserve-test-") == [], "a test container was left behind"


def test_the_serving_image_recommends_like_the_test_suite_read_only_and_without_torch(
    images: Images, store: dict[str, Path], leftover_check: None
) -> None:
    settings = OperatorSettings()
    engine_in_store = f"{settings.engine_root}/{store['engine'].name}"
    image = images.named("recserve-serving")
    options = [
        "--read-only", "--network=none", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--tmpfs=/tmp:rw,size=256m", f"--tmpfs={HOME_MOUNT}:rw,size=64m,mode=1777",
        f"--volume={store['engine']}:{engine_in_store}:ro",
        f"--volume={store['index']}:{settings.index_dir}:ro",
        "--entrypoint=python",
    ]  # fmt: skip
    args = [engine_in_store, settings.index_dir, str(USER_ID), str(CANDIDATES)]
    proc = images.run(image, ["-c", RECOMMEND, *args], options=options, timeout=180)
    assert proc.returncode == 0, f"in the container:\n{proc.stderr}"
    inside: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])

    assert inside["uid"] == inside["gid"] == IMAGE_UID and not inside["root_writable"]
    assert inside["torch"] is False, "the serving image must not ship torch"
    assert len(inside["candidates"]) == CANDIDATES

    host_args = [str(store["engine"]), str(store["index"]), str(USER_ID), str(CANDIDATES)]
    host = subprocess.run(
        [sys.executable, "-c", RECOMMEND, *host_args], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert host.returncode == 0, host.stderr
    outside = json.loads(host.stdout.splitlines()[-1])
    assert inside["engine"] == outside["engine"]
    assert inside["candidates"] == outside["candidates"]
    np.testing.assert_allclose(inside["scores"], outside["scores"], rtol=1e-4, atol=1e-4)
    assert len(set(np.round(inside["scores"], 4))) > 1, "a real ranker's scores differ between items"


def test_the_serving_image_runs_ray_serve_and_answers_recommend(
    images: Images, store: dict[str, Path], leftover_check: None, tmp_path: Path
) -> None:
    """The serving path itself in the image, as on a KubeRay head pod: ``ray start --head`` on the
    head pod's ports, the serve config the operator renders for the cluster (router + ranker
    applications, the first deploy's hand-over, the catalog and index where the operator points
    routers) applied through the Serve REST API, and ``/v1/recommend`` answered by the router and
    the ranker's ONNX Runtime engine. The container has a network namespace of its own
    (slirp4netns, no bridge or firewall rule on the host): only the dashboard and Serve's HTTP
    port are forwarded, from 127.0.0.1."""
    settings = OperatorSettings()
    engine_in_store = f"{settings.engine_root}/{store['engine'].name}"
    dashboard, serve_port = free_port(), free_port()
    ray_start = [
        "ray", "start", "--head", "--block", f"--port={GCS_PORT}", "--include-dashboard=true",
        "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}", "--num-cpus=3",
        "--object-store-memory=134217728", "--temp-dir=/tmp/ray", "--disable-usage-stats",
    ]  # fmt: skip
    env = [f"--env={k}={v}" for k, v in {**LOCAL_RAY_ENV, "OMP_NUM_THREADS": "2"}.items()]
    options = [
        "--detach", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--network=slirp4netns:port_handler=slirp4netns",
        f"--publish=127.0.0.1:{dashboard}:{DASHBOARD_PORT}", f"--publish=127.0.0.1:{serve_port}:{SERVE_PORT}",
        "--shm-size=256m", "--tmpfs=/tmp:rw,size=1g",
        f"--tmpfs={HOME_MOUNT}:rw,size=64m,mode=1777",
        f"--volume={store['engine']}:{engine_in_store}:ro",
        f"--volume={store['index']}:{settings.index_dir}:ro",
        f"--tmpfs={settings.online_dir}:rw,size=64m,mode=1777",
        f"--volume={pseudonym_key_dir(tmp_path)}:{PSEUDONYM_MOUNT}:ro",
        *env, "--entrypoint=bash",
    ]  # fmt: skip
    image = images.named("recserve-serving")
    with images.container_name() as name:
        images.podman("run", "--name", name, *options, image, "-c", "exec " + " ".join(ray_start))
        target = ServeRestTarget(f"http://127.0.0.1:{dashboard}")

        def exited() -> bool:
            return images.podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true"

        def serve_api_up() -> bool:
            if exited():
                return True  # reported just below, without waiting out the timeout
            target.status()
            return True

        wait_for(serve_api_up, 300, interval=1.0, message="Ray's Serve REST API in the container")
        if exited():
            logs = images.podman("logs", name, check=False)
            raise AssertionError(f"ray start exited in the container:\n{(logs.stdout + logs.stderr)[-4000:]}")
        desired, hand_over = apply_stable(target, engine_in_store)

        def running() -> bool:
            failed = target.failed_applications(desired.name)
            assert not failed, f"applications failed in the container: {failed}"
            observed = target.observe(desired.name)
            return {a["name"] for a in hand_over.rendered["applications"]} <= observed.running

        wait_for(running, 300, interval=1.0, message="the router and ranker applications RUNNING")
        response = httpx.post(
            f"http://127.0.0.1:{serve_port}/v1/recommend", json={"user_id": USER_ID, "k": 5}, timeout=60
        )
        assert_recommendations(response, 5)
        images.podman("stop", "--time", "30", name, timeout=90)


def test_the_operator_image_reconciles_a_model_with_the_charts_token(
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    images: Images,
    leftover_check: None,
    tmp_path: Path,
) -> None:
    """The operator image runs the operator as the chart's pod would (its uid, a read-only root,
    no capabilities) against the e2e API server with a token of the chart's ServiceAccount, and
    takes a model as far as its build Job. Host network: the API server listens on 127.0.0.1."""
    install = chart()
    kubeconfig = tmp_path / "operator.kubeconfig"
    shutil.copyfile(install.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)  # the image's uid reads it through the bind mount
    health = free_port()
    options = [
        "--detach", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--network=host",
        "--tmpfs=/tmp:rw,size=64m", f"--volume={kubeconfig}:/etc/recserve/kubeconfig:ro",
        "--env=KUBECONFIG=/etc/recserve/kubeconfig", *(f"--env={k}={v}" for k, v in OFFLINE_ENV.items()),
    ]  # fmt: skip
    image = images.named("recserve-operator")
    with images.container_name() as name:
        images.podman(
            "run", "--name", name, *options, image,
            "--namespace", namespace, "--peering", PEERING, "--liveness", f"http://127.0.0.1:{health}/healthz",
        )  # fmt: skip

        def healthy() -> bool:
            if images.podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
                logs = images.podman("logs", name, check=False)
                raise AssertionError(
                    f"the operator exited in its image:\n{(logs.stdout + logs.stderr)[-4000:]}"
                )
            return httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=5).status_code == 200

        wait_for(healthy, 180, interval=1.0, message="the operator's liveness endpoint in its image")
        assert images.podman("exec", name, "id", "-u").stdout.strip() == "65532"
        touch = images.podman("exec", name, "touch", "/opt/written", check=False)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr
        apply(control_plane, namespace, registry_free_model("from-the-image"))
        (job,) = wait_for(lambda: build_jobs(kube, namespace, "from-the-image"), 120, message="its build Job")
        assert job.metadata.owner_references[0].name == "from-the-image"
        wait_for(
            lambda: condition_summary(get_model(kube, namespace, "from-the-image"))["phase"] == "Building",
            60,
            message="the model Building",
        )
        logs = images.podman("logs", name).stdout + images.podman("logs", name).stderr
        assert "Traceback" not in logs
        images.podman("stop", "--time", "30", name, timeout=90)
