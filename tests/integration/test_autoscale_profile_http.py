"""``autoscale.measure`` over real HTTP: a loopback server with a known capacity stands in for a
model (its /v1/recommend) and for Ray's Serve REST API (one ranker replica), so the sweep, the
replica check and the profile it writes are exercised end to end without a Ray cluster; a live
`recserve up` is what bench/autoscale_validate.py profiles."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from loopback import loopback_server

from recserve_operator.autoscale.measure import profile_replica
from recserve_operator.autoscale.profile import ProfileError

pytestmark = pytest.mark.integration
SERVICE_S = 0.05
SLOTS = 2  # the stand-in serves two requests at a time: 40 requests/s at most


def applications(replicas: int) -> dict:
    ranker = {
        "deployed_app_config": {
            "args": {
                "engineDir": "/engines/" + "e" * 64,
                "batching": {"maxBatchSize": 8, "batchWaitTimeoutMs": 1},
            }
        },
        "deployments": {
            "Ranker": {
                "replicas": [{"state": "RUNNING"}] * replicas,
                "deployment_config": {"max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 1}},
            }
        },
    }
    router = {
        "deployed_app_config": {"args": {"retrieval": {"candidates": 50}}},
        "deployments": {"Router": {}},
    }
    return {"applications": {"m": router, "m-abcdef0123": ranker}}


@pytest.fixture
def stand_in() -> Iterator[tuple[str, list[int]]]:
    slots = threading.Semaphore(SLOTS)
    replicas = [1]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(200, json.dumps(applications(replicas[0])).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            with slots:
                time.sleep(SERVICE_S)
            self._send(200, b"{}")

        def log_message(self, *args: object) -> None:
            pass

    with loopback_server(Handler) as url:
        yield url, replicas


def test_the_sweep_finds_the_stand_ins_capacity(stand_in: tuple[str, list[int]]) -> None:
    url, _ = stand_in
    profile = profile_replica(
        "m", url, url, hardware="cpu-test", seconds=1.5, warmup_s=0.3, max_concurrency=16, host_cpus=2
    )
    assert profile.engine_key == "e" * 64 and profile.hardware.id == "cpu-test"
    assert (profile.conditions.max_batch_size, profile.conditions.candidates) == (8, 50)
    assert profile.saturated
    by_concurrency = {x.concurrency: x for x in profile.levels}
    assert by_concurrency[1].p50_ms >= 1000 * SERVICE_S
    assert by_concurrency[2].throughput_rps > 1.4 * by_concurrency[1].throughput_rps
    assert max(x.throughput_rps for x in profile.levels) <= SLOTS / SERVICE_S * 1.05


def test_a_second_replica_is_refused(stand_in: tuple[str, list[int]]) -> None:
    url, replicas = stand_in
    replicas[0] = 2
    with pytest.raises(ProfileError, match="runs 2 replicas"):
        profile_replica(
            "m", url, url, hardware="cpu-test", seconds=1, warmup_s=0, max_concurrency=4, host_cpus=2
        )


def test_the_command_profiles_a_running_up_from_its_run_record(
    stand_in: tuple[str, list[int]], tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`recserve autoscale profile NAME` finds the endpoint and the Serve REST API in the run
    record of a live `recserve up` (this test's own pid stands for it)."""
    import os

    from recserve_operator.autoscale.inputs import load_profile
    from recserve_operator.cli import main

    url, _ = stand_in
    runs = tmp_path / "state" / "runs"
    runs.mkdir(parents=True)
    record = {"name": "m", "pid": os.getpid(), "endpoint": url, "ray": {"dashboard_url": url}}
    (runs / "m.json").write_text(json.dumps(record))
    out = tmp_path / "m.profile.json"
    args = ["--state", str(tmp_path / "state"), "--seconds", "1", "--warmup", "0", "--max-concurrency", "4"]
    code = main(["autoscale", "profile", "m", *args, "--hardware", "cpu-test", "--out", str(out)])
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert load_profile(out).levels[0].concurrency == 1
    assert main(["autoscale", "profile", "other", *args]) == 2
    assert "other is not running" in capsys.readouterr().err
