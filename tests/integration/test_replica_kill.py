"""A Ranker replica killed with SIGKILL under load, on a real local Ray cluster.

The ranker runs two replicas and four clients keep both busy with ``/v1/recommend``. A replica
is killed while the router has several calls in flight, so that some of them are on the victim
and fail with Ray's actor error: the router retries each once, Serve's handle sends the retry to
the surviving replica, and no client sees a failure. The retry counter shows that the death was
really met by requests, not dodged by an idle replica.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from recserve_operator.embedded.local_ray import RayClusterInfo, start_local_ray, stop_local_ray
from recserve_operator.embedded.processes import free_port, pid_alive, process_tree, processes_in_groups
from recserve_operator.loadgen import BackgroundTraffic
from recserve_operator.rollout.serve_rest import ServeRestTarget
from recserve_serving.example_data import EXAMPLE_DATA
from recserve_serving.serve.config import RankerConfig, RouterConfig, ServeAppConfig, render_serve_config
from recserve_serving.serve.metrics import QUEUE_LENGTH, RANKER_RETRIES, REQUESTS
from recserve_serving.serving_spec import AutoscalingSpec, ServingSpec
from recserve_serving.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario]
REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".recserve-test"
LABEL = "rk/int8"
KILLS = 3
"""At most this many kills: one whose victim happened to hold no call proves nothing, so the
test kills again (after the replacement is up) until a death has met requests."""


@pytest.fixture(scope="module")
def engine(stable_int8_engine) -> str:
    """The example's INT8 engine of the test ranker: the one `recserve up` and the e2e rollout
    serve, so a cold run builds it once for all of them."""
    return stable_int8_engine


@pytest.fixture
def cluster(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECSERVE_RAY_TMP", str(tmp_path_factory.mktemp("r")))
    ray = start_local_ray(tmp_path, num_cpus=4)
    try:
        yield ray
    finally:
        stop_local_ray(ray)


def app_config(engine: str, port: int) -> ServeAppConfig:
    router = RouterConfig(model_name="rk", data=EXAMPLE_DATA, index_dir=str(STATE / "retrieval"))
    two = ServingSpec(autoscaling=AutoscalingSpec(min_replicas=2, max_replicas=2))
    return ServeAppConfig(
        name="rk", port=port, router=router, stable=RankerConfig(label=LABEL, engine_dir=engine, serving=two)
    )


def running_replicas(target: ServeRestTarget, app: str) -> set[int]:
    """Pids of the ranker's RUNNING replicas, as the Serve controller reports them."""
    deployment = target.status()["applications"][app]["deployments"]["Ranker"]
    return {r["pid"] for r in deployment.get("replicas", []) if r.get("state") == "RUNNING" and r.get("pid")}


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the router's samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def answered(url: str) -> float:
    return metric(url, REQUESTS, version=LABEL, endpoint="/v1/recommend", code="200")


def kill_replica(ray: RayClusterInfo, pid: int) -> None:
    """SIGKILL one replica of this test's cluster, checked to be a Ranker replica of it first."""
    ours = {p.pid: p for p in [*process_tree([ray.pid]), *processes_in_groups([ray.pid])]}
    assert pid in ours, f"replica pid {pid} is not a process of this test's Ray cluster"
    title = " ".join(ours[pid].cmdline())
    assert "ServeReplica" in title and "Ranker" in title, f"pid {pid} is {title!r}, not a Ranker replica"
    ours[pid].send_signal(signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 30, message=f"replica {pid} to die")


def test_replica_killed_under_load_fails_no_request(engine, cluster):
    port = free_port()
    config = app_config(engine, port)
    ranker_app = config.traffic().stable.app
    target = ServeRestTarget(cluster.dashboard_url)
    target.apply(render_serve_config(config))
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: (
            target.application_status("rk")[0] == "RUNNING"
            and len(running_replicas(target, ranker_app)) == 2
            and httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
        ),
        900,
        interval=1.0,
        message="the router and both ranker replicas to be ready",
    )

    def both_running() -> set[int] | None:
        pids = running_replicas(target, ranker_app)
        return pids if len(pids) == 2 else None

    traffic = BackgroundTraffic(url, concurrency=4, round_requests=100_000, round_seconds=10)
    killed: list[int] = []
    try:
        wait_for(lambda: answered(url) >= 20, 300, interval=0.5, message="20 answered requests before a kill")
        for _ in range(KILLS):
            victim = min(wait_for(both_running, 300, interval=1.0, message="two running ranker replicas"))
            wait_for(
                lambda: metric(url, QUEUE_LENGTH, version=LABEL) >= 3,
                120,
                interval=0.05,
                message="calls in flight on the ranker (both replicas busy)",
            )
            kill_replica(cluster, victim)
            killed.append(victim)
            wait_for(
                lambda: (pids := both_running()) is not None and pids.isdisjoint(killed),
                300,
                interval=1.0,
                message=f"Serve to replace killed replica {victim}",
            )
            if metric(url, RANKER_RETRIES, version=LABEL) > 0:
                break
        after_recovery = answered(url)
        wait_for(
            lambda: answered(url) >= after_recovery + 20,
            300,
            interval=0.5,
            message="20 answered requests after the replacement",
        )
    finally:
        rounds = traffic.finish(timeout=120)

    retries = metric(url, RANKER_RETRIES, version=LABEL)
    requests = sum(r.requests for r in rounds)
    failed = sum(r.requests - r.codes[200] for r in rounds)
    first_errors = [r.first_error for r in rounds if r.first_error]
    print(
        f"replica kill under load: {failed} of {requests} failed, {retries:g} retries, {len(killed)} kill(s)"
    )
    assert requests > 0 and failed == 0, first_errors[:3]
    assert retries >= 1, f"no call met a killed replica in {len(killed)} kill(s), so the retry is unproven"
