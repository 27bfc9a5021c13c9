"""Explanations from real engines: faithful to the engine that gave them, and how stable across engines.

The router's real HTTP app runs in process with the real catalog (MovieLens and its retrieval
index) and the test ranker's ORT engines behind it, called directly instead of through Ray.
For 30 held-out users of the evaluation protocol (``eval_set``: users with a liked training
history and held-out likes), each request sends the user's training-side likes as ``history``
and 20 evaluation candidates, and asks for the top 10 with ``"explain": true``.

- Faithfulness (INT8, the example's dynamic quantization): for every returned item with a
  reason, the item is scored again, apart from the router's call, with the top reason left
  out of the history and with a random other history movie left out (texts built by
  ``Dataset.user_text`` directly, not by the occlusion planner). Leaving the top reason out
  must lower the score more in >= 80% of the cases: once with the random movie drawn from the
  whole history, once (stricter) from the movies whose leaving-out changes the user's text.
- Stability: fp32 explains the INT8 engine's 10 items, and the top reason (or "none") is
  compared. Dynamic INT8 misses the 90% target (87% here): its activation scales are taken per
  engine call, so an item's reasons depend on which pairs share the call (an item explained
  alone keeps its top reason in 85% of cases on dynamic INT8). ``make test`` keeps a regression
  floor of 80% for it. Static INT8 (calibrated scales) meets the target (97%) and its reasons do
  not depend on the batch; that check builds another engine, so it is ``long``
  (``make test-all``).

The figures are printed (``-s``) and quoted in the README.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ray import serve

from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.serve import app as serve_app
from recserve_serving.serve.config import Route, RouterConfig, TrafficConfig

# Long (make test-all): about two minutes on a loaded machine, which the warm make test budget
# (25 min, already near full) cannot pay for; the HTTP behaviour is in tests/unit/test_explain_http.py.
pytestmark = [pytest.mark.integration, pytest.mark.long]

USERS = 30
CANDIDATES = 20
K = 10
ROUTE = Route(app="explain-app", label="explain/1")
CHECKPOINT = "models:/movielens-ranker/1"

Explain = Callable[[Any, int, list[int], list[int]], list[dict[str, Any]]]
"""(engine, user id, history, candidates) → the recommended items with their explanations."""


class EngineHandle:
    """A ranker handle that scores on an engine in this process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.score = SimpleNamespace(remote=self._remote)
        self.fusion_head = SimpleNamespace(remote=self._no_head)

    async def _no_head(self) -> None:
        """Reasons explain the cross-encoder's score, so this measures it without a fusion head."""
        return None

    def _remote(self, users: list[str], items: list[str]):
        return self._scored(users, items)

    async def _scored(self, users: list[str], items: list[str]) -> serve_app.Scored:
        return serve_app.Scored([float(s) for s in self.engine.score(users, items)], batch_size=1)


@dataclass(frozen=True)
class HeldOut:
    user_id: int
    history: list[int]
    candidates: list[int]


def engine_of(test_state, recipe: OptimizationRecipe) -> Any:
    from recserve_serving.engine.build import build_engine
    from recserve_serving.engine.runtime import load_engine
    from recserve_serving.registry import Registry

    resolved = Registry(test_state).resolve(CHECKPOINT)
    return load_engine(build_engine(resolved, recipe, test_state / "engines").path)


@pytest.fixture(scope="module")
def engines(test_state) -> dict[str, Any]:
    """The example's INT8 (dynamic) and an fp32 engine of the test ranker: both in the test cache."""
    return {
        precision: engine_of(test_state, OptimizationRecipe(backend="onnxruntime", precision=precision))
        for precision in ("int8", "fp32")
    }


@pytest.fixture(scope="module")
def catalog(test_state):
    from recserve_serving.example_data import load_example
    from recserve_serving.serve.catalog import Catalog

    return Catalog.open(load_example(), test_state / "retrieval")


@pytest.fixture(scope="module")
def held_out(catalog) -> list[HeldOut]:
    from recserve_serving.evaluate import eval_set

    cases = eval_set(catalog.dataset, users=USERS, candidates=CANDIDATES, seed=0).cases
    max_history = RouterConfig.model_fields["max_history"].default
    return [
        HeldOut(c.user_id, catalog.dataset.liked_history(c.user_id)[-max_history:], list(c.candidates))
        for c in cases
    ]


@pytest.fixture(scope="module")
def explain(catalog):
    """Recommend with ``"explain": true`` through the router's HTTP app, on a given engine."""
    config = RouterConfig(model_name="explain", index_dir="unused")
    router = serve_app.Router(config.to_dict(), catalog=catalog)
    router.traffic = TrafficConfig(stable=ROUTE)
    context = SimpleNamespace(servable_object=router)
    with pytest.MonkeyPatch.context() as patch, TestClient(serve_app.http_app) as client:
        patch.setattr(serve, "get_replica_context", lambda: context)

        dataset = catalog.dataset

        def as_codes(item: dict[str, Any]) -> dict[str, Any]:
            """The answer in the data set's codes, which the held-out users are written in."""
            reasons = [
                {**r, "item_id": dataset.item_code(r["item_id"])} for r in item["explanation"]["reasons"]
            ]
            explanation = {**item["explanation"], "reasons": reasons}
            return {**item, "item_id": dataset.item_code(item["item_id"]), "explanation": explanation}

        def recommend(engine: Any, user_id: int, history: list[int], candidates: list[int]) -> list[dict]:
            """Codes in, codes out; the request itself speaks the platform's ids, as clients do."""
            router.handles = {ROUTE.app: EngineHandle(engine)}
            body = {
                "user_id": dataset.user_id(user_id),
                "history": [dataset.item_id(m) for m in history],
                "candidates": [dataset.item_id(m) for m in candidates],
                "k": K,
                "explain": True,
            }
            response = client.post("/v1/recommend", json=body)
            assert response.status_code == 200, response.text
            return [as_codes(item) for item in response.json()["items"]]

        yield recommend


