"""Scenario 4, serving rollout on a real Ray: the operator reconciles the RecommenderModel it
reads from the API server and rolls it out through the Serve REST API of a real local Ray
cluster (``recserve operator --serve-rest``); real traffic flows while a canary steps through
to promotion.

The model is manifests/examples/movielens-ranker.yaml: ``models:/movielens-ranker/1``, the
fine-tuned MiniLM ranker in the test registry (``.recserve-test``, ``RECSERVE_HOME``), served as
a cached INT8 ONNX Runtime engine. The canary, added by a second ``kubectl apply`` as a GitOps
commit would, is the same checkpoint as an fp32 engine, with 10 s pauses and small
``minRequests`` so it promotes within a test.

Real: the API server, the operator (the chart's ServiceAccount token; engines built or fetched
in its process), Ray (head started and stopped by pid, bound to 127.0.0.1) and Ray Serve with
the real router and rankers, HTTP traffic from ``recserve_operator.loadgen``, canary analysis
from the replicas' ``/metrics``. Simulated: nothing; no pod is involved (the KubeRay path is
scenario 2).

Zero failed client requests are asserted from before the canary is added until only the
promoted version answers: the canary's application warming up unrouted, its steps, analysis,
promotion, and the old version's application drained and removed.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from e2e.cluster.controlplane import ControlPlane, free_port
from e2e.cluster.process import pid_alive
from e2e.harness import (
    EXAMPLES,
    REPO,
    OperatorProcess,
    apply,
    audit_events,
    condition_summary,
    forbidden,
    get_model,
    model_events,
    now_rfc3339,
)
from recserve_operator.embedded.local_ray import RayClusterInfo, start_local_ray, stop_local_ray
from recserve_operator.loadgen import VERSION_HEADER, LoadResult, generate
from recserve_serving.errors import Unavailable
from recserve_serving.serve.routing import choose_version
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.slow

NAME = "movielens-ranker"
REGISTRY = REPO / ".recserve-test"  # holds models:/movielens-ranker/1; engines and index cached
CANARY = {
    "checkpoint": {"uri": "models:/movielens-ranker/1"},
    "optimization": {
        "backend": "onnxruntime",
        "precision": "fp32",
        "maxBatchSize": 64,
        "maxSequenceLength": 128,
    },
    "steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "10s"}, {"weight": 80, "pause": "10s"}],
    "stickyBy": "user_id",
    "analysis": {"maxErrorRate": 0.01, "maxScoreShift": 0.6, "minRequests": 3},
}
WEIGHTS = [step["weight"] for step in CANARY["steps"]]


def light(doc: dict[str, Any]) -> dict[str, Any]:
    """The example with 50 retrieved candidates per request instead of 200, so that a request
    costs a quarter of the ranker time on this shared 2-core machine."""
    doc = copy.deepcopy(doc)
    doc["spec"]["serving"]["retrieval"] = {"candidates": 50, "defaultK": 10, "maxK": 20}
    return doc


def start_ray(state: Path, attempts: int = 3) -> RayClusterInfo:
    """``start_local_ray``, again when the head exits during start-up: on a loaded 2-core machine
    its raylet can take longer than the 30 s Ray's client server waits for it (a fixed timeout
    in Ray), and the whole head exits. Each attempt is logged; the last failure is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return start_local_ray(state, num_cpus=4)
        except Unavailable as error:
            if attempt == attempts:
                raise
            print(f"local Ray start {attempt}/{attempts} failed: {error}")
    raise AssertionError("unreachable")


@pytest.fixture
def local_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayClusterInfo]:
    """A real single-node Ray cluster (4 CPUs) on 127.0.0.1, stopped by pid afterwards."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rse2e-"))  # short: Ray's socket paths have a limit
    monkeypatch.setenv("RECSERVE_RAY_TMP", str(ray_tmp))
    try:
        info = start_ray(tmp_path)
        try:
            yield info
        finally:
            stop_local_ray(info)
            assert not pid_alive(info.pid)
            # Ray's logs (Serve controller, replicas) stay with the test's tmp dir for diagnosis.
            logs = ray_tmp / "session_latest" / "logs"
            if logs.is_dir():
                shutil.copytree(logs, tmp_path / "ray-logs", symlinks=True, dirs_exist_ok=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


class Traffic:
    """Recommend requests in bounded rounds on a background thread, until ``finish()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.rounds: list[LoadResult] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.rounds.append(generate(self.url, concurrency=3, requests=100, seconds=5))

    def finish(self) -> list[LoadResult]:
        self.stop.set()
        self.thread.join(timeout=120)
        return self.rounds


