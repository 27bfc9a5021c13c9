"""The router's real HTTP app, in process: a fake catalog and in-process rankers stand in for
MovieLens and Ray, so that what a client sees for bad input, a failing version and a full queue
is checked without starting a cluster."""

from __future__ import annotations

import asyncio
import json
import random
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve.exceptions import BackPressureError
from serving_fakes import FakeCatalog

from recserve_serving.errors import InvalidRequest, Unavailable
from recserve_serving.serve import app as serve_app
from recserve_serving.serve.api_models import VERSION_HEADER
from recserve_serving.serve.config import RankerArgs, Route, RouterConfig, TrafficConfig
from recserve_serving.serve.frontdoor import Gate, configure
from recserve_serving.serving_spec import FaultInjectionSpec, LimitsSpec

pytestmark = pytest.mark.unit

STABLE = Route(app="m-stable", label="m/1")
CANARY = Route(app="m-canary", label="m/2")


class TextEngine:
    """Scores a pair by its item text's length; like a tokenizer, it fails a whole call on any
    text it cannot encode, or on the text 'boom'."""

    def __init__(self):
        self.calls: list[int] = []

    def score(self, users, items):
        self.calls.append(len(items))
        for text in [*users, *items]:
            text.encode("utf-8")
            if text == "boom":
                raise RuntimeError("engine failed on this batch")
        return [float(len(item)) for item in items]


def in_process_ranker(engine, fault: FaultInjectionSpec | None = None) -> serve_app.Ranker:
    ranker = object.__new__(serve_app.Ranker)
    ranker.config = RankerArgs(label="m/1", engine_dir="unused", fault_injection=fault)
    ranker.engine = engine
    return ranker


class Response:
    """A DeploymentResponse: awaitable once, and cancellable."""

    def __init__(self, coroutine):
        self.coroutine = coroutine
        self.cancelled = False

    def __await__(self):
        return self.coroutine.__await__()

    def cancel(self):
        self.cancelled = True


class Method:
    def __init__(self, call):
        self.call = call
        self.responses: list[Response] = []

    def remote(self, *args):
        self.responses.append(Response(self.call(*args)))
        return self.responses[-1]


def handle(call) -> SimpleNamespace:
    return SimpleNamespace(
        score=Method(call), ready=Method(lambda: asyncio.sleep(0)), fusion_head=Method(no_fusion_head)
    )


async def no_fusion_head() -> None:
    return None


def failing(error: Exception):
    async def call(*_):
        raise error

    return call


@pytest.fixture
def router(monkeypatch) -> serve_app.Router:
    config = RouterConfig(
        model_name="m",
        index_dir="unused",
        limits=LimitsSpec(max_text_chars=50, request_timeout_seconds=2.0),
    )
    router = serve_app.Router(config.to_dict(), catalog=FakeCatalog())
    router.traffic = TrafficConfig(stable=STABLE)
    router.handles = {STABLE.app: handle(in_process_ranker(TextEngine()).score)}
    router.rng = random.Random(0)
    context = SimpleNamespace(
        servable_object=router, _deployment_config=SimpleNamespace(max_ongoing_requests=32)
    )
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    return router


