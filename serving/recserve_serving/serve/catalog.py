"""What the router knows about users and items at serving time.

Training texts come from the time split (so evaluation never sees the future); serving
texts use everything a user has rated, because in production the whole past is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recserve_serving.data import POSITIVE_RATING, MovieLens, load_movielens
from recserve_serving.errors import InvalidRequest, NotFound
from recserve_serving.hybrid import (
    HybridRetriever,
    collaborative_path,
    load_or_build_collaborative,
)
from recserve_serving.quality.split import protocol_split
from recserve_serving.retrieval import ItemIndex, index_path, load_or_build_index


def _item_texts(movielens: MovieLens) -> dict[int, str]:
    return {int(m): movielens.item_text(int(m)) for m in movielens.movie_ids}


def interaction_snapshot(movielens: MovieLens) -> pd.DataFrame:
    """The interactions the collaborative stages learn from: the evaluation protocol's snapshot.

    Serving the model fitted on the protocol's training side is what lets ``recserve eval
    --endpoint`` measure the running server without it having seen the held-out answers.
    """
    return protocol_split(movielens.ratings).snapshot


def _indexes(movielens: MovieLens, data_dir: Path, index_dir: Path) -> HybridRetriever:
    content = load_or_build_index(index_dir, data_dir, _item_texts(movielens))
    collaborative = load_or_build_collaborative(
        index_dir, movielens.movie_ids, interaction_snapshot(movielens)
    )
    return HybridRetriever(content, collaborative)


def _index_paths(movielens: MovieLens, data_dir: Path, index_dir: Path) -> list[Path]:
    return [
        index_path(index_dir, data_dir),
        collaborative_path(index_dir, movielens.movie_ids, interaction_snapshot(movielens)),
    ]


@dataclass
class Catalog:
    movielens: MovieLens
    liked: dict[int, list[int]]
    retriever: HybridRetriever

    @classmethod
    def load(cls, data_dir: str | Path, index_dir: str | Path) -> Catalog:
        movielens = load_movielens(Path(data_dir))
        ratings = movielens.ratings.sort_values("timestamp", kind="stable")
        positives = ratings[ratings.rating >= POSITIVE_RATING]
        liked = {int(u): [int(m) for m in frame.movieId] for u, frame in positives.groupby("userId")}
        return cls(movielens, liked, _indexes(movielens, Path(data_dir), Path(index_dir)))

    @property
    def index(self) -> ItemIndex:
        """The content stage's item embeddings (explanations and diversity read them)."""
        return self.retriever.content

    @staticmethod
    def index_paths(data_dir: str | Path, index_dir: str | Path) -> list[Path]:
        """Where this catalog's retrieval indexes (content, collaborative) are, built or not."""
        return _index_paths(load_movielens(Path(data_dir)), Path(data_dir), Path(index_dir))

    @staticmethod
    def ensure_index(data_dir: str | Path, index_dir: str | Path) -> list[Path]:
        """Build this catalog's retrieval indexes into ``index_dir`` unless they are there, and
        return their paths: build Jobs do it, so that routers (no torch, no implicit) only read them."""
        movielens = load_movielens(Path(data_dir))
        _indexes(movielens, Path(data_dir), Path(index_dir))
        return _index_paths(movielens, Path(data_dir), Path(index_dir))

    def knows_user(self, user_id: int) -> bool:
        try:
            self.movielens.rated_movie_ids(user_id)
        except NotFound:
            return False
        return True

    def seen(self, user_id: int) -> set[int]:
        return self.movielens.rated_movie_ids(user_id)

    def user_text(self, user_id: int | None, history: list[int] | None) -> str:
        """The user's text from an explicit history, else from everything they liked."""
        if history is not None:
            self.check_items(history, "history")
            return self.movielens.user_text(user_id if user_id in self.liked else None, history=history)
        if user_id is None:
            raise InvalidRequest("give a user_id or a history")
        if not self.knows_user(user_id):
            raise NotFound(
                f"unknown user {user_id}: not in the catalog and no history given; "
                "send a 'history' of liked movie ids for a new user"
            )
        return self.movielens.user_text(user_id, history=self.liked.get(user_id, []))

    def item_text(self, movie_id: int) -> str:
        return self.movielens.item_text(movie_id)

    def title(self, movie_id: int) -> str:
        return self.movielens.title(movie_id)

    def item_vectors(self, movie_ids: list[int]) -> np.ndarray:
        """The retrieval index's L2-normalised embeddings of ``movie_ids``, row for row: what
        diversity re-ranking measures similarity with. Every catalog movie is in the index,
        which is built from the same catalog."""
        return self.index.vectors[[self.index.row[m] for m in movie_ids]]

    def check_items(self, movie_ids: list[int], field: str) -> None:
        unknown = [m for m in movie_ids if not self._known_movie(m)]
        if unknown:
            shown = ", ".join(map(str, unknown[:5]))
            raise InvalidRequest(f"{field}: unknown movie ids {shown}" + (" …" if len(unknown) > 5 else ""))

    def _known_movie(self, movie_id: int) -> bool:
        try:
            self.movielens.title(movie_id)
        except NotFound:
            return False
        return True

    def history(self, user_id: int | None, history: list[int] | None) -> list[int]:
        """Liked movie ids, oldest first: the request's own, else the stored ones."""
        if history is not None:
            return history
        return self.liked.get(user_id, []) if user_id is not None else []

    def retrieve(
        self, history: list[int], seen: set[int], n: int, candidates: list[int] | None = None
    ) -> tuple[list[int], np.ndarray]:
        """Candidates (the retriever's, or the given ones) and their retrieval features, which the
        ranker's fusion head reads."""
        user = self.retriever.user(history)
        picked = (
            self._topped_up(self.retriever.top(user, seen, n), seen, n) if candidates is None else candidates
        )
        return picked, self.retriever.features(user, picked)

    def candidates(self, history: list[int], seen: set[int], n: int) -> list[int]:
        """The hybrid retriever's best items, topped up with popular ones if it has too few."""
        return self._topped_up(self.retriever.search(history, seen, n), seen, n)

    def _topped_up(self, picked: list[int], seen: set[int], n: int) -> list[int]:
        if len(picked) < n:
            taken = seen | set(picked)
            for movie_id in self.movielens.popular_movie_ids():
                if movie_id not in taken:
                    picked.append(movie_id)
                    if len(picked) == n:
                        break
        return picked
