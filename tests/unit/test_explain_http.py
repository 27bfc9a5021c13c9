"""Explanations through the router's real HTTP app, in process: an engine whose scores are a known
sum of per-history-movie affinities stands in for the model, so every contribution is exact."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from ray import serve
from serving_fakes import LIKED, FakeCatalog

from recserve_operator.planners.serve_config import DeployPlan, ServedVersion, ServeSite, plan_serve_config
from recserve_operator.validate import load_model
from recserve_serving.serve import app as serve_app
from recserve_serving.serve.api_models import VERSION_HEADER
from recserve_serving.serve.config import RankerArgs, Route, RouterConfig, TrafficConfig
from recserve_serving.serve.occlusion import NO_REASON
from recserve_serving.serving_spec import ExplainSpec, ServingSpec

pytestmark = pytest.mark.unit

STABLE = Route(app="m-stable", label="m/1")
AFFINITY = {(5, 40): 2.0, (12, 40): 0.5, (7, 40): -1.0, (12, 41): 3.0}
"""(liked movie, item) → how much having liked it raises the item's score."""
DISABLED = "spec.serving.explain.enabled"
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"


class AffinityEngine:
    """A pair's score: the item's id / 100, plus the affinity of each movie in the user's text
    with the item. Leaving a movie out therefore lowers the score by exactly its affinity."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, users: list[str], items: list[str]) -> list[float]:
        self.calls.append(len(items))
        scores = []
        for user, item in zip(users, items, strict=True):
            liked = [int(m) for m in user.partition(" likes ")[2].split()]
            movie = int(item.split()[1])
            scores.append(movie / 100 + sum(AFFINITY.get((m, movie), 0.0) for m in liked))
        return scores


class Response:
    def __init__(self, coroutine):
        self.coroutine = coroutine

    def __await__(self):
        return self.coroutine.__await__()


class Method:
    def __init__(self, call):
        self.call = call

    def remote(self, *args):
        return Response(self.call(*args))


@pytest.fixture
def engine() -> AffinityEngine:
    return AffinityEngine()


async def no_head() -> None:
    return None


def make_router(monkeypatch, engine, explain: ExplainSpec | None = None) -> serve_app.Router:
    config = RouterConfig(model_name="m", index_dir="unused", explain=explain or ExplainSpec())
    router = serve_app.Router(config.to_dict(), catalog=FakeCatalog())
    ranker = object.__new__(serve_app.Ranker)
    ranker.config = RankerArgs(label=STABLE.label, engine_dir="unused")
    ranker.engine = engine
    router.traffic = TrafficConfig(stable=STABLE)
    router.handles = {STABLE.app: SimpleNamespace(score=Method(ranker.score), fusion_head=Method(no_head))}
    router.rng = random.Random(0)
    context = SimpleNamespace(
        servable_object=router, _deployment_config=SimpleNamespace(max_ongoing_requests=32)
    )
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    return router


@pytest.fixture(autouse=True)
def fresh_batch_queue():
    """One ``@serve.batch`` queue per test, as in test_router_http (it binds to its first loop)."""
    lazy_queue = serve_app.Ranker._score_batch.set_max_batch_size.__self__
    lazy_queue._queue = None
    yield
    lazy_queue._queue = None


@pytest.fixture
def router(monkeypatch, engine):
    return make_router(monkeypatch, engine)


@pytest.fixture
def client(router):
    with TestClient(serve_app.http_app, raise_server_exceptions=False) as client:
        yield client


def recommend(client, **body):
    return client.post("/v1/recommend", json={"user_id": 8, "candidates": [40, 41, 42], "k": 3, **body})


def test_each_item_carries_its_reasons_from_one_more_engine_call(client, engine):
    response = recommend(client, explain=True)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["item_id"] for item in items] == [41, 40, 42]
    by_movie = {item["item_id"]: item["explanation"] for item in items}
    assert by_movie[41]["reasons"] == [
        {"item_id": 12, "title": "Movie 12", "contribution": pytest.approx(3.0)}
    ]
    assert by_movie[41]["text"] == "Because you liked Movie 12"
    assert [(r["item_id"], r["contribution"]) for r in by_movie[40]["reasons"]] == [
        (5, pytest.approx(2.0)),
        (12, pytest.approx(0.5)),
    ]  # 7 lowers the score of 40: not a reason
    assert by_movie[40]["text"] == "Because you liked Movie 5 and Movie 12"
    assert by_movie[42] == {"reasons": [], "text": NO_REASON}
    # ranking: 3 pairs; explaining: 3 items × (the full history + 3 histories with one left out)
    assert engine.calls == [3, 3 * 4]


def test_reasons_name_only_the_requesting_users_own_history(client):
    own = [12, 5]
    response = recommend(client, user_id=4, history=own, explain=True)
    assert response.status_code == 200, response.text
    named = {r["item_id"] for item in response.json()["items"] for r in item["explanation"]["reasons"]}
    assert named and named <= set(own)
    stored = recommend(client, explain=True)
    named = {r["item_id"] for item in stored.json()["items"] for r in item["explanation"]["reasons"]}
    assert named <= set(LIKED[8])


def test_a_request_that_does_not_ask_gets_no_explanation_and_costs_one_call(client, engine):
    response = recommend(client)
    assert response.status_code == 200
    assert all(set(item) == {"item_id", "title", "score"} for item in response.json()["items"])
    assert engine.calls == [3]


def test_explain_history_is_bounded_by_max_history(monkeypatch, engine):
    make_router(monkeypatch, engine, ExplainSpec(max_history=1))
    with TestClient(serve_app.http_app, raise_server_exceptions=False) as client:
        response = recommend(client, explain=True)
    assert response.status_code == 200, response.text
    reasons = {item["item_id"]: item["explanation"]["reasons"] for item in response.json()["items"]}
    assert [r["item_id"] for r in reasons[41]] == [12]
    assert reasons[40] == [{"item_id": 12, "title": "Movie 12", "contribution": pytest.approx(0.5)}]
    assert engine.calls == [3, 3 * 2]  # only the most recent like (12) is left out


@pytest.mark.parametrize("value", ['"yes"', '"true"', "1", "null", "[]"])
def test_a_non_boolean_explain_is_400_naming_the_field(client, engine, value):
    body = '{"user_id": 8, "candidates": [40], "explain": ' + value + "}"
    response = client.post("/v1/recommend", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("invalid request: explain:")
    assert engine.calls == []


def test_explain_disabled_in_the_spec_is_400_naming_the_field(monkeypatch, engine):
    make_router(monkeypatch, engine, ExplainSpec(enabled=False))
    with TestClient(serve_app.http_app, raise_server_exceptions=False) as client:
        asked = recommend(client, explain=True)
        plain = recommend(client)
        oip = client.post("/v2/models/m/explain", json=explain_body())
    for refused in (asked, oip):
        assert refused.status_code == 400, refused.text
        assert DISABLED in refused.json()["error"]
    assert plain.status_code == 200
    assert engine.calls == [3]


def ints(name: str, data: list) -> dict:
    return {"name": name, "datatype": "INT64", "shape": [len(data)], "data": data}


def explain_body(**inputs) -> dict:
    tensors = {"user_id": ints("user_id", [8]), "item_id": ints("item_id", [40, 42])}
    tensors.update({name: tensor for name, tensor in inputs.items()})
    return {"id": "r1", "inputs": [t for t in tensors.values() if t is not None]}


def test_oip_explain_answers_scores_the_history_and_a_contribution_matrix(client, engine, router):
    response = client.post("/v2/models/m/explain", json=explain_body())
    assert response.status_code == 200, response.text
    assert response.headers[VERSION_HEADER] == STABLE.label
    body = response.json()
    assert body["model_name"] == "m" and body["model_version"] == STABLE.label and body["id"] == "r1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["score"]["shape"] == [2] and outputs["score"]["data"] == [pytest.approx(1.9), 0.42]
    assert outputs["history"] == {"name": "history", "shape": [3], "datatype": "INT64", "data": [12, 5, 7]}
    contribution = outputs["contribution"]
    assert contribution["shape"] == [2, 3] and contribution["datatype"] == "FP32"
    assert contribution["data"] == [pytest.approx(v) for v in (0.5, 2.0, -1.0, 0.0, 0.0, 0.0)]
    assert outputs["explanation"]["data"] == ["Because you liked Movie 5 and Movie 12", NO_REASON]
    assert engine.calls == [2 * 4]  # one call: the full-history pairs give the scores
    labels = {"model": "m", "version": STABLE.label}
    assert router.metrics.registry.get_sample_value("recserve_scores_count", labels) is None


def test_oip_explain_reads_an_anonymous_history(client):
    body = explain_body(user_id=None, history=ints("history", [5]))
    response = client.post("/v2/models/m/explain", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["history"]["data"] == [5]
    assert outputs["contribution"]["data"] == [pytest.approx(2.0), 0.0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"user_id": ints("user_id", [8, 4])}, "one user per explain request"),
        ({"item_id": None}, "explain inputs are item_id"),
        ({"user_text": {"name": "user_text", "datatype": "BYTES", "shape": [1], "data": ["x"]}}, "got"),
        ({"history": ints("history", [])}, "'history' is empty"),
        ({"user_id": None}, "give user_id"),
        ({"item_id": ints("item_id", [])}, "'item_id' is empty"),
        ({"item_id": ints("item_id", [40, 1000])}, "unknown item ids [1000]"),
        (
            {"item_id": {"name": "item_id", "datatype": "INT64", "shape": [1], "data": ["40"]}},
            "not an integer",
        ),
    ],
)
def test_bad_oip_explain_input_is_400_naming_it(client, engine, inputs, message):
    response = client.post("/v2/models/m/explain", json=explain_body(**inputs))
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert engine.calls == []


def test_oip_explain_of_too_many_pairs_is_400(monkeypatch, engine):
    router = make_router(monkeypatch, engine)
    router.config = router.config.model_copy(update={"max_infer_pairs": 7})
    with TestClient(serve_app.http_app, raise_server_exceptions=False) as client:
        response = client.post("/v2/models/m/explain", json=explain_body())
    assert response.status_code == 400
    assert "8 pairs" in response.json()["error"] and "fewer item_id" in response.json()["error"]
    router.config = router.config.model_copy(update={"max_infer_pairs": 1})
    with TestClient(serve_app.http_app, raise_server_exceptions=False) as client:
        response = client.post("/v2/models/m/explain", json=explain_body())
    assert response.status_code == 400
    assert "2 items" in response.json()["error"]
    assert engine.calls == []


def test_oip_explain_of_another_model_is_404(client):
    assert client.post("/v2/models/other/explain", json=explain_body()).status_code == 404


def test_explaining_logs_no_ids_or_titles(client, caplog):
    with caplog.at_level(logging.DEBUG):
        assert recommend(client, explain=True).status_code == 200
        assert client.post("/v2/models/m/explain", json=explain_body()).status_code == 200
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in ("Movie 12", "Movie 5", "likes"):
        assert secret not in logged


def test_spec_explain_reaches_the_router_args():
    loaded = load_model(EXAMPLE)
    explain = {"enabled": False, "maxHistory": 4}
    serving = ServingSpec.model_validate({**loaded.spec.serving.to_dict(), "explain": explain})
    model = loaded.model_copy(update={"spec": loaded.spec.model_copy(update={"serving": serving})})
    plan = DeployPlan(stable=ServedVersion(label="movielens-ranker/1", engine_dir="/engines/a"))
    config = plan_serve_config(
        model, plan, ServeSite(index_dir="/index", online_dir="/online", pseudonym_key_file="/keys/pseudonym")
    )
    assert config.router.explain == ExplainSpec(enabled=False, max_history=4)
    assert json.loads(json.dumps(config.router.to_dict()))["explain"] == explain


@pytest.mark.parametrize("value", [0, 51])
def test_max_history_is_bounded(value):
    with pytest.raises(ValueError, match="maxHistory"):
        ExplainSpec.model_validate({"maxHistory": value})
