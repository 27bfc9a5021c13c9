"""A catalog and its interactions as text: a leakage-free temporal split and the texts a
cross-encoder reads.

Every user's most recent interactions are held out (``holdout_fraction`` of them, by
timestamp). Anything derived from interactions — user texts, item popularity — is built from
the training side only, so an evaluated score never sees the future it is asked to predict.
Interactions that share the cutoff timestamp go to the held-out side, because a tie cannot be
ordered and leaking it would flatter the model.

Inside, users and items are dense integer codes (0..n-1, in the order of their sorted ids):
the indexes, ALS and the split work on arrays, whatever the user's ids look like. The ids a
platform uses (``LoadedData``'s, integers or strings) appear only at the edges, through
``item_code``/``item_id`` and ``user_code``/``user_id``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recserve_serving.errors import DataError, NotFound
from recserve_serving.loaded_data import LoadedData

if TYPE_CHECKING:
    from recserve_serving.dataspec import DataSpec

HISTORY_TITLES = 5
TOP_CATEGORIES = 3

# Share of training users who interacted with the item, highest first; relative so that the
# words keep their meaning on a larger or smaller catalog.
_POPULARITY_BUCKETS = (
    (0.25, "blockbuster"),
    (0.08, "hit"),
    (0.025, "popular"),
    (0.008, "known"),
    (0.0, "niche"),
)

ExternalId = int | str
"""An id as the platform writes it: int64 when its column holds integers, else a string."""


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example: a user text, an item text and a 0/1 label."""

    user_text: str
    item_text: str
    label: float


def _codes(ids: pd.Series) -> tuple[list[ExternalId], dict[Hashable, int]]:
    ordered = sorted(ids.unique().tolist())
    return ordered, {external: code for code, external in enumerate(ordered)}


def _normalized(value: object, integers: bool) -> object:
    """A request's id in the catalog's id type: ``"42"`` finds item 42 of an integer catalog and
    ``42`` finds item ``"42"`` of a string one, so clients need not know which kind it is."""
    if integers and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if not integers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@dataclass
