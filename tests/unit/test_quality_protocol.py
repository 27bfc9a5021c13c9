"""The evaluation protocol's mechanics on small, hand-checkable data: the split leaks nothing,
the metrics equal hand-computed values, and the collaborative stages compute what they claim."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recserve_serving.collaborative import (
    AlsFoldIn,
    AlsSettings,
    ItemKnn,
    fit_als,
    interaction_matrix,
    item_neighbours,
)
from recserve_serving.quality import metrics as m
from recserve_serving.quality.methods import Ranked
from recserve_serving.quality.report import ItemSpace, aggregate, user_metrics
from recserve_serving.quality.split import EvalUser, protocol_split, validation_split

pytestmark = pytest.mark.unit


def ratings(users: int = 40, items: int = 30, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, users + 1):
        for t, item in enumerate(rng.choice(np.arange(1, items + 1), size=per_user, replace=False)):
            rows.append((user, int(item), float(rng.choice([2.0, 4.0, 5.0])), 1000 * user + t))
    frame = pd.DataFrame(rows, columns=["user", "item", "weight", "timestamp"])
    return frame.assign(liked=frame.weight >= 4.0)


def test_no_held_out_interaction_reaches_the_snapshot_and_cold_users_are_absent() -> None:
    frame = ratings()
    split = protocol_split(frame, holdout_fraction=0.25, cold_fraction=0.2, seed=3)
    cold = {u.user_id for u in split.users if u.cold}
    assert cold and not cold & set(split.snapshot.user)
    snapshot_keys = set(zip(split.snapshot.user, split.snapshot.item, strict=True))
    for user in split.users:
        held_out = {(user.user_id, x) for x in user.relevant}
        assert not held_out & snapshot_keys, "a held-out like is in the training snapshot"
        assert not user.relevant & set(user.history), "a held-out like is in the request history"
        last_seen = frame[(frame.user == user.user_id) & frame.item.isin(user.seen)].timestamp.max()
        first_held = frame[(frame.user == user.user_id) & frame.item.isin(user.relevant)].timestamp.min()
        assert last_seen < first_held, "the cut is temporal"
    assert len(cold) == round(0.2 * frame.user.nunique())


def test_the_validation_slice_lives_inside_the_snapshot() -> None:
    split = protocol_split(ratings(), cold_fraction=0.1)
    validation = validation_split(split)
    outer = set(zip(split.snapshot.user, split.snapshot.item, strict=True))
    inner = set(zip(validation.snapshot.user, validation.snapshot.item, strict=True))
    assert inner < outer
    for user in validation.users:
        assert {(user.user_id, x) for x in user.relevant} <= outer, (
            "validation answers come from the snapshot"
        )


def test_a_sample_keeps_its_users_deterministic() -> None:
    split = protocol_split(ratings())
    assert split.sample(10, seed=1).users == split.sample(10, seed=1).users
    assert len(split.sample(10).users) == 10 and split.sample(None) is split


def test_ranking_metrics_match_hand_computed_values() -> None:
    relevant = frozenset({3, 7})
    ranked = [1, 3, 5, 7, 9]
    ideal = 1 + 1 / math.log2(3)
    assert m.ndcg_at(ranked, relevant) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert m.ndcg_at([3, 7], relevant) == pytest.approx(1.0)
    assert m.hit_at(ranked, relevant) == 1.0 and m.hit_at([1, 2], relevant) == 0.0
    assert m.mrr_at(ranked, relevant) == pytest.approx(0.5)
    assert m.recall_at(ranked, relevant, 2) == pytest.approx(0.5)
    assert m.recall_at(ranked, relevant, 4) == pytest.approx(1.0)


def test_diversity_and_novelty_match_hand_computed_values() -> None:
    genres = {1: frozenset({"a"}), 2: frozenset({"a", "b"}), 3: frozenset({"c"})}
    # pairs: (1,2) 1 - 1/2, (1,3) 1, (2,3) 1
    assert m.intra_list_diversity([1, 2, 3], genres) == pytest.approx((0.5 + 1 + 1) / 3)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # cosines: (0,1) 0, (0,2) 1, (1,2) 0 -> mean similarity 1/3
    assert m.embedding_diversity(vectors) == pytest.approx(2 / 3)
    assert m.novelty([1, 2], {1: 8, 2: 2}, users=16) == pytest.approx((1 + 3) / 2)


def test_cohorts_and_coverage_aggregate_per_user_metrics() -> None:
    space = ItemSpace(
        item_ids=np.arange(1, 11),
        genres={i: frozenset({str(i % 2)}) for i in range(1, 11)},
        vectors=np.eye(10),
        counts={i: 1 for i in range(1, 11)},
        snapshot_users=4,
    )
    warm = EvalUser(1, (1,), frozenset({1}), frozenset({2}), cold=False)
    cold = EvalUser(2, (3,), frozenset({3}), frozenset({9}), cold=True)
    per_user = [
        user_metrics(warm, Ranked([2, 4], [2, 4]), space),
        user_metrics(cold, Ranked([4, 5], []), space),
    ]
    out = aggregate([warm, cold], per_user, [[2, 4], [4, 5]], catalog_size=10)
    assert out["warm"]["ndcg@10"] == 1.0 and out["cold"]["ndcg@10"] == 0.0
    assert out["all"]["ndcg@10"] == 0.5
    assert out["all"]["coverage@10"] == pytest.approx(3 / 10)
    assert math.isnan(per_user[1]["recall@200"]), "an endpoint shows no retrieval depth: recall is n/a"
    assert out["all"]["recall@200"] == 1.0, "n/a rows are left out of the mean"


def test_als_fold_in_reproduces_a_trained_users_factor() -> None:
    frame = ratings(users=60, items=40, per_user=15)
    catalog = np.arange(1, 41)
    matrix, users = interaction_matrix(frame.user.to_numpy(), frame.item.to_numpy(), catalog)
    settings = AlsSettings(factors=8, regularization=0.5, alpha=2.0, iterations=30)
    user_factors, item_factors = fit_als(matrix, settings)
    fold = AlsFoldIn(item_factors, settings.regularization, settings.alpha)
    for row in range(5):
        items = matrix[row].indices.tolist()
        folded = fold.user_vector(items)
        assert folded is not None
        cosine = folded @ user_factors[row] / (np.linalg.norm(folded) * np.linalg.norm(user_factors[row]))
        assert cosine > 0.99, f"user {users[row]}: fold-in is not ALS's own user step"
    assert fold.user_vector([]) is None


def test_item_neighbours_are_the_top_cosine_items() -> None:
    frame = ratings(users=30, items=12, per_user=6, seed=4)
    catalog = np.arange(1, 13)
    matrix, _ = interaction_matrix(frame.user.to_numpy(), frame.item.to_numpy(), catalog)
    indices, sims = item_neighbours(matrix, k=3, chunk=5)
    dense = matrix.toarray().T
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    cosine = (dense / norms) @ (dense / norms).T
    np.fill_diagonal(cosine, 0)
    for item in range(12):
        assert np.allclose(
            sorted(sims[item], reverse=True), sorted(cosine[item], reverse=True)[:3], atol=1e-5
        )
        assert item not in indices[item]
    knn = ItemKnn(indices, sims)
    scores = knn.scores([0, 1])
    assert scores is not None and scores[indices[0][0]] >= sims[0][0] - 1e-6
