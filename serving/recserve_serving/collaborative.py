"""Collaborative signal for retrieval: implicit-ALS item factors and item-to-item neighbours.

Both are fitted once per interaction snapshot (the build step does it) and applied to a user
given only as a list of item ids: ALS by folding the user in (one regularised least-squares
solve against the fixed item factors), item-kNN by summing the neighbour similarities of the
user's items. A user the snapshot never saw (a request ``history``) is therefore treated the
same way as one it did, and the router needs numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp


@dataclass(frozen=True)
class AlsSettings:
    """Implicit ALS hyper-parameters; ``alpha`` scales the confidence of an observed interaction."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 15

    def describe(self) -> str:
        return f"factors={self.factors},reg={self.regularization},alpha={self.alpha},iter={self.iterations}"


def interaction_matrix(
    user_ids: np.ndarray, item_ids: np.ndarray, catalog: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """A binary users × catalog-items matrix, and the user id of each row.

    Items outside ``catalog`` are dropped: the catalog decides what can be recommended.
    Fitting runs in build steps only, so scipy (like implicit) is imported here, not by routers.
    """
    import scipy.sparse as sp

    users, rows = np.unique(np.asarray(user_ids, dtype=np.int64), return_inverse=True)
    position = np.searchsorted(catalog, item_ids)
    position = np.clip(position, 0, len(catalog) - 1)
    known = catalog[position] == item_ids
    data = np.ones(int(known.sum()), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows[known], position[known])), shape=(len(users), len(catalog)))
    matrix.data[:] = 1.0  # duplicates summed by the constructor count once
    return matrix, users


def fit_als(matrix: sp.csr_matrix, settings: AlsSettings, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of implicit's ALS on ``matrix`` (confidence ``1 + alpha``)."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=settings.factors,
        regularization=settings.regularization,
        alpha=settings.alpha,
        iterations=settings.iterations,
        random_state=seed,
        num_threads=2,
    )
    model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32)


class AlsFoldIn:
    """Scores every item for a user given as item rows, against fixed item factors.

    The solve is the ALS user step itself, (YᵀY + α·YₕᵀYₕ + λI)x = (1 + α)·Yₕᵀ1, so a
    folded-in user gets the factor ALS would have given them, without refitting.
    """

    def __init__(self, item_factors: np.ndarray, regularization: float, alpha: float) -> None:
        self.item_factors = np.asarray(item_factors, dtype=np.float32)
        self.alpha = alpha
        factors = self.item_factors.shape[1]
        self._base = self.item_factors.T @ self.item_factors + regularization * np.eye(
            factors, dtype=np.float32
        )

    def user_vector(self, rows: Sequence[int]) -> np.ndarray | None:
        if not len(rows):
            return None
        liked = self.item_factors[np.asarray(rows)]
        system = self._base + self.alpha * liked.T @ liked
        return np.linalg.solve(system, (1.0 + self.alpha) * liked.sum(0)).astype(np.float32)

    def scores(self, rows: Sequence[int]) -> np.ndarray | None:
        vector = self.user_vector(rows)
        return None if vector is None else self.item_factors @ vector


def item_neighbours(matrix: sp.csr_matrix, k: int = 100, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k`` most cosine-similar items over users (self excluded): indices, similarities.

    Computed in chunks of items so the dense similarity block stays at chunk × items floats.
    Items nobody interacted with get similarity 0 to everything.
    """
    import scipy.sparse as sp

    items = sp.csc_matrix(matrix, dtype=np.float32)
    norms = np.sqrt(np.asarray(items.multiply(items).sum(0)).ravel())
    normalised = sp.csr_matrix(items.multiply(1.0 / np.maximum(norms, 1e-9)[None, :])).T.tocsr()
    n_items = normalised.shape[0]
    k = min(k, n_items - 1)
    indices = np.zeros((n_items, k), dtype=np.int32)
    sims = np.zeros((n_items, k), dtype=np.float32)
    transposed = normalised.T.tocsc()
    for start in range(0, n_items, chunk):
        block = (normalised[start : start + chunk] @ transposed).toarray()
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = 0.0
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        indices[start : start + chunk] = top
        sims[start : start + chunk] = np.take_along_axis(block, top, axis=1)
    return indices, sims


class ItemKnn:
    """Scores items by the summed similarity to the user's items (item-to-item collaborative filtering)."""

    def __init__(self, indices: np.ndarray, sims: np.ndarray) -> None:
        self.indices = indices
        self.sims = sims

    def scores(self, rows: Sequence[int]) -> np.ndarray | None:
        if not len(rows):
            return None
        out = np.zeros(self.indices.shape[0], dtype=np.float32)
        picked = np.asarray(rows)
        np.add.at(out, self.indices[picked].ravel(), self.sims[picked].ravel())
        return out