@pytest.fixture
def client(router):
    with TestClient(serve_app.http_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_batch_queue():
    """``@serve.batch`` keeps one queue per method, bound to the event loop of its first call: one
    loop for a replica's life, but one per test here, so each test starts with no queue."""
    lazy_queue = serve_app.Ranker._score_batch.set_max_batch_size.__self__
    lazy_queue._queue = None
    yield
    lazy_queue._queue = None


def counted(router, version: str, code: int, endpoint: str = "/v2/models/{name}/infer") -> float:
    labels = {"model": "m", "version": version, "endpoint": endpoint, "code": str(code)}
    return router.metrics.registry.get_sample_value("recserve_requests_total", labels) or 0.0


def ids_body(user_values: str) -> str:
    return (
        '{"inputs": ['
        f'{{"name": "user_id", "datatype": "INT64", "shape": [1], "data": {user_values}}},'
        '{"name": "item_id", "datatype": "INT64", "shape": [1], "data": [5]}]}'
    )


def texts_body(user_text: str) -> str:
    return (
        '{"inputs": ['
        f'{{"name": "user_text", "datatype": "BYTES", "shape": [1], "data": [{user_text}]}},'
        '{"name": "item_text", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}'
    )


def infer(client, body: str):
    return client.post("/v2/models/m/infer", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize("value", ['"abc"', "null", "[1]", "1e400", "true", '"5"', "1.7"])
def test_malformed_int64_value_is_400_naming_the_input_not_500(client, value):
    response = infer(client, ids_body(f"[{value}]"))
    assert response.status_code == 400, response.text
    assert "'user_id'" in response.json()["error"]


def test_duplicate_input_names_are_400(client):
    body = json.loads(ids_body("[1]"))
    body["inputs"].append({"name": "item_id", "datatype": "INT64", "shape": [1], "data": [6]})
    response = infer(client, json.dumps(body))
    assert response.status_code == 400
    assert '"item_id"' in response.json()["error"] and "more than once" in response.json()["error"]


def test_lone_surrogate_in_bytes_is_400_naming_the_input_not_503(client):
    response = infer(client, texts_body('"\\ud800"'))
    assert response.status_code == 400, response.text
    assert "'user_text'" in response.json()["error"] and "not valid Unicode" in response.json()["error"]


def test_text_over_max_text_chars_is_400(client):
    response = infer(client, texts_body(json.dumps("x" * 51)))
    assert response.status_code == 400
    assert "maxTextChars" in response.json()["error"]


def test_valid_request_is_scored_and_labelled(client, router):
    response = infer(client, ids_body("[3]"))
    assert response.status_code == 200, response.text
    assert response.headers[VERSION_HEADER] == STABLE.label
    assert response.json()["outputs"][0]["data"] == [float(len("movie 5"))]
    assert counted(router, STABLE.label, 200) == 1


@pytest.mark.parametrize(
    "error", [Unavailable("model version m/2 failed to score: replica died"), RuntimeError("ranker crashed")]
)
def test_ranker_failure_is_503_counted_under_the_failing_version_not_none(client, router, error):
    router.traffic = TrafficConfig(stable=STABLE, canary=CANARY, canary_weight=100)
    router.handles[CANARY.app] = handle(failing(error))
    response = infer(client, ids_body("[3]"))
    assert response.status_code == 503
    assert response.headers[VERSION_HEADER] == CANARY.label
    assert counted(router, CANARY.label, 503) == 1
    assert counted(router, "none", 503) == 0


def test_ranker_queue_full_is_503_with_retry_after_counted_under_its_version(client, router):
    full = BackPressureError(num_queued_requests=256, max_queued_requests=256, retry_after_s=2)
    router.handles[STABLE.app] = handle(failing(full))
    response = infer(client, ids_body("[3]"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert "maxQueuedRequests" in response.json()["error"]
    assert counted(router, STABLE.label, 503) == 1


def test_ranker_that_hangs_is_504_counted_under_its_version_and_its_call_cancelled(client, router):
    async def hang(*_):
        await asyncio.sleep(30)

    router.handles[STABLE.app] = handle(hang)
    response = infer(client, ids_body("[3]"))
    assert response.status_code == 504
    assert response.headers[VERSION_HEADER] == STABLE.label
    assert counted(router, STABLE.label, 504) == 1
    assert [r.cancelled for r in router.handles[STABLE.app].score.responses] == [True]


def test_body_over_max_body_bytes_is_413(client, router):
    router.config = router.config.model_copy(update={"limits": LimitsSpec(max_body_bytes=1024)})
    configure(Gate("m", router.metrics, router.config.limits))
    response = infer(client, texts_body(json.dumps("x" * 2000)))
    assert response.status_code == 413
    assert "maxBodyBytes" in response.json()["error"]


def test_bad_request_never_fails_its_batch_mates(router):
    """Three concurrent requests, one with a lone surrogate: the bad one gets its 400, and the
    others are scored together in one engine call."""
    engine = TextEngine()
    router.handles[STABLE.app] = handle(in_process_ranker(engine).score)

    async def send_all():
        transport = httpx.ASGITransport(app=serve_app.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            bodies = [texts_body('"a"'), texts_body('"\\ud800"'), texts_body('"b"')]
            headers = {"content-type": "application/json"}
            return await asyncio.gather(
                *(client.post("/v2/models/m/infer", content=b, headers=headers) for b in bodies)
            )

    good, bad, other = asyncio.run(send_all())
    assert (good.status_code, bad.status_code, other.status_code) == (200, 400, 200)
    assert engine.calls == [2]


def test_engine_failure_on_one_request_stays_with_that_request():
    """Past the router's checks, a request the engine fails on is scored alone, so the requests
    batched with it still get their scores."""
    engine = TextEngine()
    ranker = in_process_ranker(engine)
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=32))

    async def send_all():
        return await asyncio.gather(
            ranker.score(["u"], ["abc"]),
            ranker.score(["u"], ["boom"]),
            ranker.score(["u"], ["de"]),
            return_exceptions=True,
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "get_replica_context", lambda: context)
        first, failed, last = asyncio.run(send_all())
    assert first.scores == [3.0] and last.scores == [2.0]
    assert first.batch_size == 3
    assert isinstance(failed, RuntimeError)


def test_lone_surrogate_sent_straight_to_a_ranker_is_refused_before_batching():
    engine = TextEngine()
    with pytest.raises(InvalidRequest, match="item_texts\\[0\\]"):
        asyncio.run(in_process_ranker(engine).score(["u"], ["\ud800"]))
    assert engine.calls == []


def test_a_drilled_ranker_fails_exactly_its_share_of_calls_with_503():
    ranker = in_process_ranker(TextEngine(), FaultInjectionSpec(abort_percent=20))

    async def ten_calls() -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        for _ in range(10):
            try:
                await ranker.score(["u"], ["abc"])
                outcomes.append(None)
            except Unavailable as error:
                outcomes.append(error)
        return outcomes

    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=32))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "get_replica_context", lambda: context)
        outcomes = asyncio.run(ten_calls())
    failed = [o for o in outcomes if o is not None]
    assert len(failed) == 2 and all(f.http_status == 503 for f in failed)
    assert "injected fault" in str(failed[0]) and "faultInjection" in str(failed[0])