def top_reason(item: dict[str, Any]) -> int | None:
    reasons = item["explanation"]["reasons"]
    return reasons[0]["item_id"] if reasons else None


Explained = list[tuple[HeldOut, list[dict[str, Any]]]]
"""Each held-out user with the items recommended and explained for them."""


def explained_by(explain: Explain, engine: Any, held_out: list[HeldOut]) -> Explained:
    return [(user, explain(engine, user.user_id, user.history, user.candidates)) for user in held_out]


def stability(explain: Explain, explained: Explained, fp32: Any) -> tuple[int, int]:
    """(items whose top reason, or none, is the same on both engines; items): fp32 explains the
    very items that the other engine recommended and explained."""
    same = total = 0
    for user, ranked in explained:
        fp32_tops = {
            item["item_id"]: top_reason(item)
            for item in explain(fp32, user.user_id, user.history, [item["item_id"] for item in ranked])
        }
        same += sum(top_reason(item) == fp32_tops[item["item_id"]] for item in ranked)
        total += len(ranked)
    return same, total


@pytest.fixture(scope="module")
def int8_explained(explain, engines, held_out) -> Explained:
    return explained_by(explain, engines["int8"], held_out)


@pytest.fixture(scope="module")
def int8_items(int8_explained) -> list[tuple[HeldOut, dict[str, Any]]]:
    return [(user, item) for user, items in int8_explained for item in items]


def test_reasons_come_only_from_the_users_own_history(int8_items):
    assert len(int8_items) == USERS * K
    assert all(
        {r["item_id"] for r in item["explanation"]["reasons"]} <= set(user.history)
        for user, item in int8_items
    )


def test_leaving_out_the_top_reason_lowers_the_score_more_than_a_random_history_movie(
    int8_items, catalog, engines
):
    dataset = catalog.dataset
    rng = random.Random(0)
    users, items = [], []
    for user, item in int8_items:
        top = top_reason(item)
        if top is None:
            continue
        full = dataset.user_text(user.user_id, history=user.history)

        def without(movie: int, user: HeldOut = user) -> str:
            return dataset.user_text(user.user_id, history=[m for m in user.history if m != movie])

        distinct = list(dict.fromkeys(user.history))
        read = [m for m in distinct if without(m) != full]  # movies whose leaving-out changes the text
        if len(read) < 2:  # no other movie to compare with (a reason always changes the text)
            continue
        anywhere = rng.choice([m for m in distinct if m != top])
        among_read = rng.choice([m for m in read if m != top])
        users += [full, without(top), without(anywhere), without(among_read)]
        items += [catalog.item_text(item["item_id"])] * 4
    scores = engines["int8"].score(users, items).reshape(-1, 4)
    checked = len(scores)
    drop_top = scores[:, 0] - scores[:, 1]
    anywhere_rate = float((drop_top > scores[:, 0] - scores[:, 2]).mean())
    read_rate = float((drop_top > scores[:, 0] - scores[:, 3]).mean())
    print(
        f"\nfaithfulness (INT8 dynamic, {checked} items with a reason of {len(int8_items)}): leaving the top "
        f"reason out lowers the score more than a random history movie in {anywhere_rate:.1%} of cases, "
        f"more than a random movie the user's text reads in {read_rate:.1%}"
    )
    assert checked >= len(int8_items) // 2
    assert anywhere_rate >= 0.8
    assert read_rate >= 0.8


def test_top_reasons_of_dynamic_int8_mostly_match_fp32(explain, int8_explained, engines):
    """Below the 90% target (see the module's docstring); a floor against regressions."""
    same, total = stability(explain, int8_explained, engines["fp32"])
    print(
        f"\nstability, INT8 dynamic vs fp32: same top reason (or both none) for {same}/{total} ({same / total:.1%})"
    )
    assert same / total >= 0.8


def alone(explain: Explain, engine: Any, explained: Explained) -> tuple[int, int]:
    """(items whose top reason, or none, is the same when each item is explained in a request of
    its own, with a ranker call of 1 + its left-out pairs; items)."""
    same = total = 0
    for user, ranked in explained:
        for item in ranked:
            (single,) = explain(engine, user.user_id, user.history, [item["item_id"]])
            same += top_reason(single) == top_reason(item)
            total += 1
    return same, total


@pytest.mark.long
def test_top_reasons_of_static_int8_match_fp32_and_do_not_depend_on_the_batch(
    explain, engines, held_out, int8_explained, test_state
):
    """Calibrated (static) activation scales make an item's scores independent of the pairs that
    share its engine call, and its reasons those of fp32 in >= 90% of items; dynamic INT8's
    reasons move with their batch (printed for comparison, not a requirement)."""
    recipe = OptimizationRecipe.model_validate(
        {"backend": "onnxruntime", "precision": "int8", "quantization": {"mode": "static"}}
    )
    static = engine_of(test_state, recipe)
    static_explained = explained_by(explain, static, held_out)
    same, total = stability(explain, static_explained, engines["fp32"])
    static_alone, _ = alone(explain, static, static_explained)
    dynamic_alone, _ = alone(explain, engines["int8"], int8_explained)
    print(
        f"\nstability, INT8 static vs fp32: same top reason (or both none) for {same}/{total} "
        f"({same / total:.1%}); each item explained alone vs with its 9 neighbours: static "
        f"{static_alone}/{total} ({static_alone / total:.1%}), dynamic {dynamic_alone}/{total} "
        f"({dynamic_alone / total:.1%})"
    )
    assert same / total >= 0.9
    assert static_alone / total >= 0.99
