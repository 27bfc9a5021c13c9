"""The retrain's data: base rows joined with logged events by pseudonym, erased users dropped,
cut by time at the parent's cutoff; pairs and the held-out evaluation built from the cut."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from recserve_serving.loaded_data import LoadedData
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.retrain_data import (
    NothingToRetrain,
    combine,
    event_weight,
    holdout_eval_set,
    split,
    training_pairs,
    visible_dataset,
)

pytestmark = pytest.mark.unit

KEY = b"k" * 32
ITEMS = 40
USERS = 6


@pytest.fixture
def pseudonym() -> Pseudonymizer:
    return Pseudonymizer(KEY)


def _loaded(rows: list[tuple[int, int, int, float]], threshold: float = 4.0) -> LoadedData:
    items = pd.DataFrame(
        {
            "item_id": np.arange(ITEMS, dtype=np.int64),
            "title": [f"Movie {i}" for i in range(ITEMS)],
            "text": [f"Movie {i} about topic {i % 4}" for i in range(ITEMS)],
            "categories": [[f"g{i % 3}"] for i in range(ITEMS)],
        }
    )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "weight"])
    frame = frame.astype(
        {"user_id": np.int64, "item_id": np.int64, "timestamp": np.int64, "weight": np.float64}
    )
    return LoadedData(items, frame, threshold, "digest-of-base")


def _base() -> LoadedData:
    """Six users, each liking five items of their own (u*5..u*5+4) at t = 10..50 (user u at t + u)."""
    rows = [(u, u * 5 + k, 10 * (k + 1) + u, 5.0) for u in range(USERS) for k in range(5)]
    return _loaded(rows)


def _event(user: str, item: int | str, ts: float, event: str = "click", value: float | None = None) -> dict:
    return {"userId": user, "itemId": item, "event": event, "value": value, "ts": ts, "received": ts + 1}


def test_events_map_onto_weights_around_the_threshold() -> None:
    assert event_weight({"event": "rating", "value": 3.5}, 4.0) == 3.5
    assert event_weight({"event": "click"}, 4.0) == 4.0
    assert event_weight({"event": "view"}, 4.0) == 0.0
    assert event_weight({"event": "skip"}, 4.0) == 0.0
    # Implicit data: every interaction of the table is a like (threshold 0), a view must not be.
    assert event_weight({"event": "view"}, 0.0) == -1.0
    assert event_weight({"event": "click"}, 0.0) == 0.0
    assert event_weight({"event": "rating", "value": None}, 4.0) is None
    assert event_weight({"event": "purchase"}, 4.0) is None


def test_base_users_are_pseudonymized_and_join_their_logged_events(pseudonym) -> None:
    combined = combine(_base(), [_event(pseudonym.user(2), 7, 200)], frozenset(), pseudonym.user)
    frame = combined.interactions
    assert not frame.user_id.isin(range(USERS)).any()
    user_rows = frame[frame.user_id == pseudonym.user(2)]
    assert len(user_rows) == 6 and user_rows.logged.sum() == 1
    assert pseudonym.user("2") == pseudonym.user(2)


def test_at_least_once_duplicates_collapse_and_the_strongest_event_stays(pseudonym) -> None:
    user = pseudonym.user(1)
    events = [
        _event(user, 3, 200, "view"),
        _event(user, 3, 200, "click"),
        _event(user, 3, 200, "click"),
        _event(user, "4", 201, "rating", 2.0),
        _event(user, 999, 202),
        {"userId": user, "itemId": 5, "event": "rating", "value": None, "ts": 203},
    ]
    combined = combine(_base(), events, frozenset(), pseudonym.user)
    logged = combined.interactions[combined.interactions.logged]
    assert sorted(zip(logged.item_id, logged.weight, strict=True)) == [(3, 4.0), (4, 2.0)]
    assert (combined.duplicates, combined.unknown_items, combined.malformed) == (2, 1, 1)
    assert combined.logged_events == len(events)


def test_an_erased_user_is_absent_from_everything_training_reads(pseudonym) -> None:
    erased = pseudonym.user(3)
    # Each user's logged clicks are on their own base items and one item no one else touches (30 + u).
    events = [
        _event(pseudonym.user(u), u * 5 + k if k < 5 else 30 + u, 100 + 10 * k + u)
        for u in range(USERS)
        for k in range(8)
    ]
    combined = combine(_base(), events, frozenset({erased}), pseudonym.user)
    assert erased not in set(combined.interactions.user_id)
    assert combined.erased_rows == 5 + 8  # base rows and logged events
    parts = split(combined.interactions, 60, holdout_fraction=0.25, min_new_interactions=5)
    for frame in (parts.old, parts.train, parts.holdout, parts.skipped):
        assert erased not in set(frame.user_id)
    data = visible_dataset(_base(), parts, "d")
    with pytest.raises(Exception, match="has no interactions"):
        data.user_code(erased)
    pairs = training_pairs(data, parts, 64, np.random.default_rng(0), replay_fraction=0.5).pairs
    own = [*range(15, 20), 33]
    assert pairs and not any(re.search(rf"\bMovie {m}\b", p.user_text) for p in pairs for m in own)
    assert not {data.item_code(m) for m in own} & set(data.popularity.index)


def _timeline(pseudonym: Pseudonymizer, count: int, start: int = 100) -> pd.DataFrame:
    events = [_event(pseudonym.user(i % USERS), (i * 7) % ITEMS, start + i) for i in range(count)]
    return combine(_base(), events, frozenset(), pseudonym.user).interactions


def test_new_holdout_and_history_split_by_time(pseudonym) -> None:
    frame = _timeline(pseudonym, 40)  # logged at t = 100..139, base at t <= 55
    parts = split(frame, 60, holdout_fraction=0.25, min_new_interactions=10)
    assert parts.new_count == 40 and len(parts.holdout) == 10 and len(parts.train) == 30
    assert parts.holdout_start == 130 and parts.holdout.timestamp.min() == 130
    assert parts.train.timestamp.max() == 129 and parts.train.timestamp.min() == 100
    assert len(parts.old) == len(frame) - 40 and parts.old.timestamp.max() <= 60
    # The parent's cutoff moves the start of what is new.
    assert split(frame, 119, holdout_fraction=0.25, min_new_interactions=10).new_count == 20


def test_ties_at_the_holdout_boundary_are_held_out(pseudonym) -> None:
    user = pseudonym.user(0)
    events = [_event(user, i, 100 + min(i, 7)) for i in range(10)]  # items 7, 8, 9 share t = 107
    frame = combine(_base(), events, frozenset(), pseudonym.user).interactions
    parts = split(frame, 60, holdout_fraction=0.2, min_new_interactions=1)
    assert sorted(parts.holdout.item_id) == [7, 8, 9]
    assert len(parts.train) == 7


def test_window_days_keeps_only_the_newest_days(pseudonym) -> None:
    day = 86_400
    events = [_event(pseudonym.user(i % USERS), i % ITEMS, 10 * day + i * day // 2) for i in range(20)]
    frame = combine(_base(), events, frozenset(), pseudonym.user).interactions
    newest = int(frame.timestamp.max())
    parts = split(frame, 60, holdout_fraction=0.2, min_new_interactions=1, window_days=3)
    assert parts.window_start == newest - 3 * day
    assert parts.train.timestamp.min() >= newest - 3 * day
    assert parts.new_count == 7  # t = newest - 3d .. newest in half days
    assert len(parts.skipped) == 13


def test_too_few_new_interactions_is_a_recorded_stop_not_a_crash(pseudonym) -> None:
    frame = _timeline(pseudonym, 12)
    with pytest.raises(NothingToRetrain, match=r"12 new interactions since the data cutoff 60.*asks for 50"):
        split(frame, 60, holdout_fraction=0.2, min_new_interactions=50)
    with pytest.raises(NothingToRetrain, match="nothing after it"):
        split(frame, 10_000, holdout_fraction=0.2, min_new_interactions=1)


def test_pairs_replay_the_old_share_and_read_only_earlier_likes(pseudonym) -> None:
    frame = _timeline(pseudonym, 60)
    parts = split(frame, 60, holdout_fraction=0.2, min_new_interactions=10)
    data = visible_dataset(_base(), parts, "d")
    built = training_pairs(data, parts, 400, np.random.default_rng(0), replay_fraction=0.25)
    assert (built.new_groups, built.replay_groups) == (75, 25)
    assert len(built.pairs) == 400
    assert [p.label for p in built.pairs[:8]] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    held_titles = {data.title(data.item_code(m)) for m in parts.holdout.item_id} - {
        data.title(data.item_code(m)) for m in pd.concat([parts.old, parts.train]).item_id
    }
    assert not any(t in p.user_text for p in built.pairs for t in held_titles)
    distinct = training_pairs(data, parts, None, np.random.default_rng(0), replay_fraction=0.25)
    assert distinct.new_groups == distinct.new_positives
    assert distinct.replay_groups == min(distinct.replay_positives, round(distinct.new_positives / 3))
    none = training_pairs(data, parts, 400, np.random.default_rng(0), replay_fraction=0.0)
    assert none.replay_groups == 0 and none.new_groups == 100


def test_holdout_eval_set_ranks_held_out_likes_among_untouched_items(pseudonym) -> None:
    frame = _timeline(pseudonym, 60)
    parts = split(frame, 60, holdout_fraction=0.3, min_new_interactions=10)
    data = visible_dataset(_base(), parts, "d")
    evals = holdout_eval_set(data, parts, users=10, candidates=12)
    assert evals.cases
    for case in evals.cases:
        user_id = data.user_id(case.user_id)
        held = parts.holdout[parts.holdout.user_id == user_id]
        assert {data.item_id(m) for m in case.relevant} <= set(held.item_id)
        negatives = set(case.candidates) - case.relevant
        assert not negatives & data.interacted_items(case.user_id)
        assert not {data.item_id(m) for m in negatives} & set(held.item_id)


def test_a_slice_without_a_judgeable_user_stops_with_its_reason(pseudonym) -> None:
    newcomer = pseudonym.user("newcomer")
    events = [_event(pseudonym.user(0), i, 100 + i) for i in range(8)] + [_event(newcomer, 20, 200)]
    frame = combine(_base(), events, frozenset(), pseudonym.user).interactions
    parts = split(frame, 60, holdout_fraction=0.1, min_new_interactions=1)
    data = visible_dataset(_base(), parts, "d")
    with pytest.raises(NothingToRetrain, match="no user with a like in it and a like before it"):
        holdout_eval_set(data, parts)
