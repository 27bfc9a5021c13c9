"""Diversity re-ranking (MMR): the pure function, its spec, and where the router applies it."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from serving_fakes import FakeCatalog

from recserve_serving.diversity import mmr
from recserve_serving.evaluate import EvalCase, EvalSet, genre_diversity, ranking_metrics
from recserve_serving.serve.api_models import RecommendRequest
from recserve_serving.serve.config import RouterConfig
from recserve_serving.serve.recommend import plan_recommendation
from recserve_serving.serving_spec import DiversitySpec, RetrievalSpec, ServingSpec

pytestmark = pytest.mark.unit


def unit(*rows: tuple[float, float]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_lambda_zero_is_exactly_the_ranker_order_ties_included() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(np.float64)  # many ties
    vectors = rng.normal(size=(40, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    by_score = sorted(range(40), key=lambda i: -scores[i])
    assert mmr(scores, vectors, 40, 0.0) == by_score
    assert mmr(scores, vectors, 7, 0.0) == by_score[:7]


def test_lambda_one_picks_the_best_first_then_the_least_similar() -> None:
    scores = np.array([0.9, 0.8, 0.5, 0.1])
    vectors = unit((1, 0), (1, 0.1), (1, 1), (0, 1))
    picked = mmr(scores, vectors, 2, 1.0)
    assert picked == [0, 3], "after the best item, relevance no longer counts, only dissimilarity"


def test_a_hand_computed_half_and_half_trade() -> None:
    # relevance [1, .9, .7, 0]; similarity to item 0: item 1 1.0, item 2 0.6, item 3 0.0.
    # pick 2: item 1 .45-.5=-.05, item 2 .35-.3=.05, item 3 0-0=0 -> item 2
    # pick 3: item 1 .45-.5=-.05 (still a copy of 0), item 3 0-.5*.8=-.4 -> item 1
    scores = np.array([1.0, 0.9, 0.7, 0.0])
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert mmr(scores, vectors, 4, 0.5) == [0, 2, 1, 3]
    shuffled = [3, 1, 0, 2]
    assert [shuffled[i] for i in mmr(scores[shuffled], vectors[shuffled], 4, 0.5)] == [0, 2, 1, 3], (
        "indices point into the arrays as given, not into the score order"
    )


def test_mmr_edge_cases() -> None:
    vectors = unit((1, 0), (0, 1))
    assert mmr(np.array([0.3, 0.3]), vectors, 5, 0.5) == [0, 1], "k above the pool returns the pool"
    assert mmr(np.array([]), np.zeros((0, 2)), 3, 0.5) == []
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        mmr(np.array([1.0, 0.0]), vectors, 1, 1.5)


def test_the_spec_reads_lambda_and_pool_in_camel_case_and_round_trips() -> None:
    raw = {"maxK": 20, "diversity": {"lambda": 0.3, "pool": 40}}
    spec = RetrievalSpec.model_validate(raw)
    assert spec.diversity == DiversitySpec(lambda_=0.3, pool=40)
    assert spec.to_dict()["diversity"] == {"lambda": 0.3, "pool": 40}
    assert RetrievalSpec.model_validate(spec.to_dict()) == spec
    assert "diversity" not in RetrievalSpec().to_dict(), "absent diversity stays absent"
    assert RetrievalSpec.model_validate({"diversity": {"lambda": 0.3}}).diversity.pool is None, (
        "all candidates"
    )


def test_a_pool_smaller_than_max_k_is_refused_with_the_fix() -> None:
    with pytest.raises(
        ValidationError, match=r"diversity\.pool: must be >= maxK \(got 10 < 20\).*raise pool"
    ):
        ServingSpec.model_validate({"retrieval": {"maxK": 20, "diversity": {"lambda": 0.3, "pool": 10}}})
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        DiversitySpec.model_validate({"lambda": 1.5})


def plan(diversity: DiversitySpec | None, k: int = 2):
    config = RouterConfig(
        model_name="m",
        index_dir="unused",
        retrieval=RetrievalSpec(max_k=50, diversity=diversity),
    )
    request = RecommendRequest(user_id=1, history=[5], candidates=[11, 12, 21], k=k)
    return plan_recommendation(request, FakeCatalog(), config)


def test_the_router_plan_keeps_the_ranker_order_without_diversity() -> None:
    undiversified = plan(None)
    assert undiversified.vectors is None
    response = undiversified.respond([0.9, 0.8, 0.7], "m/1")
    assert [i.item_id for i in response.items] == [11, 12]


def test_the_router_plan_re_ranks_with_mmr_and_keeps_the_ranker_scores() -> None:
    # 11 and 12 are the same decade (similarity 1), 21 another: with lambda 0.5 the second pick
    # is 21 (0.5 * 0 - 0) rather than 12 (0.5 * 0.5 - 0.5 * 1).
    response = plan(DiversitySpec(lambda_=0.5)).respond([0.9, 0.8, 0.7], "m/1")
    assert [(i.item_id, i.score) for i in response.items] == [(11, 0.9), (21, 0.7)]
    assert [i.item_id for i in plan(DiversitySpec(lambda_=0.0)).respond([0.9, 0.8, 0.7], "v").items] == [
        11,
        12,
    ]


def test_the_pool_bounds_what_mmr_may_pick() -> None:
    # The spec keeps pool >= maxK, so a pool below k only arises here, set on the plan directly.
    vectors = FakeCatalog().item_vectors([11, 12, 21])
    narrowed = replace(plan(None), diversity=DiversitySpec(lambda_=1.0, pool=2), vectors=vectors)
    assert [i.item_id for i in narrowed.respond([0.9, 0.8, 0.7], "v").items] == [11, 12], (
        "21 is outside the best-2 pool, however different it is"
    )


def test_genre_diversity_is_the_mean_pairwise_jaccard_distance() -> None:
    same = frozenset({"Drama"})
    assert genre_diversity([same, same, same]) == 0.0
    assert genre_diversity([frozenset({"Comedy"}), frozenset({"Horror"})]) == 1.0
    # pairs: {A,B}-{A}: 1 - 1/2; {A,B}-{C}: 1; {A}-{C}: 1 -> mean 2.5 / 3
    three = [frozenset({"A", "B"}), frozenset({"A"}), frozenset({"C"})]
    assert genre_diversity(three) == pytest.approx(2.5 / 3)
    assert genre_diversity([same]) == 0.0


def test_ranking_metrics_report_the_genre_diversity_of_each_top_10() -> None:
    genres = {1: ["Drama"], 2: ["Drama"], 3: ["Comedy"]}
    data = SimpleNamespace(
        train=pd.DataFrame({"user": [7, 8]}), popularity={}, categories=lambda m: genres[m]
    )
    cases = (
        EvalCase(7, "u7", (1, 2), frozenset({1})),  # Drama, Drama: 0
        EvalCase(8, "u8", (1, 3), frozenset({3})),  # Drama, Comedy: 1
    )
    scores = [np.array([0.2, 0.1]), np.array([0.1, 0.2])]
    metrics = ranking_metrics(data, EvalSet(cases, 2, 2, 0), scores)
    assert metrics["diversity"] == pytest.approx(0.5)
