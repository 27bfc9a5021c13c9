"""e2e fixtures: one real control plane per pytest session, one namespace per test.

The session builds the binaries first (``e2e/cluster/build.sh``; instant when warm). A failed
build or a control plane that will not start fails every e2e test loudly; nothing is skipped.
``RECSERVE_E2E_KEEP=1`` leaves the cluster running after the session and prints its kubeconfig.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster.controlplane import KEEP_ENV, Binaries, BuildError, ControlPlane
from e2e.cluster.nodejoin import node_ready, registration
from e2e.cluster.realnode import NodeBinaries, RealNode
from e2e.harness import ArtifactStore, Install, install_chart, uninstall_chart
from e2e.images import ImageBuildError, Images, ensure_images
from recserve_operator.planners.k8s_common import IMAGE_UID
from recserve_serving.engine.cache import newest_cached
from recserve_serving.example_data import load_example
from recserve_serving.offline import OFFLINE_ENV
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.serve.catalog import index_paths
from recserve_serving.waiting import wait_for

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parent
EXAMPLE = REPO / "manifests" / "examples" / "movielens-ranker.yaml"
STABLE_NAME = "movielens-ranker"
_PLANE_KEY = pytest.StashKey[ControlPlane]()
REAL_NODE = "realnode-e2e"
# What make test builds and runs (e2e/test_real_node_smoke.py); the operator image is built for
# make test-all's tests (``images``).
SERVING_DOCKERFILE = "serving-cpu.Dockerfile"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under e2e/ is in the e2e tier, marked or not."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    plane = config.stash.get(_PLANE_KEY, None)
    if plane is not None and plane.keep:
        tr = terminalreporter
        tr.section("e2e control plane kept running (RECSERVE_E2E_KEEP=1)")
        tr.write_line(f"export KUBECONFIG={plane.kubeconfig}")
        tr.write_line(f"kubectl: {plane.binaries.kubectl}")
        tr.write_line(f"logs:    {plane.logs}")
        tr.write_line(f"stop:    .venv/bin/python -m e2e.cluster.controlplane down {plane.workdir}")


def keep_cluster() -> bool:
    return os.environ.get(KEEP_ENV, "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def e2e_binaries(tmp_path_factory: pytest.TempPathFactory) -> Binaries:
    """Every binary built from its pinned module; a build failure fails the tier."""
    log = tmp_path_factory.mktemp("e2e-build") / "build.log"
    try:
        return Binaries.ensure_built(log=log)
    except BuildError as exc:
        pytest.fail(f"E2E BUILD FAILED (see {log}):\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane(e2e_binaries: Binaries, request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    keep = keep_cluster()
    # Audit on: the scale scenario counts the operator's API requests from the audit log.
    plane = ControlPlane(e2e_binaries, keep=keep, audit=True)
    try:
        plane.start()
    except Exception as exc:
        pytest.fail(f"e2e control plane failed to start: {exc}", pytrace=False)
    request.config.stash[_PLANE_KEY] = plane
    yield plane
    if not keep:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Any:
    """A kubernetes.client.ApiClient as the cluster admin."""
    return control_plane.api_client()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test (its default ServiceAccount already created), deleted
    afterwards unless the cluster is kept for debugging."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(control_plane.api_client())
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"recserve.dev/e2e": "true"}}})

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(has_default_sa, 60, message=f"default ServiceAccount in {name}")
    yield name
    if not control_plane.keep:
        core.delete_namespace(name)


@pytest.fixture
def chart(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Install]]:
    """``chart(webhook=False)`` installs charts/recserve (e2e values) into the test's namespace,
    watching it, and returns the Install with a kubeconfig for the chart's ServiceAccount; the
    release is uninstalled afterwards (its ClusterRole and webhook configurations included)."""
    installed: list[str] = []

    def install(*, webhook: bool = False) -> Install:
        result = install_chart(control_plane, namespace, tmp_path, webhook=webhook)
        installed.append(namespace)
        return result

    yield install
    if not control_plane.keep:
        for ns in installed:
            uninstall_chart(control_plane, ns)


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A sqlite MLflow registry (in the session's tmp dir) holding the tiny real ranker as
    ``models:/movielens-ranker/1`` (alias champion): ``{"trackingUri", "uri", "digest"}``."""
    state = tmp_path_factory.mktemp("registry")
    proc = subprocess.run(
        [sys.executable, "-m", "e2e.tiny_ranker", str(state)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=E2E_DIR.parent,
        env={**os.environ, **OFFLINE_ENV},
    )
    if proc.returncode != 0:
        pytest.fail(f"registering the tiny ranker failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture
def artifact_store(kube: Any, namespace: str) -> Iterator[ArtifactStore]:
    """The artifact claim of the test's namespace, not created until ``.open()``."""
    store = ArtifactStore(kube, namespace)
    yield store
    store.close()


def _built_images(tmp_path_factory: pytest.TempPathFactory, only: tuple[str, ...] = ()) -> Images:
    """The images (those of the Dockerfiles in ``only``, or all), built if missing: a failed
    build fails the tests; nothing is skipped."""
    log = tmp_path_factory.mktemp("images") / "build.log"
    try:
        return ensure_images(log, only=only)
    except ImageBuildError as error:
        pytest.fail(f"IMAGE BUILD FAILED:\n{error}", pytrace=False)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """Every image the build script makes."""
    return _built_images(tmp_path_factory)


@pytest.fixture(scope="session")
def serving_image(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """Only the CPU serving image: what ``make test`` runs, without the operator image's cold
    build."""
    return _built_images(tmp_path_factory, (SERVING_DOCKERFILE,))


@pytest.fixture(scope="session")
def store(test_state: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The artifact store as a build Job leaves it: the example recipe's engine of the test
    registry's stable ranker, and the catalog's retrieval index. Both are in the test registry's
    cache once the integration tier ran; if not, ``recserve build`` makes them with the Job's
    flags. They are copied into a store readable by the pod's uid, as a build Job running as that
    uid leaves it (engines built before the cache published them 0755 are root's only)."""
    raw = yaml.safe_load(EXAMPLE.read_text())["spec"]["optimization"]
    index = test_state / "retrieval"
    built = newest_cached(test_state / "engines", STABLE_NAME, "1", OptimizationRecipe.model_validate(raw))
    if built is None or not all(path.is_file() for path in index_paths(load_example(), index)):
        result = tmp_path_factory.mktemp("build") / "termination-log"
        env = {**os.environ, "RECSERVE_HOME": str(test_state)}
        subprocess.run(
            [sys.executable, "-m", "recserve_operator.cli", "build", "--checkpoint", f"models:/{STABLE_NAME}/1",
             "--recipe-json", json.dumps(raw), "--index-dir", str(index), "--termination-log", str(result)],
            env=env, check=True, timeout=1800, cwd=REPO, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        built = Path(json.loads(result.read_text())["engineDir"])
    root = tmp_path_factory.mktemp("artifact-store")
    engine = shutil.copytree(built, root / "engines" / built.name)
    shutil.copytree(index, root / "retrieval", ignore=shutil.ignore_patterns("*.lock", ".*"))
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    # Routers write the feedback log and history store under online/: the pods' fsGroup makes a
    # real claim writable to them, but kubelets apply no fsGroup to the hostPath volume here.
    online = root / "online"
    online.mkdir()
    os.chown(online, IMAGE_UID, IMAGE_UID)
    return {"engine": engine, "index": root / "retrieval"}


def _joined_real_node(control_plane: ControlPlane, *, dns: bool) -> Iterator[RealNode]:
    from kubernetes import client

    containerd_dir = os.environ.get("RECSERVE_E2E_CONTAINERD_DIR")
    bins = NodeBinaries.ensure_built(Path(containerd_dir) if containerd_dir else None, dns=dns)
    joined = registration(control_plane, REAL_NODE, dns=dns)
    node = RealNode(bins, name=REAL_NODE, registration=joined).start()
    core = client.CoreV1Api(control_plane.api_client())
    try:
        wait_for(lambda: node_ready(core, REAL_NODE), 120, interval=0.5, message=f"node {REAL_NODE} Ready")
        yield node
    finally:
        workdir = node.workdir
        node.stop()
        core.delete_node(REAL_NODE)
        assert not workdir.exists()
        assert not node.net.exists()


@pytest.fixture(scope="module")
def real_node(control_plane: ControlPlane) -> Iterator[RealNode]:
    """A real kubelet and containerd joined to the control plane, one per test module (its
    start costs seconds); stopped at the end, which must leave nothing behind. No cluster DNS:
    make test's tests need none, and CoreDNS's build (about 110 CPU-seconds cold) is
    make test-all's."""
    yield from _joined_real_node(control_plane, dns=False)


@pytest.fixture(scope="module")
def real_node_with_dns(control_plane: ControlPlane) -> Iterator[RealNode]:
    """``real_node`` with CoreDNS as its cluster DNS, for pods that find each other by Service
    name (a KubeRay worker finds its head so). Never in the same module as ``real_node``: both
    are the one node ``REAL_NODE``."""
    yield from _joined_real_node(control_plane, dns=True)
