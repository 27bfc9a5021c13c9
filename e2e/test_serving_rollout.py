"""Scenario 4, serving rollout on a real Ray: the operator reconciles the RecommenderModel it
reads from the API server and rolls it out through the Serve REST API of a real local Ray
cluster (``recserve operator --serve-rest``); real traffic flows while a canary steps through
to promotion.

The model is manifests/examples/movielens-ranker.yaml: ``models:/movielens-ranker/1``, the
two-layer MiniLM ranker fine-tuned on MovieLens in the test registry (the root conftest's
``test_state``: ``.recserve-test``, ``RECSERVE_HOME``), served as
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
    OperatorProcess,
    apply,
    audit_events,
    condition_summary,
    forbidden,
    get_model,
    model_events,
    now_rfc3339,
)
from e2e.serving_checks import FP32_CANARY_VERSION
from recserve_operator.embedded.local_ray import RayClusterInfo, start_local_ray, stop_local_ray
from recserve_operator.loadgen import BackgroundTraffic, generate
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.slow

NAME = "movielens-ranker"
CANARY = {
    **FP32_CANARY_VERSION,
    "steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "10s"}, {"weight": 80, "pause": "10s"}],
    "stickyBy": "user_id",
    "analysis": {"maxErrorRate": 0.01, "maxScoreShift": 0.25, "minRequests": 3},
}
WEIGHTS = [step["weight"] for step in CANARY["steps"]]
# Logical CPUs of the test's Ray: a stable hand-over runs the old and the new stable side by side
# beside the canary (router 0.5, up to two one-CPU replicas for each of the three versions). With 4,
# an upscaled old stable and a canary leave no room for the new stable, which then never starts:
# the likely cause of the wait for the automatic rollback that ran out on a fresh machine (never
# seen with 8).
RAY_CPUS = 8


def light(doc: dict[str, Any]) -> dict[str, Any]:
    """The example with 50 retrieved candidates per request instead of 200, so that a request
    costs a quarter of the ranker time on this shared 2-core machine."""
    doc = copy.deepcopy(doc)
    doc["spec"]["serving"]["retrieval"] = {"candidates": 50, "defaultK": 10, "maxK": 20}
    return doc


@pytest.fixture
def local_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayClusterInfo]:
    """A real single-node Ray cluster (RAY_CPUS logical CPUs) on 127.0.0.1, stopped by pid afterwards."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rse2e-"))  # short: Ray's socket paths have a limit
    monkeypatch.setenv("RECSERVE_RAY_TMP", str(ray_tmp))
    try:
        info = start_local_ray(tmp_path, num_cpus=RAY_CPUS)  # retries a head that exits while starting
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


def feedback_reaches_redis(endpoint: str, redis_server: str, tmp_path: Path, state: Path) -> None:
    """Feedback on the served model lands in Redis under the user's pseudonym (read back through
    a store of its own, as another replica would, with the operator's embedded key in ``state``)
    and the user's next recommendation leaves the clicked item out."""
    from recserve_serving.dataspec import HistoryStoreSpec
    from recserve_serving.online.history import HistoryStore
    from recserve_serving.privacy import embedded_key_file, pseudonymizer_from

    before = httpx.post(f"{endpoint}/v1/recommend", json={"user_id": 42, "k": 10}, timeout=60).json()
    clicked = before["items"][0]["item_id"]
    answer = httpx.post(
        f"{endpoint}/v1/feedback",
        json={"events": [{"user_id": 42, "item_id": clicked, "event": "click"}]},
        timeout=60,
    )
    assert answer.json() == {"accepted": 1, "history_updated": True}, answer.text
    reader = HistoryStore(HistoryStoreSpec(kind="redis", connection_string=redis_server), tmp_path / "reader")
    try:
        assert reader.get("42") is None, "the store holds no raw user id"
        history = reader.get(pseudonymizer_from(embedded_key_file(state)).user(42))
        assert history is not None and history.liked[-1] == str(clicked), history
    finally:
        reader.close()
    after = httpx.post(f"{endpoint}/v1/recommend", json={"user_id": 42, "k": 10}, timeout=60).json()
    assert clicked not in [item["item_id"] for item in after["items"]]


def serve_apps(ray: RayClusterInfo) -> dict[str, Any]:
    reply = httpx.get(f"{ray.dashboard_url}/api/serve/applications/", timeout=10)
    reply.raise_for_status()
    return dict(reply.json().get("applications") or {})


