"""The Prometheus analysis provider against a real Prometheus server.

Prometheus (built from its pinned Go module by ``scripts/build-manifest-tools.sh``) scrapes the
serving metrics once a second from a small HTTP endpoint that exposes a real ``ServingMetrics``
registry, the router's own metric code. The test plays a canary step into those metrics, then
asks both providers for the step's window: the figures, and so the verdicts, must agree. A Prometheus that is down is ``Unavailable``, never a verdict.
"""

from __future__ import annotations

import random
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from recserve_operator.analysis.prometheus import PrometheusProvider
from recserve_operator.analysis.scrape import ScrapeProvider
from recserve_operator.api.types import AnalysisSpec
from recserve_operator.embedded.processes import free_port, pid_alive, spawn, stop_tree
from recserve_operator.planners.analysis import judge
from recserve_serving.errors import Unavailable
from recserve_serving.serve.metrics import ServingMetrics
from recserve_serving.waiting import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MODEL, STABLE, CANARY = "ranker", "ranker/1", "ranker/2"


def prometheus_binary() -> Path:
    printed = subprocess.run(
        ["bash", "scripts/build-manifest-tools.sh", "--print"], cwd=REPO, capture_output=True, text=True
    ).stdout
    dirs = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
    path = Path(dirs.get("prometheus", "/nonexistent")) / "prometheus"
    if not path.is_file():
        pytest.fail(
            f"prometheus is not built ({path}): run `bash scripts/build-manifest-tools.sh`", pytrace=False
        )
    return path


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[ServingMetrics, str]]:
    metrics = ServingMetrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield metrics, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path, metrics_endpoint: tuple[ServingMetrics, str]) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping the endpoint every second, stopped by pid."""
    _, endpoint = metrics_endpoint
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "recserve",
                        "static_configs": [{"targets": [endpoint.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    process = spawn(
        [
            str(prometheus_binary()),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "prometheus.log",
        {"PATH": "/usr/bin:/bin"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: process.poll() is not None or httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
            60,
            message="Prometheus ready",
        )
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        stop_tree([process.pid], pgids=[process.pid])
        assert not pid_alive(process.pid)


def play(
    metrics: ServingMetrics, version: str, requests: int, errors: int, score_mean: float, seed: int
) -> None:
    rng = random.Random(seed)
    for i in range(requests):
        code = "500" if i < errors else "200"
        metrics.requests.labels(MODEL, version, "/v1/recommend", code).inc()
        metrics.latency.labels(MODEL, version, "/v1/recommend").observe(rng.uniform(0.02, 0.09))
        for _ in range(10):
            metrics.scores.labels(MODEL, version).observe(rng.gauss(score_mean, 0.5))


def test_prometheus_and_scrape_providers_judge_a_canary_window_alike(
    metrics_endpoint: tuple[ServingMetrics, str], prometheus: str
) -> None:
    metrics, endpoint = metrics_endpoint
    provider = PrometheusProvider(prometheus)
    for version in (STABLE, CANARY):  # every series exists, at zero, before the window opens
        metrics.requests.labels(MODEL, version, "/v1/recommend", "200")
        metrics.requests.labels(MODEL, version, "/v1/recommend", "500")
        metrics.latency.labels(MODEL, version, "/v1/recommend")
        metrics.scores.labels(MODEL, version)
    wait_for(
        lambda: (
            provider.scalar('count(recserve_score_count{model="ranker"})') == 2
            and provider.scalar("count_over_time(up[10s])") >= 3
        ),
        60,
        message="a few scrapes of the zero series",
    )
    since = datetime.now(UTC)
    scrape = ScrapeProvider()
    scrape.canary_window(endpoint, MODEL, STABLE, CANARY, since, since)  # the window's baseline

    play(metrics, STABLE, requests=200, errors=0, score_mean=1.0, seed=1)
    play(metrics, CANARY, requests=40, errors=4, score_mean=3.0, seed=2)
    selector = 'recserve_requests_total{model="ranker",version="ranker/2"}'
    wait_for(lambda: provider.scalar(f"sum({selector})") == 40, 30, message="Prometheus scraped the step")
    wait_for(lambda: provider.scalar(f"count_over_time(sum({selector})[5s:1s])") >= 3, 30, message="samples")

    now = datetime.now(UTC)
    exact = scrape.canary_window(endpoint, MODEL, STABLE, CANARY, since, now)
    promql = provider.canary_window(MODEL, STABLE, CANARY, since, now)
    assert (exact.requests, exact.errors) == (40, 4)
    assert (promql.requests, promql.errors) == (40, 4), promql
    assert exact.score_shift is not None and promql.score_shift is not None
    assert promql.score_shift == pytest.approx(exact.score_shift) and promql.score_shift > 0.8
    assert exact.p99_latency_ms is not None and promql.p99_latency_ms is not None
    assert promql.p99_latency_ms == pytest.approx(exact.p99_latency_ms) and 50 <= promql.p99_latency_ms <= 100

    spec = AnalysisSpec(max_error_rate=0.2, max_score_shift=0.5, min_requests=20)
    verdicts = [judge(spec, window, now) for window in (exact, promql)]
    assert [v.verdict for v in verdicts] == ["Fail", "Fail"], verdicts
    assert all("score shift" in v.message for v in verdicts)
    lenient = AnalysisSpec(max_error_rate=0.2, max_score_shift=0.99, min_requests=20)
    assert [judge(lenient, w, now).verdict for w in (exact, promql)] == ["Pass", "Pass"]


def test_an_unreachable_prometheus_is_unavailable_not_a_verdict() -> None:
    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(Unavailable, match="unreachable"):
        provider.canary_window(MODEL, STABLE, CANARY, datetime.now(UTC), datetime.now(UTC))