class Dataset:
    """A loaded catalog and its interactions, split by time per user, with the text views of
    users and items."""

    loaded: LoadedData
    holdout_fraction: float = 0.2
    interactions: pd.DataFrame = field(init=False)
    """Every interaction as codes: ``user``, ``item``, ``weight``, ``timestamp`` and ``liked``."""
    train: pd.DataFrame = field(init=False)
    test: pd.DataFrame = field(init=False)
    cutoff: dict[int, int] = field(init=False)
    popularity: pd.Series = field(init=False)

    def __post_init__(self) -> None:
        items, interactions = self.loaded.items, self.loaded.interactions
        self._external_items, self._item_codes = _codes(items.item_id)
        self._external_users, self._user_codes = _codes(interactions.user_id)
        self._integer_items = pd.api.types.is_integer_dtype(items.item_id)
        self._integer_users = pd.api.types.is_integer_dtype(interactions.user_id)
        by_code = items.assign(code=items.item_id.map(self._item_codes)).sort_values("code")
        self._titles: list[str] = by_code.title.astype(str).tolist()
        self._texts: list[str] = by_code.text.astype(str).tolist()
        self._categories: list[list[str]] = [list(c) for c in by_code.categories]
        item_codes = interactions.item_id.map(self._item_codes)
        if item_codes.isna().any():
            raise DataError("interactions name items the catalog lacks; load data through tabular.load_data")
        self.interactions = pd.DataFrame(
            {
                "user": interactions.user_id.map(self._user_codes).to_numpy(dtype=np.int64),
                "item": item_codes.to_numpy(dtype=np.int64),
                "weight": interactions.weight.to_numpy(dtype=np.float64),
                "timestamp": interactions.timestamp.to_numpy(dtype=np.int64),
            }
        )
        self.interactions["liked"] = self.interactions.weight >= self.loaded.positive_threshold
        self.train, self.test, self.cutoff = temporal_split(self.interactions, self.holdout_fraction)
        self.popularity = self.train.groupby("item").size().sort_values(ascending=False)
        self._bucket = self._popularity_buckets()
        self._train_by_user = {
            int(u): frame.sort_values("timestamp", kind="stable") for u, frame in self.train.groupby("user")
        }
        self._interacted: dict[int, set[int]] = {
            int(u): set(map(int, frame.item)) for u, frame in self.interactions.groupby("user")
        }
        self.item_ids = np.arange(len(self._external_items), dtype=np.int64)

    @property
    def digest(self) -> str:
        return self.loaded.digest

    def _popularity_buckets(self) -> dict[int, str]:
        users = max(1, self.train.user.nunique())
        buckets = {}
        for item, count in self.popularity.items():
            share = count / users
            word = "obscure" if count < 2 else next(w for limit, w in _POPULARITY_BUCKETS if share >= limit)
            buckets[int(item)] = word
        return buckets

    def item_code(self, item_id: object) -> int:
        """The code of the platform's item id; NotFound names the catalog's size."""
        try:
            return self._item_codes[_normalized(item_id, self._integer_items)]
        except (KeyError, TypeError):
            raise NotFound(
                f"item {item_id!r} is not in the catalog ({len(self._item_codes)} items)"
            ) from None

    def item_id(self, item: int) -> ExternalId:
        """The platform's id of an item code."""
        return self._external_items[int(item)]

    def user_code(self, user_id: object) -> int:
        try:
            return self._user_codes[_normalized(user_id, self._integer_users)]
        except (KeyError, TypeError):
            raise NotFound(
                f"user {user_id!r} has no interactions in the data ({len(self._user_codes)} users)"
            ) from None

    def user_id(self, user: int) -> ExternalId:
        return self._external_users[int(user)]

    def title(self, item: int) -> str:
        self._check(item)
        return self._titles[int(item)]

    def categories(self, item: int) -> list[str]:
        self._check(item)
        return self._categories[int(item)]

    def _check(self, item: int) -> None:
        if not 0 <= int(item) < len(self._titles):
            raise NotFound(f"item code {item} is out of range ({len(self._titles)} items)")

    def popularity_bucket(self, item: int) -> str:
        return self._bucket.get(int(item), "unseen")

    def user_codes(self) -> list[int]:
        """Users with training interactions."""
        return sorted(self._train_by_user)

    def interacted_items(self, user: int) -> set[int]:
        """Everything the user ever interacted with, both split sides: never a candidate or a
        negative."""
        try:
            return self._interacted[int(user)]
        except KeyError:
            raise NotFound(f"user code {user} is not in the data ({len(self._interacted)} users)") from None

    def popular_items(self, k: int | None = None) -> list[int]:
        """Items by training interaction count, most first."""
        codes = [int(m) for m in self.popularity.index]
        return codes if k is None else codes[:k]

    def history(self, user: int) -> pd.DataFrame:
        """The user's training interactions (before their cutoff), oldest first."""
        self.interacted_items(user)
        return self._train_by_user.get(int(user), self.train.iloc[:0])

    def liked_history(self, user: int) -> list[int]:
        frame = self.history(user)
        return [int(m) for m in frame.item[frame.liked]]

    def user_text(self, user: int | None = None, history: Sequence[int] | None = None) -> str:
        """The user as their most recent liked titles and their top categories.

        ``history`` (liked item codes, oldest first) replaces the stored training history,
        which is how serving scores a user the split never saw and how training builds a
        text from only what preceded a positive.
        """
        if history is None:
            if user is None:
                raise ValueError("user_text needs a user or a history")
            history = self.liked_history(user)
        recent = [int(m) for m in history][-HISTORY_TITLES:][::-1]
        categories = Counter(c for m in recent for c in self.categories(m))
        parts = [
            "likes: " + "; ".join(self.title(m) for m in recent) if recent else "likes: nothing yet",
        ]
        if categories:
            parts.append("categories: " + ", ".join(c for c, _ in categories.most_common(TOP_CATEGORIES)))
        return " | ".join(parts)

    def item_text(self, item: int) -> str:
        """The catalog's text (its template) and a coarse popularity word.

        A cross-encoder only sees text; without a popularity word it cannot learn the prior
        that most interactions go to popular items, the strongest single signal in most
        catalogs (the most-popular baseline). A handful of words rather than a raw count keeps
        the vocabulary small enough to learn in a few hundred steps.
        """
        self._check(item)
        return f"{self._texts[int(item)]} | {self.popularity_bucket(item)}"

    def negatives(self, user: int, n: int, rng: np.random.Generator, *, popular: bool = False) -> list[int]:
        """``n`` distinct items the user never interacted with, uniformly or in proportion to
        popularity."""
        interacted = self.interacted_items(user)
        if popular:
            pool = self.popularity.index.to_numpy()
            weights = self.popularity.to_numpy(dtype=np.float64)
        else:
            pool = self.item_ids
            weights = np.ones(len(pool))
        mask = ~np.isin(pool, np.fromiter(interacted, dtype=np.int64, count=len(interacted)))
        pool, weights = pool[mask], weights[mask]
        take = min(n, len(pool))
        chosen = rng.choice(pool, size=take, replace=False, p=weights / weights.sum())
        return [int(m) for m in chosen]

    def training_pairs(
        self, n: int, rng: np.random.Generator, *, negatives_per_positive: int = 1
    ) -> list[Pair]:
        """Labelled pairs from the training side: positives are likes.

        The user text for a positive is built only from likes *before* that positive, so
        the model is trained on the same question it is evaluated on (predict the next
        like from the past) and never learns to find a title in its own history. Half of
        the negatives are uniform (teaching the popularity prior), half popularity-weighted
        (forcing it to look at the user as well).
        """
        positives: list[tuple[int, np.ndarray, int]] = []
        for user, frame in self._train_by_user.items():
            liked = frame.item[frame.liked].to_numpy()
            positives.extend((user, liked[:i], int(liked[i])) for i in range(1, len(liked)))
        if not positives:
            raise DataError("no training positives: every user's likes fall in the held-out side")
        pairs: list[Pair] = []
        per_round = 1 + negatives_per_positive
        for index in rng.choice(len(positives), size=max(1, n // per_round), replace=True):
            user, past, item = positives[index]
            user_text = self.user_text(user, history=past.tolist())
            pairs.append(Pair(user_text, self.item_text(item), 1.0))
            for k in range(negatives_per_positive):
                (negative,) = self.negatives(user, 1, rng, popular=k % 2 == 1 or rng.random() < 0.5)
                pairs.append(Pair(user_text, self.item_text(negative), 0.0))
        return pairs[:n]

    def held_out_likes(self, user: int) -> list[int]:
        frame = self.test[self.test.user == user]
        return [int(m) for m in frame.item[frame.liked]]


def load_dataset(spec: DataSpec, *, holdout_fraction: float = 0.2, until: int | None = None) -> Dataset:
    """``spec.data``'s tables, read and checked (``DataError`` names what is wrong), as a Dataset.

    ``until`` (Unix seconds) keeps only interactions at or before it: a model trained "as of" a
    past moment, which a retrain then brings up to date with what came later."""
    from recserve_serving.tabular import load_data

    loaded = load_data(spec)
    return Dataset(loaded if until is None else interactions_until(loaded, until), holdout_fraction)


def interactions_until(loaded: LoadedData, until: int) -> LoadedData:
    """``loaded`` without the interactions after ``until``; its digest says where it was cut."""
    import hashlib
    from dataclasses import replace

    kept = loaded.interactions[loaded.interactions.timestamp <= until].reset_index(drop=True)
    if kept.empty:
        first = int(loaded.interactions.timestamp.min())
        raise DataError(
            f"no interactions at or before {until} (the data starts at {first}): choose a later --until"
        )
    digest = hashlib.sha256(f"{loaded.digest}\nuntil={int(until)}".encode()).hexdigest()
    return replace(loaded, interactions=kept, digest=digest)


def temporal_split(
    interactions: pd.DataFrame, holdout_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, int]]:
    """Per user, the last ``holdout_fraction`` of interactions by time (at least one) are held out."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ordered = interactions.sort_values(["user", "timestamp"], kind="stable")
    sizes = ordered.groupby("user").timestamp.transform("size")
    rank = ordered.groupby("user").cumcount()
    n_test = np.maximum(1, np.rint(sizes * holdout_fraction)).astype(int)
    first_test = ordered[rank == sizes - n_test]
    cutoff = dict(zip(first_test.user.astype(int), first_test.timestamp.astype(int), strict=True))
    held = ordered.timestamp >= ordered.user.map(cutoff)
    return ordered[~held].reset_index(drop=True), ordered[held].reset_index(drop=True), cutoff