def test_canary_promotes_through_an_operator_restart_then_a_broken_canary_rolls_back_and_delete_cleans_up(
    control_plane: ControlPlane,
    kube: Any,
    namespace: str,
    chart: Any,
    local_ray: RayClusterInfo,
    test_state: Path,
    bad_model: str,
    redis_server: str,
    tmp_path: Path,
) -> None:
    """Scenarios 4 (rollout on real Ray, zero failed requests), 5 (the operator SIGKILLed
    mid-canary resumes from status) and 6 (deletion removes what the model owned). Users'
    histories live in a real Redis (Feast's Redis online store), which feedback updates."""
    install = chart()
    since = now_rfc3339()
    port = free_port()
    stable_doc = light(yaml.safe_load((EXAMPLES / "movielens-ranker.yaml").read_text()))
    store = {"kind": "redis", "connectionString": f"{redis_server},retry=null,socket_timeout=2"}
    stable_doc["spec"]["data"]["history"]["store"] = store
    args = ("--serve-rest", local_ray.dashboard_url, "--serve-port", str(port))
    # The operator resyncs every 2 s instead of 10 s (recserve_operator.cluster.handlers.TICK_ENV):
    # every transition of this rollout (readiness, each canary step's end, each hand-over pass,
    # the removals) waits for its next tick, about twenty of them in all. A step is still judged
    # only after its whole pause, so the analysis windows keep at least their 10 s of traffic.
    env = {"RECSERVE_HOME": str(test_state), "RECSERVE_OPERATOR_TICK_SECONDS": "2"}
    traffic: BackgroundTraffic | None = None
    operators = [OperatorProcess(install, tmp_path, env=env, args=args).start()]
    weights: list[int] = []

    def ready() -> dict[str, Any] | None:
        model = get_model(kube, namespace, NAME)
        return model if condition_summary(model).get("Ready") == "True" else None

    def canary_state() -> str | None:
        """Records each weight the canary is held at; returns its state."""
        canary = (get_model(kube, namespace, NAME).get("status") or {}).get("canary") or {}
        state = canary.get("state")
        if state in {"Progressing", "Paused"} and (not weights or weights[-1] != canary["weight"]):
            weights.append(canary["weight"])
        return state

    try:
        apply(control_plane, namespace, stable_doc)
        model = wait_for(ready, 900, interval=1.0, message="the model Ready on Ray Serve")
        assert model["status"]["phase"] == "Ready"
        endpoint = model["status"]["endpoint"]
        assert endpoint == f"http://127.0.0.1:{port}"
        stable_label = "movielens-ranker/1"
        assert model["status"]["stable"]["engine"]["precision"] == "int8"
        first = generate(endpoint, concurrency=4, requests=8, seconds=120)
        assert first.errors == 0 and first.codes == {200: 8} and set(first.versions) == {stable_label}
        feedback_reaches_redis(endpoint, redis_server, tmp_path, test_state)

        # From here on every request counts: the canary's app warms up unrouted, steps, the
        # operator dies and comes back, promotion, the old app drains, a bad canary, rollback.
        # Two clients keep requests overlapping through every hand-over without saturating the
        # two cores the replicas start on (three made each replica start take up to a minute).
        traffic = BackgroundTraffic(endpoint, concurrency=2, round_requests=100, round_seconds=5)
        canary_doc = copy.deepcopy(stable_doc)
        canary_doc["spec"]["rollout"] = {"canary": CANARY}
        apply(control_plane, namespace, canary_doc)

        # 5. At the second step, SIGKILL the operator; a new one resumes from status.
        wait_for(lambda: canary_state() and len(weights) >= 2, 900, interval=0.5, message="the 2nd step")
        operators[-1].kill()
        held = get_model(kube, namespace, NAME)["status"]["canary"]
        operators.append(OperatorProcess(install, tmp_path, env=env, args=args, name="recserve-operator-2"))
        operators[-1].start()

        final = wait_for(
            lambda: (canary_state() in {"Promoted", "RolledBack", "Aborted"}) and canary_state(),
            900,
            interval=0.5,
            message="the canary finished",
        )
        assert final == "Promoted", get_model(kube, namespace, NAME)["status"]["canary"]
        assert weights == WEIGHTS, (weights, "a restart must not reset or repeat steps", held)
        model = wait_for(ready, 300, interval=1.0, message="Ready again after the promotion")
        status = model["status"]
        assert status["stable"]["engine"]["precision"] == "fp32"
        promoted_label = f"{stable_label}+fp32-{status['stable']['engine']['key'][:7]}"

        def only_promoted() -> bool:
            after = generate(endpoint, concurrency=2, requests=6, seconds=120)
            return set(after.versions) == {promoted_label}

        wait_for(only_promoted, 300, interval=1.0, message="only the promoted version answers")
        wait_for(
            lambda: len([a for a in serve_apps(local_ray) if a.startswith(NAME)]) == 2,
            120,
            message="the old version's application removed (router + one ranker left)",
        )

        # 4b. A broken canary: the 1-step ranker, whose scores are noise; analysis rolls it back.
        #     The stable spec is the original int8 one, so stable also hands back from the
        #     promoted fp32 engine to int8 while the new canary warms up: more hand-over, under traffic.
        broken = copy.deepcopy(stable_doc)
        canary_without_recipe = {k: v for k, v in CANARY.items() if k != "optimization"}
        broken["spec"]["rollout"] = {"canary": {**canary_without_recipe, "checkpoint": {"uri": bad_model}}}
        apply(control_plane, namespace, broken)
        wait_for(lambda: canary_state() == "RolledBack", 900, interval=0.5, message="automatic rollback")
        rollback = get_model(kube, namespace, NAME)["status"]["canary"]
        assert "score shift" in rollback["analysis"]["message"], rollback
        rounds = traffic.finish()
        traffic = None

        served = sum(r.requests for r in rounds)
        failed = sum(r.errors for r in rounds)
        versions = {v for r in rounds for v in r.versions}
        print(f"\nrollout traffic: {served} requests, {failed} failed, versions {sorted(versions)}")
        assert served > 100 and failed == 0, [r.failures[:3] for r in rounds]
        assert {stable_label, promoted_label} <= versions
        reasons = [e.reason for e in model_events(kube, namespace, NAME)]
        for reason in ("CanaryStarted", "CanaryStepAdvanced", "CanaryPromoted", "CanaryRolledBack"):
            assert reason in reasons, reasons

        # 6. Deletion: the finalizer removes the model's Serve applications, then the object goes.
        control_plane.kubectl(
            "delete", "recommendermodel", NAME, "-n", namespace, "--wait=true", "--timeout=120s"
        )
        assert [a for a in serve_apps(local_ray) if a.startswith(NAME)] == []
        for operator in operators:
            assert "Traceback" not in operator.log, operator.log[-3000:]
    finally:
        if traffic is not None:
            traffic.finish()
        for operator in operators:
            operator.stop()
    assert forbidden(audit_events(control_plane, install.user, since)) == []