def test_canary_steps_to_promotion_under_real_traffic(
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    local_ray: RayClusterInfo,
    tmp_path: Path,
) -> None:
    install = chart()
    since = now_rfc3339()
    port = free_port()
    stable_doc = light(yaml.safe_load((EXAMPLES / "movielens-ranker.yaml").read_text()))
    args = ("--serve-rest", local_ray.dashboard_url, "--serve-port", str(port))
    env = {"RECSERVE_HOME": str(REGISTRY)}
    traffic: Traffic | None = None
    with OperatorProcess(install, tmp_path, env=env, args=args) as operator:
        try:
            apply(control_plane, namespace, stable_doc)

            def ready() -> dict[str, Any] | None:
                model = get_model(kube, namespace, NAME)
                return model if condition_summary(model).get("Ready") == "True" else None

            model = wait_for(ready, 900, interval=1.0, message="the model Ready on Ray Serve")
            assert model["status"]["phase"] == "Ready"
            endpoint = model["status"]["endpoint"]
            assert endpoint == f"http://127.0.0.1:{port}"
            stable_label = "movielens-ranker/1"
            assert model["status"]["stable"]["engine"]["precision"] == "int8"
            first = generate(endpoint, concurrency=4, requests=8, seconds=120)
            assert first.errors == 0 and first.codes == {200: 8} and set(first.versions) == {stable_label}

            traffic = Traffic(endpoint)
            canary_doc = copy.deepcopy(stable_doc)
            canary_doc["spec"]["rollout"] = {"canary": CANARY}
            apply(control_plane, namespace, canary_doc)
            weights: list[int] = []

            def finished_canary() -> str | None:
                """Records each weight the canary is held at; its final state once it has one."""
                canary = (get_model(kube, namespace, NAME).get("status") or {}).get("canary") or {}
                state = canary.get("state")
                if state in {"Progressing", "Paused"} and (not weights or weights[-1] != canary["weight"]):
                    weights.append(canary["weight"])
                return state if state in {"Promoted", "RolledBack", "Aborted"} else None

            # Both versions answer (a user of each bucket, by the router's own routing).
            canary_user = next(u for u in range(1, 611) if choose_version(u, WEIGHTS[0]) == "canary")
            stable_user = next(u for u in range(1, 611) if choose_version(u, WEIGHTS[0]) == "stable")

            def both_versions_answer() -> bool:
                finished_canary()
                labels = set()
                for user in (canary_user, stable_user):
                    reply = httpx.post(f"{endpoint}/v1/recommend", json={"user_id": user, "k": 5}, timeout=60)
                    reply.raise_for_status()
                    labels.add(reply.headers[VERSION_HEADER])
                return len(labels) == 2

            wait_for(both_versions_answer, 600, interval=1.0, message="stable and canary both answering")

            final = wait_for(finished_canary, 900, interval=0.5, message="the canary finished")
            assert final == "Promoted", get_model(kube, namespace, NAME)["status"]["canary"]
            model = wait_for(ready, 300, interval=1.0, message="Ready again after the promotion")
            rounds = traffic.finish()
            traffic = None
        finally:
            if traffic is not None:
                traffic.finish()

        status = model["status"]
        assert status["phase"] == "Ready" and status["stable"]["engine"]["precision"] == "fp32"
        assert status["canary"]["state"] == "Promoted"
        assert weights == WEIGHTS, weights
        reasons = [e.reason for e in model_events(kube, namespace, NAME)]
        for reason in ("CanaryStarted", "CanaryStepAdvanced", "CanaryPromoted"):
            assert reason in reasons, reasons
        assert reasons.index("CanaryStarted") < reasons.index("CanaryPromoted")

        served = sum(r.requests for r in rounds)
        failed = sum(r.errors for r in rounds)
        versions = {v for r in rounds for v in r.versions}
        print(f"\nrollout traffic: {served} requests, {failed} failed, versions {sorted(versions)}")
        assert served > 100 and failed == 0, [r.failures[:3] for r in rounds]
        assert stable_label in versions and len(versions) >= 2  # both versions really answered
        # Status turns Promoted (and stays Ready) in the pass that routes every user to the
        # promoted version; the old version's application is removed a pass later.
        promoted_label = next(v for v in versions if v != stable_label)

        def only_promoted() -> bool:
            after = generate(endpoint, concurrency=4, requests=8, seconds=120)
            assert after.errors == 0, after.failures
            return set(after.versions) == {promoted_label}

        wait_for(only_promoted, 300, interval=1.0, message="only the promoted version answers")
        assert "Traceback" not in operator.log
    assert forbidden(audit_events(control_plane, install.user, since)) == []
