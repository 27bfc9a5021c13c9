"""The router's front door: every answer for which a version was chosen carries that version
and is counted under it, whatever its status; bodies and time are bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from recserve_serving.errors import InvalidRequest, Overloaded, Unavailable
from recserve_serving.serve.api_models import UNROUTED, VERSION_HEADER
from recserve_serving.serve.frontdoor import FrontDoor, Gate, configure, mark_version
from recserve_serving.serve.http_errors import install_error_handlers
from recserve_serving.serve.metrics import ServingMetrics
from recserve_serving.serving_spec import LimitsSpec

pytestmark = pytest.mark.unit

VERSION = "m/7"


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(FrontDoor)

    @app.post("/ok")
    async def ok(request: Request) -> dict[str, int]:
        mark_version(request.scope, VERSION)
        return {"size": len(await request.body())}

    @app.post("/ranker-503")
    async def ranker_503(request: Request) -> None:
        mark_version(request.scope, VERSION)
        raise Unavailable("model version m/7 failed to score")

    @app.post("/bug")
    async def bug(request: Request) -> None:
        mark_version(request.scope, VERSION)
        raise KeyError("a bug")

    @app.post("/full")
    async def full(request: Request) -> None:
        mark_version(request.scope, VERSION)
        raise Overloaded("queue full", retry_after_s=2.5)

    @app.post("/refused-before-routing")
    async def refused() -> None:
        raise InvalidRequest("k must be between 1 and 100")

    @app.post("/slow")
    async def slow(request: Request) -> None:
        mark_version(request.scope, VERSION)
        await asyncio.sleep(5)

    @app.post("/own-timeout")
    async def own_timeout(request: Request) -> None:
        mark_version(request.scope, VERSION)
        raise TimeoutError("a bug that looks like a timeout")

    @app.post("/slow-to-send")
    async def slow_to_send(request: Request) -> StreamingResponse:
        mark_version(request.scope, VERSION)

        async def chunks() -> AsyncIterator[bytes]:
            yield b"decided, "
            await asyncio.sleep(0.5)  # past the 0.2 s deadline, after the answer has started
            yield b"then sent"

        return StreamingResponse(chunks())

    return app


@pytest.fixture
def metrics() -> ServingMetrics:
    metrics = ServingMetrics()
    configure(Gate("m", metrics, LimitsSpec(max_body_bytes=1024, request_timeout_seconds=0.2)))
    return metrics


@pytest.fixture
def client(metrics) -> TestClient:
    return TestClient(build_app(), raise_server_exceptions=False)


def counted(metrics: ServingMetrics, version: str, endpoint: str, code: int) -> float:
    value = metrics.registry.get_sample_value(
        "recserve_requests_total", {"model": "m", "version": version, "endpoint": endpoint, "code": str(code)}
    )
    return value or 0.0


def test_ranker_503_carries_the_version_and_is_counted_under_it_not_none(client, metrics):
    response = client.post("/ranker-503")
    assert response.status_code == 503
    assert response.headers[VERSION_HEADER] == VERSION
    assert counted(metrics, VERSION, "/ranker-503", 503) == 1
    assert counted(metrics, UNROUTED, "/ranker-503", 503) == 0


def test_unhandled_500_is_answered_counted_and_labelled_with_the_version(client, metrics):
    response = client.post("/bug")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: KeyError"}
    assert response.headers[VERSION_HEADER] == VERSION
    assert counted(metrics, VERSION, "/bug", 500) == 1


def test_success_carries_the_version_header_exactly_once(client, metrics):
    response = client.post("/ok", content=b"{}")
    assert response.status_code == 200
    assert response.headers.get_list(VERSION_HEADER) == [VERSION]
    assert counted(metrics, VERSION, "/ok", 200) == 1


def test_refusal_before_a_version_is_chosen_is_counted_as_unrouted(client, metrics):
    response = client.post("/refused-before-routing")
    assert response.status_code == 400
    assert VERSION_HEADER not in response.headers
    assert counted(metrics, UNROUTED, "/refused-before-routing", 400) == 1


def test_full_queue_is_503_with_retry_after_rounded_up(client, metrics):
    response = client.post("/full")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    assert counted(metrics, VERSION, "/full", 503) == 1


def test_body_over_the_limit_is_413_before_the_endpoint_reads_it(client, metrics):
    response = client.post("/ok", content=b"x" * 1025)
    assert response.status_code == 413
    assert "1025 bytes" in response.json()["error"] and "maxBodyBytes" in response.json()["error"]
    assert client.post("/ok", content=b"x" * 1024).json() == {"size": 1024}


def test_streamed_body_without_length_over_the_limit_is_413(client):
    def chunks():
        for _ in range(10):
            yield b"x" * 200

    response = client.post("/ok", content=chunks())
    assert response.status_code == 413
    assert "maxBodyBytes" in response.json()["error"]


def test_request_over_the_timeout_is_504_counted_under_its_version(client, metrics):
    response = client.post("/slow")
    assert response.status_code == 504
    assert "requestTimeoutSeconds" in response.json()["error"]
    assert response.headers[VERSION_HEADER] == VERSION
    assert counted(metrics, VERSION, "/slow", 504) == 1


def test_timeout_error_raised_by_the_app_itself_is_a_500_not_a_504(client):
    assert client.post("/own-timeout").status_code == 500


def test_a_started_answer_is_sent_whole_after_the_deadline_passes(client, metrics):
    response = client.post("/slow-to-send")
    assert response.status_code == 200
    assert response.text == "decided, then sent"
    assert counted(metrics, VERSION, "/slow-to-send", 200) == 1
