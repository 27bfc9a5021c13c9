"""MovieLens as text: a leakage-free temporal split and the texts a cross-encoder reads.

Every user's most recent interactions are held out (``holdout_fraction`` of them, by
timestamp). Anything derived from interactions — user texts, item popularity, item tags —
is built from the training side only, so an evaluated score never sees the future it is
asked to predict. Interactions that share the cutoff timestamp go to the held-out side,
because a tie cannot be ordered and leaking it would flatter the model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recserve_serving.errors import NotFound, RecserveError
from recserve_serving.paths import movielens_dir

POSITIVE_RATING = 4.0
HISTORY_TITLES = 5
TOP_GENRES = 3
ITEM_TAGS = 3
USER_TAGS = 3

# Share of training users who rated the movie, highest first; relative so that the words
# keep their meaning on a larger or smaller MovieLens.
_POPULARITY_BUCKETS = (
    (0.25, "blockbuster"),
    (0.08, "hit"),
    (0.025, "popular"),
    (0.008, "known"),
    (0.0, "niche"),
)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class DataError(RecserveError):
    """The MovieLens files are missing or malformed."""


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example: a user text, an item text and a 0/1 label."""

    user_text: str
    item_text: str
    label: float


@dataclass
class MovieLens:
    """MovieLens loaded once, split by time per user, with the text views of users and items."""

    ratings: pd.DataFrame
    movies: pd.DataFrame
    tags: pd.DataFrame
    holdout_fraction: float = 0.2
    train: pd.DataFrame = field(init=False)
    test: pd.DataFrame = field(init=False)
    cutoff: dict[int, int] = field(init=False)
    popularity: pd.Series = field(init=False)

    def __post_init__(self) -> None:
        self.train, self.test, self.cutoff = temporal_split(self.ratings, self.holdout_fraction)
        self.popularity = self.train.groupby("movieId").size().sort_values(ascending=False)
        self._titles: dict[int, str] = dict(zip(self.movies.movieId, self.movies.title, strict=True))
        self._genres: dict[int, list[str]] = {
            int(m): [] if g == "(no genres listed)" else g.split("|")
            for m, g in zip(self.movies.movieId, self.movies.genres, strict=True)
        }
        self._bucket = self._popularity_buckets()
        self._item_tags, self._user_tags = self._training_tags()
        self._train_by_user = {
            int(u): frame.sort_values("timestamp", kind="stable") for u, frame in self.train.groupby("userId")
        }
        self._rated: dict[int, set[int]] = {
            int(u): set(map(int, frame.movieId)) for u, frame in self.ratings.groupby("userId")
        }
        self.movie_ids = np.array(sorted(self._titles), dtype=np.int64)

    def _popularity_buckets(self) -> dict[int, str]:
        users = max(1, self.train.userId.nunique())
        buckets = {}
        for movie_id, count in self.popularity.items():
            share = count / users
            word = "obscure" if count < 2 else next(w for limit, w in _POPULARITY_BUCKETS if share >= limit)
            buckets[int(movie_id)] = word
        return buckets

    def _training_tags(self) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        cutoff = self.tags.userId.map(self.cutoff)
        # Tags by users without a cutoff (no ratings) cannot leak into any held-out interaction.
        before = self.tags[cutoff.isna() | (self.tags.timestamp < cutoff)]
        normalised = before.assign(tag=before.tag.astype(str).str.strip().str.lower())
        item_tags = {
            int(m): [t for t, _ in Counter(frame.tag).most_common(ITEM_TAGS)]
            for m, frame in normalised.groupby("movieId")
        }
        user_tags = {
            int(u): [t for t, _ in Counter(frame.tag).most_common(USER_TAGS)]
            for u, frame in normalised.groupby("userId")
        }
        return item_tags, user_tags

    def title(self, movie_id: int) -> str:
        try:
            return self._titles[int(movie_id)]
        except KeyError:
            raise NotFound(f"movie {movie_id} is not in MovieLens ({len(self._titles)} movies)") from None

    def year(self, movie_id: int) -> int | None:
        found = _YEAR.search(self.title(movie_id))
        return int(found.group(1)) if found else None

    def genres(self, movie_id: int) -> list[str]:
        self.title(movie_id)
        return self._genres[int(movie_id)]

    def popularity_bucket(self, movie_id: int) -> str:
        return self._bucket.get(int(movie_id), "unseen")

    def user_ids(self) -> list[int]:
        return sorted(self._train_by_user)

    def rated_movie_ids(self, user_id: int) -> set[int]:
        """Everything the user ever rated, both split sides: never a candidate or a negative."""
        try:
            return self._rated[int(user_id)]
        except KeyError:
            raise NotFound(f"user {user_id} is not in MovieLens ({len(self._rated)} users)") from None

    def popular_movie_ids(self, k: int | None = None) -> list[int]:
        """Movies by training interaction count, most first."""
        ids = [int(m) for m in self.popularity.index]
        return ids if k is None else ids[:k]

    def history(self, user_id: int) -> pd.DataFrame:
        """The user's training interactions (before their cutoff), oldest first."""
        self.rated_movie_ids(user_id)
        return self._train_by_user.get(int(user_id), self.train.iloc[:0])

    def liked_history(self, user_id: int) -> list[int]:
        frame = self.history(user_id)
        return [int(m) for m in frame.movieId[frame.rating >= POSITIVE_RATING]]

    def user_text(self, user_id: int | None = None, history: Sequence[int] | None = None) -> str:
        """The user as their most recent liked titles, their top genres and their own tags.

        ``history`` (liked movie ids, oldest first) replaces the stored training history,
        which is how serving scores a user the split never saw and how training builds a
        text from only what preceded a positive.
        """
        if history is None:
            if user_id is None:
                raise ValueError("user_text needs a user_id or a history")
            history = self.liked_history(user_id)
        recent = [int(m) for m in history][-HISTORY_TITLES:][::-1]
        genres = Counter(g for m in recent for g in self.genres(m))
        parts = [
            "likes: " + "; ".join(self.title(m) for m in recent) if recent else "likes: nothing yet",
        ]
        if genres:
            parts.append("genres: " + ", ".join(g for g, _ in genres.most_common(TOP_GENRES)))
        user_tags = self._user_tags.get(int(user_id), []) if user_id is not None else []
        if user_tags:
            parts.append("tags: " + ", ".join(user_tags))
        return " | ".join(parts)

    def item_text(self, movie_id: int) -> str:
        """Title, genres, tags and a coarse popularity word.

        A cross-encoder only sees text; without a popularity word it cannot learn the prior
        that most watches go to popular movies, which is the strongest single signal in
        MovieLens (the most-popular baseline). A handful of words rather than a raw count
        keeps the vocabulary small enough to learn in a few hundred steps.
        """
        parts = [self.title(movie_id)]
        genres = self.genres(movie_id)
        if genres:
            parts.append(", ".join(genres))
        tags = self._item_tags.get(int(movie_id))
        if tags:
            parts.append("tags: " + ", ".join(tags))
        parts.append(self.popularity_bucket(movie_id))
        return " | ".join(parts)

    def negatives(
        self, user_id: int, n: int, rng: np.random.Generator, *, popular: bool = False
    ) -> list[int]:
        """``n`` distinct movies the user never rated, uniformly or in proportion to popularity."""
        rated = self.rated_movie_ids(user_id)
        if popular:
            pool = self.popularity.index.to_numpy()
            weights = self.popularity.to_numpy(dtype=np.float64)
        else:
            pool = self.movie_ids
            weights = np.ones(len(pool))
        mask = ~np.isin(pool, np.fromiter(rated, dtype=np.int64, count=len(rated)))
        pool, weights = pool[mask], weights[mask]
        take = min(n, len(pool))
        chosen = rng.choice(pool, size=take, replace=False, p=weights / weights.sum())
        return [int(m) for m in chosen]

    def training_pairs(
        self, n: int, rng: np.random.Generator, *, negatives_per_positive: int = 1
    ) -> list[Pair]:
        """Labelled pairs from the training side: positives are ratings >= 4.

        The user text for a positive is built only from likes *before* that positive, so
        the model is trained on the same question it is evaluated on (predict the next
        like from the past) and never learns to find a title in its own history. Half of
        the negatives are uniform (teaching the popularity prior), half popularity-weighted
        (forcing it to look at the user as well).
        """
        positives: list[tuple[int, np.ndarray, int]] = []
        for user_id, frame in self._train_by_user.items():
            liked = frame.movieId[frame.rating >= POSITIVE_RATING].to_numpy()
            positives.extend((user_id, liked[:i], int(liked[i])) for i in range(1, len(liked)))
        if not positives:
            raise DataError("no training positives: every user's likes fall in the held-out side")
        pairs: list[Pair] = []
        per_round = 1 + negatives_per_positive
        for index in rng.choice(len(positives), size=max(1, n // per_round), replace=True):
            user_id, past, movie_id = positives[index]
            user = self.user_text(user_id, history=past.tolist())
            pairs.append(Pair(user, self.item_text(movie_id), 1.0))
            for k in range(negatives_per_positive):
                (negative,) = self.negatives(user_id, 1, rng, popular=k % 2 == 1 or rng.random() < 0.5)
                pairs.append(Pair(user, self.item_text(negative), 0.0))
        return pairs[:n]

    def held_out_likes(self, user_id: int) -> list[int]:
        frame = self.test[self.test.userId == user_id]
        return [int(m) for m in frame.movieId[frame.rating >= POSITIVE_RATING]]


def temporal_split(
    ratings: pd.DataFrame, holdout_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, int]]:
    """Per user, the last ``holdout_fraction`` of interactions by time (at least one) are held out."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    ordered = ratings.sort_values(["userId", "timestamp"], kind="stable")
    sizes = ordered.groupby("userId").timestamp.transform("size")
    rank = ordered.groupby("userId").cumcount()
    n_test = np.maximum(1, np.rint(sizes * holdout_fraction)).astype(int)
    first_test = ordered[rank == sizes - n_test]
    cutoff = dict(zip(first_test.userId.astype(int), first_test.timestamp.astype(int), strict=True))
    held = ordered.timestamp >= ordered.userId.map(cutoff)
    return ordered[~held].reset_index(drop=True), ordered[held].reset_index(drop=True), cutoff


def _read(path: Path, columns: set[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"MovieLens file {path} is missing (set RECSERVE_DATA to the data directory)")
    frame = pd.read_csv(path)
    frame.columns = [c.strip() for c in frame.columns]
    missing = columns - set(frame.columns)
    if missing:
        raise DataError(f"{path} lacks columns {sorted(missing)}; found {list(frame.columns)}")
    return frame


def load_movielens(path: Path | None = None, *, holdout_fraction: float = 0.2) -> MovieLens:
    """Read ratings, movies and tags (CRLF-safe, via pandas) and split them."""
    root = Path(path) if path is not None else movielens_dir()
    ratings = _read(root / "ratings.csv", {"userId", "movieId", "rating", "timestamp"})
    movies = _read(root / "movies.csv", {"movieId", "title", "genres"})
    tags = _read(root / "tags.csv", {"userId", "movieId", "tag", "timestamp"})
    movies = movies.assign(title=movies.title.astype(str).str.strip(), genres=movies.genres.str.strip())
    return MovieLens(ratings=ratings, movies=movies, tags=tags, holdout_fraction=holdout_fraction)
