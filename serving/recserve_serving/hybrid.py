"""Hybrid retrieval: collaborative stages (ALS, item-kNN) fused with the content stage.

Content similarity alone finds items that *read* like what a user liked; on the bundled example that
recalls far less than collaborative filtering, which finds what people with the same taste
watched next. Each stage ranks the catalog for the user's history, and the ranks are fused
with weighted reciprocal-rank fusion (RRF): scale-free, so an ALS score and a cosine need no
calibration against each other, and a stage that knows nothing of a user (no history, an
item the snapshot never saw) simply contributes nothing.

The collaborative index is fitted once per catalog and interaction snapshot, by the build
step, and is content-addressed like engines: its file name is the digest of the catalog ids,
the snapshot and the fitting settings. Routers only read it, with numpy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recserve_serving.collaborative import AlsFoldIn, AlsSettings, ItemKnn
from recserve_serving.errors import RecserveError
from recserve_serving.retrieval import ItemIndex, build_once

COLLAB_FORMAT = 1
KNN_NEIGHBOURS = 100
RRF_K = 60.0
STAGE_DEPTH = 1000
"""Ranks beyond this depth add < 1/(RRF_K + depth) and are not computed."""

FEATURES = (
    "log_fused",
    "log_popularity",
    "als_z",
    "als_rrf",
    "knn_z",
    "knn_rrf",
    "content_z",
    "content_rrf",
    "log_rank",
)
"""What the retrieval stage knows of each candidate, as the ranker's fusion head reads it."""

DEFAULT_ALS = AlsSettings(factors=64, regularization=10.0, alpha=1.0, iterations=15)
"""Chosen on the validation slice of the evaluation protocol (``recserve eval`` tunes it again)."""


@dataclass(frozen=True)
class FusionWeights:
    """Each stage's weight in reciprocal-rank fusion; chosen on the validation slice."""

    als: float = 1.0
    knn: float = 0.5
    content: float = 0.2
    popularity: float = 0.2


