"""The load generator against a tiny loopback server: what a benchmark's figures are made of.

A benchmark replays one request mix on every server it compares, so the order of the bodies,
which answers count as served, and the first error in a report line must be exactly right.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from loopback import loopback_server

from recserve_operator.embedded.processes import free_port
from recserve_operator.loadgen import generate, percentile_ms, replay

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """Answers 200, or 503 for user 3; records every (path, body) it is sent."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            code = 503 if json.loads(body).get("user_id") == 3 else 200
            self.send_response(code)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"busy" if code == 503 else b"{}\n\n")

        def log_message(self, *args: object) -> None:
            pass

    with loopback_server(Handler) as url:
        yield url, received


def test_bodies_are_sent_in_order_to_the_path(server: tuple[str, list[tuple[str, bytes]]]) -> None:
    url, received = server
    bodies = [json.dumps({"user_id": u}).encode() for u in (1, 2)]
    result = generate(url, path="/v2/models/m/infer", bodies=bodies, concurrency=1, requests=5, seconds=30)
    assert [body for _, body in received] == [bodies[i % 2] for i in range(5)]
    assert {path for path, _ in received} == {"/v2/models/m/infer"}
    assert result.requests == len(result.ok_latencies) == 5 and result.first_error == ""


def test_only_successful_answers_count_as_served(server: tuple[str, list[tuple[str, bytes]]]) -> None:
    url, _ = server
    bodies = [json.dumps({"user_id": u}).encode() for u in (1, 3)]
    result = generate(url, bodies=bodies, concurrency=2, requests=8, seconds=30)
    assert result.codes == {200: 4, 503: 4} and len(result.ok_latencies) == 4 and len(result.latencies) == 8
    assert result.first_error == "503 busy" and result.errors == 4


def test_failures_without_an_answer_name_the_request() -> None:
    result = generate(f"http://127.0.0.1:{free_port()}", bodies=[b'{"user_id": 7}'], requests=1, timeout=5)
    assert result.failures[0].startswith('{"user_id": 7}: ') and result.first_error.startswith("Connect")
    assert result.requests == result.errors == 1 and not result.ok_latencies


def test_percentiles_interpolate_and_are_nan_when_empty() -> None:
    assert percentile_ms([i / 1000 for i in range(1, 101)], 50) == pytest.approx(50.5)
    assert percentile_ms([0.2], 99) == pytest.approx(200.0)
    assert math.isnan(percentile_ms([], 50))


def test_replay_sends_each_request_when_it_is_due(server: tuple[str, list[tuple[str, bytes]]]) -> None:
    url, received = server
    due = [0.0, 0.05, 0.05, 0.3, 0.6]
    started = time.perf_counter()
    results = replay(url, due, seed=4)
    assert time.perf_counter() - started >= 0.6
    assert [r.due for r in results] == due and len(received) == 5
    assert {r.status for r in results} <= {200, 503}
    assert all(r.latency > 0 for r in results)
    unanswered = replay(f"http://127.0.0.1:{free_port()}", [0.0], timeout=5)
    assert unanswered[0].status == 0
