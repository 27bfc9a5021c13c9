"""``--from-prometheus``: the range query sent over HTTP and its answer read back as a trace.

A loopback stand-in answers /api/v1/query_range the way Prometheus does and records the query
string; tests/unit/test_autoscale_inputs.py covers the answer's shapes and errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import pytest
from loopback import loopback_server

from recserve_operator.autoscale.prometheus import fetch_rates
from recserve_operator.autoscale.trace import TraceError
from recserve_operator.embedded.processes import free_port
from recserve_serving.errors import Unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def prometheus() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    asked: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            asked.append(parse_qs(url.query))
            start, step = float(asked[-1]["start"][0]), float(asked[-1]["step"][0])
            values = [[start + i * step, str(1.5 * i)] for i in range(3)]
            body = {
                "status": "success",
                "data": {"resultType": "matrix", "result": [{"metric": {}, "values": values}]},
            }
            payload = json.dumps(body).encode() if url.path == "/api/v1/query_range" else b"not found"
            self.send_response(200 if url.path == "/api/v1/query_range" else 404)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    with loopback_server(Handler) as url:
        yield url, asked


def test_a_range_query_becomes_a_rates_trace(prometheus: tuple[str, list[dict[str, list[str]]]]) -> None:
    url, asked = prometheus
    query = 'sum(rate(recserve_requests_total{model="m"}[1m]))'
    trace = fetch_rates(url + "/", query, start=1_700_000_000, end=1_700_003_600, step_s=60)
    assert asked == [
        {"query": [query], "start": ["1700000000.000"], "end": ["1700003600.000"], "step": ["60"]}
    ]
    assert (trace.times, trace.rates, trace.duration_s) == ((0.0, 60.0, 120.0), (0.0, 1.5, 3.0), 180.0)


def test_a_bad_range_or_an_unreachable_server_is_named() -> None:
    with pytest.raises(TraceError, match="must end after it starts"):
        fetch_rates("http://127.0.0.1:1", "q", start=10, end=5, step_s=60)
    with pytest.raises(TraceError, match="raise --step to 8 s"):
        fetch_rates("http://127.0.0.1:1", "q", start=0, end=86_400, step_s=1)
    with pytest.raises(Unavailable, match="unreachable"):
        fetch_rates(f"http://127.0.0.1:{free_port()}", "q", start=0, end=60, step_s=15, timeout=5)


def test_the_command_saves_real_traffic_as_a_trace(
    prometheus: tuple[str, list[dict[str, list[str]]]], tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recserve_operator.autoscale.inputs import load_trace
    from recserve_operator.cli import main

    url, asked = prometheus
    out = tmp_path / "real.csv"
    window = ["--start", "2023-11-14T22:13:20Z", "--end", "1700003600", "--step", "60"]
    assert (
        main(["autoscale", "trace", "--from-prometheus", url, "--query", "q", *window, "--out", str(out)])
        == 0
    )
    assert asked[-1]["start"] == ["1700000000.000"]
    assert load_trace(out).rates == (0.0, 1.5, 3.0)
    assert main(["autoscale", "trace", "--from-prometheus", url, "--query", "q", "--out", str(out)]) == 2
    assert "needs a range: --since 24h, or --start and --end" in capsys.readouterr().err
