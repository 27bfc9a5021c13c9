"""The temporal split and the texts built from it: no future leaks into what a model reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recserve_serving.data import POSITIVE_RATING, Dataset, load_example, temporal_split
from recserve_serving.errors import NotFound

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
    ratings = pd.DataFrame(
        {
            "user": [1] * 5,
            "item": [10, 11, 12, 13, 14],
            "rating": [4.0] * 5,
            "timestamp": [1, 2, 3, 3, 4],
        }
    )
    train, test, cutoff = temporal_split(ratings, 0.4)
    assert cutoff == {1: 3}
    assert sorted(train.item) == [10, 11]
    assert sorted(test.item) == [12, 13, 14]


def test_split_rejects_a_degenerate_fraction() -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        temporal_split(pd.DataFrame(columns=["user", "item", "rating", "timestamp"]), 1.0)


def test_user_text_uses_only_interactions_before_the_cutoff(data: Dataset) -> None:
    for user_id in data.user_codes()[:50]:
        text = data.user_text(user_id)
        for item_id in data.held_out_likes(user_id):
            if item_id not in data.liked_history(user_id):
                assert data.title(item_id) not in text.split("| genres")[0].split("; ")


def test_popularity_counts_only_training_interactions(data: Dataset) -> None:
    assert int(data.popularity.sum()) == len(data.train)
    only_in_test = set(data.test.item) - set(data.train.item)
    assert only_in_test
    assert all(data.popularity_bucket(m) == "unseen" for m in list(only_in_test)[:20])


def test_item_tags_exclude_tags_applied_after_the_taggers_cutoff(data: Dataset) -> None:
    late = data.tags[data.tags.timestamp >= data.tags.user.map(data.cutoff)]
    early = data.tags[data.tags.timestamp < data.tags.user.map(data.cutoff)]
    leaked = set(late.tag.str.strip().str.lower()) - set(early.tag.str.strip().str.lower())
    assert leaked
    for item_id in late.item.unique()[:100]:
        tags_part = [p for p in data.item_text(item_id).split(" | ") if p.startswith("tags: ")]
        words = set(tags_part[0][6:].split(", ")) if tags_part else set()
        assert not words & leaked


def test_item_text_has_title_genres_and_a_popularity_word(data: Dataset) -> None:
    text = data.item_text(1)
    assert text.startswith("Toy Story (1995) | Adventure, Animation")
    assert text.endswith("| blockbuster")
    assert data.year(1) == 1995
    assert data.popular_items(1) == [int(data.popularity.index[0])]


def test_history_override_builds_a_text_for_an_unknown_user(data: Dataset) -> None:
    text = data.user_text(history=[1, 2])
    assert text.startswith("likes: Jumanji (1995); Toy Story (1995)")
    with pytest.raises(NotFound, match="movie 999999999"):
        data.user_text(history=[999999999])


def test_unknown_ids_raise_not_found(data: Dataset) -> None:
    with pytest.raises(NotFound, match="user 0"):
        data.interacted_items(0)
    with pytest.raises(NotFound, match="movie -1"):
        data.title(-1)


def test_training_pairs_come_in_groups_and_never_pair_a_user_with_a_movie_they_rated(data: Dataset) -> None:
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
    for popular in (False, True):
        negatives = data.negatives(1, 50, rng, popular=popular)
        assert len(set(negatives)) == 50
        assert not set(negatives) & data.interacted_items(1)


def test_positive_threshold_is_four_stars(data: Dataset) -> None:
    user = data.user_codes()[0]
    history = data.history(user)
    assert data.liked_history(user) == [int(m) for m in history.item[history.rating >= POSITIVE_RATING]]
