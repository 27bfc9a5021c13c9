"""Hybrid retrieval and the fusion head, on a catalog small enough to check by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recserve_serving.errors import CheckpointError, RecserveError
from recserve_serving.fusion import FUSION_FILE, FusionHead, fit_fusion, read_fusion
from recserve_serving.hybrid import (
    FEATURES,
    CollaborativeIndex,
    FusionWeights,
    HybridRetriever,
    collaborative_path,
    load_or_build_collaborative,
)
from recserve_serving.retrieval import ItemIndex

pytestmark = pytest.mark.unit

CATALOG = np.arange(1, 21)


def snapshot() -> pd.DataFrame:
    """Two taste groups: users 1-10 watch items 1-10, users 11-20 items 11-20; item 1 is everyone's."""
    rows = [(u, i) for u in range(1, 11) for i in range(1, 8 + u % 3)]
    rows += [(u, i) for u in range(11, 21) for i in range(11, 18 + u % 3)]
    rows += [(u, 1) for u in range(11, 21)]
    return pd.DataFrame(rows, columns=["user", "item"]).assign(rating=5.0, timestamp=0)


def content() -> ItemIndex:
    vectors = np.zeros((len(CATALOG), 2), dtype=np.float32)
    vectors[:10, 0] = 1.0
    vectors[10:, 1] = 1.0
    return ItemIndex(CATALOG.copy(), vectors)


@pytest.fixture(scope="module")
def retriever() -> HybridRetriever:
    return HybridRetriever(content(), CollaborativeIndex.fit(CATALOG, snapshot()))


def test_a_history_retrieves_its_taste_group_first(retriever: HybridRetriever) -> None:
    picked = retriever.search([12, 13], exclude={12, 13}, n=6)
    assert {12, 13}.isdisjoint(picked)
    assert [p for p in picked if p != 1] == [p for p in picked if p in range(11, 21)], (
        f"only the group's items and the item everyone watched: {picked}"
    )


def test_an_empty_history_falls_back_to_popularity(retriever: HybridRetriever) -> None:
    assert retriever.search([], exclude=set(), n=1) == [1], "item 1 is in every user's list"


def test_features_have_one_row_per_candidate_and_zeros_for_a_silent_stage(retriever: HybridRetriever) -> None:
    user = retriever.user([12])
    candidates = retriever.top(user, {12}, 5)
    features = retriever.features(user, candidates)
    assert features.shape == (5, len(FEATURES))
    assert features[:, FEATURES.index("log_rank")].tolist() == pytest.approx(np.log1p(np.arange(5)).tolist())
    empty = retriever.user([])
    silent = retriever.features(empty, [1, 2])
    assert (silent[:, FEATURES.index("als_z")] == 0).all() and (
        silent[:, FEATURES.index("content_rrf")] == 0
    ).all()


def test_stage_weights_decide_the_fusion(retriever: HybridRetriever) -> None:
    popularity_only = HybridRetriever(
        retriever.content, retriever.collaborative, FusionWeights(als=0, knn=0, content=0, popularity=1)
    )
    assert popularity_only.search([12, 13], exclude=set(), n=1) == [1]


def test_content_and_collaborative_must_cover_one_catalog() -> None:
    other = CollaborativeIndex.fit(np.arange(1, 22), snapshot())
    with pytest.raises(RecserveError, match="different catalogs"):
        HybridRetriever(content(), other)


def test_the_index_is_content_addressed_and_built_once(tmp_path) -> None:
    first = load_or_build_collaborative(tmp_path, CATALOG, snapshot())
    path = collaborative_path(tmp_path, CATALOG, snapshot())
    stamp = path.stat().st_mtime_ns
    again = load_or_build_collaborative(tmp_path, CATALOG, snapshot().sample(frac=1.0, random_state=1))
    assert path.stat().st_mtime_ns == stamp, "the same snapshot in another order is the same index"
    assert np.array_equal(first.item_factors, again.item_factors) and again.settings == first.settings
    fewer = snapshot().iloc[:-5]
    assert collaborative_path(tmp_path, CATALOG, fewer) != path, "another snapshot is another index"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary file left"


def test_the_fusion_head_learns_which_feature_predicts_relevance(tmp_path) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 3))
    ranker = rng.normal(size=2000)
    labels = (features[:, 1] + 0.3 * rng.normal(size=2000) > 1.0).astype(float)
    head = fit_fusion(
        ("a", "b", "c"),
        np.split(ranker, 40),
        np.split(features, 40),
        np.split(labels, 40),
    )
    assert head.weights[1] > 5 * max(abs(head.weights[0]), abs(head.weights[2]), abs(head.ranker_weight))
    order = np.argsort(-head.apply(ranker, features))
    assert labels[order[:100]].mean() > 0.9
    head.write(tmp_path)
    assert read_fusion(tmp_path) == head
    assert read_fusion(tmp_path / "nothing-here") is None


def test_a_corrupt_fusion_file_is_refused_with_its_path(tmp_path) -> None:
    (tmp_path / FUSION_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        read_fusion(tmp_path)
    (tmp_path / FUSION_FILE).write_text(json.dumps({"features": ["a"], "mean": [0.0]}))
    with pytest.raises(CheckpointError, match="not a fusion head"):
        read_fusion(tmp_path)


def test_a_plan_ranks_by_the_fusion_head_when_its_ranker_has_one() -> None:
    from recserve_serving.serve.recommend import RecommendationPlan

    plan = RecommendationPlan(
        user_id=None,
        history=[],
        user_text="u",
        item_ids=[1, 2, 3],
        external_ids=[1, 2, 3],
        user_texts=["u"] * 3,
        item_texts=["a", "b", "c"],
        titles=["A", "B", "C"],
        k=2,
        features=np.array([[0.0], [5.0], [1.0]]),
    )
    head = FusionHead(("f",), (0.0,), (1.0,), (1.0,), ranker_weight=0.1, ranker_mean=0.0, ranker_std=1.0)
    assert [i.item_id for i in plan.respond([3.0, 1.0, 2.0], "v").items] == [1, 3], "no head: ranker order"
    fused = plan.respond([3.0, 1.0, 2.0], "v", head)
    assert [i.item_id for i in fused.items] == [2, 3]
    assert fused.items[0].score == pytest.approx(0.1 * 1.0 + 5.0)