def in_turn(*calls):
    """A ranker method whose n-th call is ``calls[n]``: what a handle sees when the replica it
    called dies and its router then picks another."""
    remaining = list(calls)

    def call(*args):
        return remaining.pop(0)(*args)

    return call


def recommend(client):
    return client.post("/v1/recommend", json={"user_id": 3, "candidates": [5, 12], "k": 2})


def retries(router, version: str) -> float:
    labels = {"model": "m", "version": version}
    return router.metrics.registry.get_sample_value("recserve_ranker_retries_total", labels) or 0.0


DEAD_REPLICA_ERRORS = [
    pytest.param(ActorDiedError(), id="actor-died"),
    pytest.param(ActorUnavailableError("connection lost", None), id="actor-unavailable"),
    pytest.param(
        RayTaskError("score", "", ActorDiedError(), proctitle="ray::ServeReplica", pid=1, ip="127.0.0.1"),
        id="task-error-caused-by-actor-death",
    ),
]


@pytest.mark.parametrize("died", DEAD_REPLICA_ERRORS)
def test_recommend_whose_replica_died_is_retried_once_on_another_and_answered(client, router, died):
    live = in_process_ranker(TextEngine()).score
    router.handles[STABLE.app] = handle(in_turn(failing(died), live))
    response = recommend(client)
    assert response.status_code == 200, response.text
    assert response.headers[VERSION_HEADER] == STABLE.label
    assert [item["item_id"] for item in response.json()["items"]] == [12, 5]
    assert len(router.handles[STABLE.app].score.responses) == 2
    assert retries(router, STABLE.label) == 1
    assert counted(router, STABLE.label, 200, endpoint="/v1/recommend") == 1


def test_infer_whose_replica_died_is_retried_once_on_another_and_answered(client, router):
    live = in_process_ranker(TextEngine()).score
    router.handles[STABLE.app] = handle(in_turn(failing(ActorDiedError()), live))
    response = infer(client, ids_body("[3]"))
    assert response.status_code == 200, response.text
    assert retries(router, STABLE.label) == 1


def test_replica_deaths_on_both_tries_are_503_counted_under_the_chosen_version(client, router):
    router.traffic = TrafficConfig(stable=STABLE, canary=CANARY, canary_weight=100)
    router.handles[CANARY.app] = handle(in_turn(failing(ActorDiedError()), failing(ActorDiedError())))
    response = recommend(client)
    assert response.status_code == 503
    assert response.headers[VERSION_HEADER] == CANARY.label
    assert len(router.handles[CANARY.app].score.responses) == 2
    assert retries(router, CANARY.label) == 1
    assert counted(router, CANARY.label, 503, endpoint="/v1/recommend") == 1
    assert router.handles[STABLE.app].score.responses == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(InvalidRequest("item_texts[0]: not valid Unicode"), 400, id="the-request"),
        pytest.param(RuntimeError("engine failed on this batch"), 503, id="the-engine"),
        pytest.param(
            RayTaskError("score", "", RuntimeError("engine failed"), proctitle="r", pid=1, ip="127.0.0.1"),
            503,
            id="the-engine-in-the-replica",
        ),
        pytest.param(
            BackPressureError(num_queued_requests=8, max_queued_requests=8, retry_after_s=1),
            503,
            id="a-full-queue",
        ),
    ],
)
def test_failures_a_live_replica_reports_are_not_retried(client, router, error, status):
    router.handles[STABLE.app] = handle(in_turn(failing(error), in_process_ranker(TextEngine()).score))
    response = recommend(client)
    assert response.status_code == status, response.text
    assert len(router.handles[STABLE.app].score.responses) == 1
    assert retries(router, STABLE.label) == 0


def test_retry_after_a_late_replica_death_ends_at_the_request_timeout(client, router):
    """The replica dies near the deadline and the retry hangs: the answer still comes at the
    request timeout (504), and the retried call is cancelled so that it frees its replica."""
    timeout = 1.0
    router.config = router.config.model_copy(
        update={"limits": LimitsSpec(max_text_chars=50, request_timeout_seconds=timeout)}
    )
    configure(Gate("m", router.metrics, router.config.limits))

    async def dies_late(*_):
        await asyncio.sleep(0.6 * timeout)
        raise ActorDiedError()

    async def hangs(*_):
        await asyncio.sleep(30)

    router.handles[STABLE.app] = handle(in_turn(dies_late, hangs))
    start = time.monotonic()
    response = recommend(client)
    elapsed = time.monotonic() - start
    assert response.status_code == 504
    assert elapsed < timeout + 0.5
    assert retries(router, STABLE.label) == 1
    assert [r.cancelled for r in router.handles[STABLE.app].score.responses] == [False, True]
    assert counted(router, STABLE.label, 504, endpoint="/v1/recommend") == 1
