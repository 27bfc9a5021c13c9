"""What a retrain learns from: the platform's interactions plus the feedback log, split by time.

One table of interactions, whoever recorded them: the base rows of ``spec.data`` (their user
ids pseudonymized with the key the routers use, so a user's base rows and logged events are one
user) and the logged events mapped onto weights. Erased users are dropped from both: an erasure
removes a user from every future training set, not only from the log.

The split is global in time, not per user, because the question a retrain answers is "is the
new version better on what happens next": ``cutoff`` is the parent version's newest trained
interaction; everything after it is new (within ``window_days`` of the newest, when set); the
newest ``holdout_fraction`` of the new interactions is held out to compare parent and child;
the rest is fine-tuned on, with a ``replay_fraction`` share of pairs drawn from before the
cutoff so that the model does not forget the older catalog. Ties at the hold-out boundary go to
the held-out side (as in ``data.temporal_split``): a tie cannot be ordered, and leaking it would
flatter the new version.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recserve_serving.data import Dataset, ExternalId, Pair
from recserve_serving.errors import RecserveError
from recserve_serving.evaluate import EvalCase, EvalSet
from recserve_serving.loaded_data import LoadedData

DAY_SECONDS = 86_400
COLUMNS = ("user_id", "item_id", "timestamp", "weight")
Pseudonymize = Callable[[ExternalId], str]


class NothingToRetrain(RecserveError):
    """Too little new data for a retrain to learn from or be judged on: a normal, recorded outcome."""


def not_liked_weight(threshold: float) -> float:
    """A weight below the like threshold: 0 for ratings (threshold 4), -1 for implicit data
    (threshold 0, where weight 0 would itself count as a like)."""
    return min(0.0, threshold - 1.0)


def event_weight(event: Mapping[str, Any], threshold: float) -> float | None:
    """The interaction weight of one logged event, or None when it cannot be one.

    rating: its value (a like when at or above the threshold, as in the base data); click: the
    threshold (a like); view and skip: seen, not liked (``not_liked_weight``), so the item is
    never drawn as a negative for that user and never counts as a like.
    """
    kind = event.get("event")
    if kind == "rating":
        value = event.get("value")
        return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    if kind == "click":
        return float(threshold)
    if kind in ("view", "skip"):
        return not_liked_weight(threshold)
    return None


@dataclass(frozen=True)
class Combined:
    """Base rows and logged events as one pseudonymized table, and what was dropped on the way."""

    interactions: pd.DataFrame
    """``user_id`` (pseudonym), ``item_id`` (the catalog's type), ``timestamp``, ``weight``, ``logged``."""
    logged_events: int
    duplicates: int
    unknown_items: int
    malformed: int
    erased_rows: int
    feedback_digest: str


def _item_normalizer(items: pd.Series) -> Callable[[Any], ExternalId | None]:
    known = set(items.tolist())
    integers = pd.api.types.is_integer_dtype(items)

    def normalize(value: Any) -> ExternalId | None:
        if integers and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        elif not integers and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return value if value in known else None

    return normalize


def logged_interactions(
    events: Iterable[Mapping[str, Any]], items: pd.Series, threshold: float
) -> tuple[pd.DataFrame, int, int]:
    """The feedback events as interaction rows, plus how many named items outside the catalog
    (the catalog changed, or a client sent a bad id) and how many were malformed."""
    normalize = _item_normalizer(items)
    rows: list[tuple[str, ExternalId, int, float]] = []
    unknown = malformed = 0
    for event in events:
        weight = event_weight(event, threshold)
        user, ts = event.get("userId"), event.get("ts")
        if weight is None or user is None or not isinstance(ts, int | float) or not math.isfinite(ts):
            malformed += 1
            continue
        item = normalize(event.get("itemId"))
        if item is None:
            unknown += 1
            continue
        rows.append((str(user), item, int(ts), weight))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["timestamp"] = frame.timestamp.astype(np.int64)
    frame["weight"] = frame.weight.astype(np.float64)
    return frame, unknown, malformed


def _digest(frame: pd.DataFrame) -> str:
    """sha256 of the logged rows a retrain used, in a canonical order: equal logs, equal digests."""
    ordered = frame.sort_values(["user_id", "timestamp", "weight"], kind="stable")
    rows = [
        [str(u), str(i), int(t), float(w)]
        for u, i, t, w in zip(
            ordered.user_id, ordered.item_id, ordered.timestamp, ordered.weight, strict=True
        )
    ]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def combine(
    loaded: LoadedData,
    events: Iterable[Mapping[str, Any]],
    erased: frozenset[str],
    pseudonymize: Pseudonymize,
) -> Combined:
    """Base interactions (users pseudonymized) and logged events, less erased users.

    The log is at-least-once, so events are deduplicated by (user, item, ts); of a duplicate
    key the highest weight stays (a view and a click in the same second are a click). Base rows
    are not deduplicated: they are the platform's own table, which ``spec.data`` already checked.
    Every event of an erased pseudonym is dropped, even one logged after the erasure: the
    erasure is the user's standing request, and a retrain is no place to decide it has lapsed.
    """
    threshold = loaded.positive_threshold
    base = loaded.interactions.loc[:, list(COLUMNS)].copy()
    pseudonyms = {user: pseudonymize(user) for user in base.user_id.unique().tolist()}
    base["user_id"] = base.user_id.map(pseudonyms).astype(object)
    base["logged"] = False
    events = list(events)
    logged, unknown, malformed = logged_interactions(events, loaded.items.item_id, threshold)
    before = len(logged)
    logged = (
        logged.sort_values("weight", ascending=False, kind="stable")
        .drop_duplicates(["user_id", "item_id", "timestamp"])
        .sort_values("timestamp", kind="stable")
    )
    duplicates = before - len(logged)
    logged["logged"] = True
    erased_base = base.user_id.isin(erased)
    erased_logged = logged.user_id.isin(erased)
    kept_logged = logged[~erased_logged]
    frame = pd.concat([base[~erased_base], kept_logged], ignore_index=True)
    frame["timestamp"] = frame.timestamp.astype(np.int64)
    frame["weight"] = frame.weight.astype(np.float64)
    return Combined(
        interactions=frame.sort_values("timestamp", kind="stable").reset_index(drop=True),
        logged_events=len(events),
        duplicates=duplicates,
        unknown_items=unknown,
        malformed=malformed,
        erased_rows=int(erased_base.sum() + erased_logged.sum()),
        feedback_digest=_digest(kept_logged),
    )


@dataclass(frozen=True)
class Split:
    """The combined table cut at ``cutoff`` and at the hold-out boundary."""

    cutoff: int
    window_start: int
    holdout_start: int
    old: pd.DataFrame
    """At or before the cutoff: the replay pool and everyone's earlier history."""
    train: pd.DataFrame
    """New, before the hold-out boundary: what the child fine-tunes on."""
    holdout: pd.DataFrame
    """The newest new ones: parent and child are judged on these."""
    skipped: pd.DataFrame = field(repr=False)
    """After the cutoff but before the window: history, neither trained on nor held out."""

    @property
    def new_count(self) -> int:
        return len(self.train) + len(self.holdout)


def split(
    frame: pd.DataFrame,
    cutoff: int,
    *,
    holdout_fraction: float,
    min_new_interactions: int,
    window_days: float | None = None,
) -> Split:
    """Cut ``frame`` (``combine``'s table) by time; NothingToRetrain says why when it cannot."""
    if frame.empty:
        raise NothingToRetrain("the data holds no interactions at all")
    newest = int(frame.timestamp.max())
    window_start = cutoff + 1
    if window_days is not None:
        window_start = max(window_start, newest - math.floor(window_days * DAY_SECONDS))
    after = frame.timestamp > cutoff
    new = frame[frame.timestamp >= window_start].sort_values("timestamp", kind="stable")
    if len(new) < min_new_interactions:
        newest_text = (
            f"the newest is at {newest}" if newest > cutoff else f"nothing after it (newest {newest})"
        )
        raise NothingToRetrain(
            f"{len(new)} new interactions since the data cutoff {cutoff}"
            + (f" within the last {window_days} days" if window_days is not None else "")
            + f" ({newest_text}); spec.training.minNewInteractions asks for {min_new_interactions}"
        )
    held = max(1, round(len(new) * holdout_fraction))
    holdout_start = int(new.timestamp.iloc[len(new) - held])
    in_holdout = new.timestamp >= holdout_start
    train, holdout = new[~in_holdout], new[in_holdout]
    if train.empty:
        raise NothingToRetrain(
            f"all {len(new)} new interactions share the newest timestamps from {holdout_start}, so the "
            "hold-out takes every one and none is left to fine-tune on; wait for more feedback"
        )
    return Split(
        cutoff=cutoff,
        window_start=window_start,
        holdout_start=holdout_start,
        old=frame[~after].reset_index(drop=True),
        train=train.reset_index(drop=True),
        holdout=holdout.reset_index(drop=True),
        skipped=frame[after & (frame.timestamp < window_start)].reset_index(drop=True),
    )


def visible_dataset(loaded: LoadedData, parts: Split, digest: str) -> Dataset:
    """A Dataset of everything except the held-out slice, keyed by pseudonyms: the item texts'
    popularity words and every user's history come from it, so nothing of the slice leaks into
    what the slice is judged with."""
    visible = pd.concat([parts.old, parts.skipped, parts.train], ignore_index=True)
    return Dataset(
        LoadedData(
            items=loaded.items,
            interactions=visible.loc[:, list(COLUMNS)].reset_index(drop=True),
            positive_threshold=loaded.positive_threshold,
            digest=digest,
        )
    )


class _Likes:
    """Each user's liked items in time order, to build a user text from only what came before."""

    def __init__(self, data: Dataset) -> None:
        liked = data.interactions[data.interactions.liked].sort_values(["user", "timestamp"], kind="stable")
        self._by_user = {
            int(u): (g.timestamp.to_numpy(), g.item.to_numpy()) for u, g in liked.groupby("user")
        }

    def before(self, user: int, ts: int) -> list[int]:
        times, items = self._by_user.get(user, (np.empty(0, np.int64), np.empty(0, np.int64)))
        return [int(m) for m in items[: np.searchsorted(times, ts, side="left")]]


def _positives(data: Dataset, likes: _Likes, rows: pd.DataFrame) -> list[tuple[int, int, int]]:
    """(user code, item code, ts) of the liked rows that have at least one earlier like: the same
    question ``Dataset.training_pairs`` asks (predict the next like from the past)."""
    liked = rows[rows.weight >= data.loaded.positive_threshold]
    out = []
    for user_id, item_id, ts in zip(liked.user_id, liked.item_id, liked.timestamp, strict=True):
        user = data.user_code(user_id)
        if likes.before(user, int(ts)):
            out.append((user, data.item_code(item_id), int(ts)))
    return out


@dataclass(frozen=True)
class TrainingPairs:
    pairs: list[Pair]
    new_groups: int
    replay_groups: int
    new_positives: int
    replay_positives: int


def training_pairs(
    data: Dataset,
    parts: Split,
    n_pairs: int | None,
    rng: np.random.Generator,
    *,
    replay_fraction: float,
    negatives_per_positive: int = 3,
) -> TrainingPairs:
    """Groups of one positive and its negatives (what ``train.fit``'s listwise loss takes):
    ``replay_fraction`` of the groups from likes at or before the cutoff, the rest from the new
    likes. Negatives are items the user never interacted with, half uniform, half by popularity.

    ``n_pairs`` pairs drawn with replacement, or with None each new like once and as many
    distinct replayed likes as keep the replay share (what DP-SGD needs: no example twice).
    """
    likes = _Likes(data)
    new = _positives(data, likes, parts.train)
    if not new:
        raise NothingToRetrain(
            f"none of the {len(parts.train)} new interactions to fine-tune on is a like that follows an "
            "earlier like of the same user; wait for more feedback"
        )
    old = _positives(data, likes, parts.old) if replay_fraction > 0 else []
    group = 1 + negatives_per_positive
    if n_pairs is None:
        replay = min(len(old), round(len(new) * replay_fraction / (1 - replay_fraction)))
        chosen = list(new) + [old[i] for i in rng.choice(len(old), size=replay, replace=False)]
        order = rng.permutation(len(chosen))
        chosen = [chosen[i] for i in order]
        new_groups = len(new)
    else:
        groups = max(1, n_pairs // group)
        replay = round(groups * replay_fraction) if old else 0
        new_groups = groups - replay
        chosen = [new[i] for i in rng.choice(len(new), size=new_groups, replace=True)]
        chosen += [old[i] for i in rng.choice(len(old), size=replay, replace=True)] if replay else []
    pairs: list[Pair] = []
    for user, item, ts in chosen:
        user_text = data.user_text(user, history=likes.before(user, ts))
        pairs.append(Pair(user_text, data.item_text(item), 1.0))
        for k in range(negatives_per_positive):
            (negative,) = data.negatives(user, 1, rng, popular=k % 2 == 1 or rng.random() < 0.5)
            pairs.append(Pair(user_text, data.item_text(negative), 0.0))
    return TrainingPairs(pairs, new_groups, replay, len(new), len(old))


def holdout_eval_set(
    data: Dataset,
    parts: Split,
    *,
    users: int = 100,
    candidates: int = 50,
    seed: int = 0,
    max_relevant: int = 10,
) -> EvalSet:
    """``evaluate.eval_set``'s protocol on the held-out slice: users with a like in the slice and
    a like before it; their text from their likes before the slice; candidates their likes in
    the slice plus popularity-weighted items they never touched (before or in the slice)."""
    rng = np.random.default_rng(seed)
    threshold = data.loaded.positive_threshold
    liked = parts.holdout[parts.holdout.weight >= threshold]
    touched = {str(u): set(g.item_id.tolist()) for u, g in parts.holdout.groupby("user_id")}
    eligible = []
    for user_id, frame in liked.groupby("user_id"):
        if not _known(data, str(user_id)):
            continue  # a user first seen in the slice: no past to read, as eval_set requires
        user = data.user_code(user_id)
        history = _all_likes(data, user)
        if history:
            eligible.append((str(user_id), user, frame, history))
    if not eligible:
        raise NothingToRetrain(
            f"the held-out slice ({len(parts.holdout)} interactions from {parts.holdout_start}) has no user "
            "with a like in it and a like before it, so parent and child cannot be compared; wait for "
            "more feedback or raise spec.training.holdoutFraction"
        )
    picked = sorted(rng.choice(len(eligible), size=min(users, len(eligible)), replace=False).tolist())
    pool = data.popularity.index.to_numpy()
    weights = data.popularity.to_numpy(dtype=np.float64)
    cases = []
    for index in picked:
        user_id, user, frame, history = eligible[index]
        relevant = list(dict.fromkeys(data.item_code(m) for m in frame.sort_values("timestamp").item_id))
        relevant = relevant[:max_relevant]
        seen = data.interacted_items(user) | {data.item_code(m) for m in touched[user_id]}
        mask = ~np.isin(pool, np.fromiter(seen, dtype=np.int64, count=len(seen)))
        take = min(max(0, candidates - len(relevant)), int(mask.sum()))
        negatives = rng.choice(pool[mask], size=take, replace=False, p=weights[mask] / weights[mask].sum())
        candidates_pool = np.array(relevant + [int(m) for m in negatives])
        rng.shuffle(candidates_pool)
        cases.append(
            EvalCase(
                user,
                data.user_text(user, history=history),
                tuple(int(m) for m in candidates_pool),
                frozenset(relevant),
            )
        )
    return EvalSet(tuple(cases), users, candidates, seed)


def _known(data: Dataset, user_id: str) -> bool:
    try:
        data.user_code(user_id)
    except RecserveError:
        return False
    return True


def _all_likes(data: Dataset, user: int) -> list[int]:
    """Every like of the user outside the slice, oldest first (``Dataset.history`` is only its own
    per-user training side; here everything before the slice may be read)."""
    frame = data.interactions[(data.interactions.user == user) & data.interactions.liked]
    return [int(m) for m in frame.sort_values("timestamp", kind="stable").item]
