"""The temporal split and the texts built from it: no future leaks into what a model reads;
the platform's ids (integers or strings) map to dense codes and back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recserve_serving.data import Dataset, temporal_split
from recserve_serving.errors import NotFound
from recserve_serving.example_data import load_example
from recserve_serving.loaded_data import LoadedData

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_example()


def test_split_holds_out_each_users_latest_interactions(data: Dataset) -> None:
    assert len(data.train) + len(data.test) == len(data.interactions)
    last_train = data.train.groupby("user").timestamp.max()
    first_test = data.test.groupby("user").timestamp.min()
    both = last_train.index.intersection(first_test.index)
    assert len(both) > 500
    assert (last_train[both] < first_test[both]).all()
    assert set(data.test.user) == set(data.interactions.user)


def test_ties_at_the_cutoff_go_to_the_held_out_side() -> None:
    interactions = pd.DataFrame(
        {"user": [1] * 5, "item": [10, 11, 12, 13, 14], "weight": [4.0] * 5, "timestamp": [1, 2, 3, 3, 4]}
    )
    train, test, cutoff = temporal_split(interactions, 0.4)
    assert cutoff == {1: 3}
    assert sorted(train.item) == [10, 11]
    assert sorted(test.item) == [12, 13, 14]


def test_split_rejects_a_degenerate_fraction() -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        temporal_split(pd.DataFrame(columns=["user", "item", "weight", "timestamp"]), 1.0)


def test_user_text_uses_only_interactions_before_the_cutoff(data: Dataset) -> None:
    for user in data.user_codes()[:50]:
        text = data.user_text(user)
        for item in data.held_out_likes(user):
            if item not in data.liked_history(user):
                assert data.title(item) not in text.split("| categories")[0].split("; ")


def test_popularity_counts_only_training_interactions(data: Dataset) -> None:
    assert int(data.popularity.sum()) == len(data.train)
    only_in_test = set(data.test.item) - set(data.train.item)
    assert only_in_test
    assert all(data.popularity_bucket(m) == "unseen" for m in list(only_in_test)[:20])


def test_item_text_is_the_template_and_a_popularity_word(data: Dataset) -> None:
    toy_story = data.item_code(1)
    assert data.item_id(toy_story) == 1
    text = data.item_text(toy_story)
    assert text.startswith("Toy Story (1995) | Adventure|Animation")
    assert text.endswith("| blockbuster")
    assert data.categories(toy_story)[:2] == ["Adventure", "Animation"]
    assert data.popular_items(1) == [int(data.popularity.index[0])]


def test_history_override_builds_a_text_for_an_unknown_user(data: Dataset) -> None:
    text = data.user_text(history=[data.item_code(1), data.item_code(2)])
    assert text.startswith("likes: Jumanji (1995); Toy Story (1995)")
    with pytest.raises(NotFound, match="out of range"):
        data.user_text(history=[999999999])


def test_unknown_ids_raise_not_found(data: Dataset) -> None:
    with pytest.raises(NotFound, match="user 0 has no interactions"):
        data.user_code(0)
    with pytest.raises(NotFound, match="item 999999999 is not in the catalog"):
        data.item_code(999999999)
    with pytest.raises(NotFound, match="out of range"):
        data.title(-1)


def test_ids_are_matched_across_int_and_digit_strings(data: Dataset) -> None:
    assert data.item_code("1") == data.item_code(1)
    assert data.user_code(" 42") == data.user_code(42)


def test_training_pairs_come_in_groups_and_never_pair_a_user_with_an_item_they_had(data: Dataset) -> None:
    rng = np.random.default_rng(0)
    pairs = data.training_pairs(400, rng, negatives_per_positive=3)
    assert len(pairs) == 400
    labels = np.array([p.label for p in pairs]).reshape(-1, 4)
    assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
    assert all(len({p.user_text for p in pairs[i : i + 4]}) == 1 for i in range(0, 400, 4))


def test_positive_user_text_never_contains_the_positive_itself(data: Dataset) -> None:
    rng = np.random.default_rng(1)
    for pair in data.training_pairs(200, rng)[::2]:
        title = pair.item_text.split(" | ")[0]
        assert title not in pair.user_text.split(" | ")[0].removeprefix("likes: ").split("; ")


def test_negatives_are_unrated_and_distinct(data: Dataset) -> None:
    rng = np.random.default_rng(2)
    user = data.user_code(1)
    for popular in (False, True):
        negatives = data.negatives(user, 50, rng, popular=popular)
        assert len(set(negatives)) == 50
        assert not set(negatives) & data.interacted_items(user)


def test_a_like_is_a_weight_at_the_positive_threshold(data: Dataset) -> None:
    user = data.user_codes()[0]
    history = data.history(user)
    assert data.liked_history(user) == [int(m) for m in history.item[history.weight >= 4.0]]


def test_string_ids_round_trip_through_codes() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["sku-b", "sku-a", "sku-c"],
            "title": ["B", "A", "C"],
            "text": ["b text", "a text", "c text"],
            "categories": [["x"], [], ["x", "y"]],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u2"],
            "item_id": ["sku-a", "sku-b", "sku-c", "sku-c"],
            "timestamp": [1, 2, 3, 4],
            "weight": [1.0, 1.0, 0.0, 1.0],
        }
    )
    data = Dataset(LoadedData(items, interactions, 0.5, "d" * 64), holdout_fraction=0.5)
    assert [data.item_id(c) for c in data.item_ids] == ["sku-a", "sku-b", "sku-c"]
    assert data.title(data.item_code("sku-b")) == "B"
    assert data.item_text(data.item_code("sku-a")).startswith("a text | ")
    assert data.user_id(data.user_code("u1")) == "u1"
    assert set(data.interactions.liked) == {True, False}
    with pytest.raises(NotFound, match="'sku-z' is not in the catalog"):
        data.item_code("sku-z")