def snapshot_digest(catalog: np.ndarray, snapshot: pd.DataFrame, settings: AlsSettings) -> str:
    """The collaborative index's content address: catalog, interactions (order-free), settings."""
    pairs = snapshot[["user", "item"]].to_numpy(dtype=np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    digest = hashlib.sha256(
        f"recserve-collab-v{COLLAB_FORMAT}|{settings.describe()}|{KNN_NEIGHBOURS}".encode()
    )
    digest.update(np.ascontiguousarray(catalog, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(pairs).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CollaborativeIndex:
    item_ids: np.ndarray
    item_factors: np.ndarray
    knn_indices: np.ndarray
    knn_sims: np.ndarray
    counts: np.ndarray
    """Snapshot interactions per item: the popularity stage, and the router's cold-start fallback."""
    settings: AlsSettings

    @classmethod
    def fit(
        cls,
        catalog: np.ndarray,
        snapshot: pd.DataFrame,
        settings: AlsSettings = DEFAULT_ALS,
        *,
        seed: int = 0,
    ) -> CollaborativeIndex:
        from recserve_serving.collaborative import fit_als, interaction_matrix, item_neighbours

        matrix, _ = interaction_matrix(snapshot.user.to_numpy(), snapshot.item.to_numpy(), catalog)
        _, item_factors = fit_als(matrix, settings, seed=seed)
        indices, sims = item_neighbours(matrix, KNN_NEIGHBOURS)
        counts = np.asarray(matrix.sum(0)).ravel().astype(np.float32)
        return cls(np.asarray(catalog, dtype=np.int64), item_factors, indices, sims, counts, settings)

    def save(self, path: Path) -> None:
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(
            temp,
            item_ids=self.item_ids,
            item_factors=self.item_factors,
            knn_indices=self.knn_indices,
            knn_sims=self.knn_sims,
            counts=self.counts,
            settings=np.array(astuple(self.settings), dtype=np.float64),
        )
        os.replace(temp, path)

    @classmethod
    def load(cls, path: Path) -> CollaborativeIndex:
        with np.load(path) as stored:
            factors, regularization, alpha, iterations = stored["settings"].tolist()
            settings = AlsSettings(int(factors), regularization, alpha, int(iterations))
            return cls(
                stored["item_ids"],
                stored["item_factors"],
                stored["knn_indices"],
                stored["knn_sims"],
                stored["counts"],
                settings,
            )


def collaborative_path(
    index_dir: Path, catalog: np.ndarray, snapshot: pd.DataFrame, settings: AlsSettings = DEFAULT_ALS
) -> Path:
    return Path(index_dir) / f"collab-{snapshot_digest(catalog, snapshot, settings)[:32]}.npz"


def load_or_build_collaborative(
    index_dir: Path, catalog: np.ndarray, snapshot: pd.DataFrame, settings: AlsSettings = DEFAULT_ALS
) -> CollaborativeIndex:
    """The snapshot's collaborative index from ``index_dir``, fitted there (under a lock) if missing.

    Like the content index, a present file is read without the lock (it is renamed into
    place whole), so routers read it from a read-only artifact store.
    """
    path = collaborative_path(index_dir, catalog, snapshot, settings)
    build_once(
        path,
        "collaborative index",
        "implicit",
        lambda: CollaborativeIndex.fit(catalog, snapshot, settings).save(path),
    )
    return CollaborativeIndex.load(path)


def _rrf(scores: np.ndarray, depth: int) -> np.ndarray:
    """1 / (RRF_K + rank) for the top ``depth`` items by score, 0 elsewhere."""
    out = np.zeros(len(scores), dtype=np.float64)
    depth = min(depth, len(scores))
    top = np.argpartition(-scores, depth - 1)[:depth]
    ordered = top[np.argsort(-scores[top], kind="stable")]
    out[ordered] = 1.0 / (RRF_K + np.arange(1, depth + 1))
    return out


class HybridRetriever:
    """Candidates for a user given as liked item ids: RRF of ALS, item-kNN, content and popularity."""

    def __init__(
        self, content: ItemIndex, collaborative: CollaborativeIndex, weights: FusionWeights = FusionWeights()
    ) -> None:
        if not np.array_equal(content.item_ids, collaborative.item_ids):
            raise RecserveError(
                "the content and collaborative indexes cover different catalogs; rebuild both "
                "from the same catalog (`recserve build --index-dir DIR`)"
            )
        self.content = content
        self.collaborative = collaborative
        self.weights = weights
        settings = collaborative.settings
        self._als = AlsFoldIn(collaborative.item_factors, settings.regularization, settings.alpha)
        self._knn = ItemKnn(collaborative.knn_indices, collaborative.knn_sims)
        self._popularity = _rrf(np.log1p(collaborative.counts), STAGE_DEPTH) * weights.popularity

    @property
    def item_ids(self) -> np.ndarray:
        return self.content.item_ids

    def stage_scores(self, history: Sequence[int]) -> dict[str, np.ndarray]:
        """Each stage's raw score over the catalog (stages with nothing to go on are left out)."""
        rows = [self.content.row[m] for m in history if m in self.content.row]
        stages: dict[str, np.ndarray] = {}
        for name, scores in (
            ("als", self._als.scores(rows)),
            ("knn", self._knn.scores(rows)),
        ):
            if scores is not None:
                stages[name] = scores
        vector = self.content.user_vector(list(history))
        if vector is not None:
            stages["content"] = self.content.vectors @ vector
        return stages

    def user(self, history: Sequence[int]) -> UserScores:
        stages = self.stage_scores(history)
        fused = self._popularity.copy()
        for name, scores in stages.items():
            fused += getattr(self.weights, name) * _rrf(scores, STAGE_DEPTH)
        return UserScores(stages, fused)

    def fused(self, history: Sequence[int]) -> np.ndarray:
        return self.user(history).fused

    def search(self, history: Sequence[int], exclude: set[int], n: int) -> list[int]:
        return self.top(self.user(history), exclude, n)

    def top(self, user: UserScores, exclude: set[int], n: int) -> list[int]:
        """The ``n`` best-fused items, never one in ``exclude``; popularity alone for an empty history."""
        fused = user.fused.copy()
        fused[[self.content.row[m] for m in exclude if m in self.content.row]] = -np.inf
        take = min(n, int(np.isfinite(fused).sum()))
        if take <= 0:
            return []
        top = np.argpartition(-fused, take - 1)[:take]
        ordered = top[np.argsort(-fused[top], kind="stable")]
        return [int(self.item_ids[i]) for i in ordered]

    def features(self, user: UserScores, candidates: Sequence[int]) -> np.ndarray:
        """The ``FEATURES`` rows of ``candidates`` (a stage with nothing to go on reads 0)."""
        rows = np.array([self.content.row[m] for m in candidates], dtype=np.int64)
        if not len(rows):
            return np.zeros((0, len(FEATURES)))
        fused = user.fused[rows]
        columns = [np.log(np.maximum(fused, 1e-9)), np.log1p(self.collaborative.counts[rows])]
        for name in ("als", "knn", "content"):
            scores = user.stages.get(name)
            if scores is None:
                columns.extend([np.zeros(len(rows)), np.zeros(len(rows))])
                continue
            picked = scores[rows]
            columns.append((picked - picked.mean()) / (picked.std() + 1e-9))
            columns.append(_rrf(scores, STAGE_DEPTH)[rows] * RRF_K)
        rank = np.empty(len(rows))
        rank[np.argsort(-fused, kind="stable")] = np.arange(len(rows))
        columns.append(np.log1p(rank))
        return np.column_stack(columns)


@dataclass(frozen=True)
class UserScores:
    """One user's stage scores and fused score over the catalog, computed once per request."""

    stages: dict[str, np.ndarray]
    fused: np.ndarray
