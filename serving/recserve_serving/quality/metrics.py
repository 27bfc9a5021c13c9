"""Ranking metrics of recommended lists against held-out likes, and list-level beyond-accuracy ones.

Accuracy (NDCG, HR, MRR at 10, recall at retrieval depths) is per user, averaged. Coverage is
the share of the catalog that reaches some user's top 10. Intra-list diversity is the mean
pairwise distance inside a top 10, by genres (Jaccard) and by MiniLM embedding (1 − cosine).
Novelty is the mean self-information −log2(share of snapshot users who rated the item).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

K = 10


def ndcg_at(ranked: Sequence[int], relevant: frozenset[int], k: int = K) -> float:
    gains = sum(1.0 / math.log2(i + 2) for i, m in enumerate(ranked[:k]) if m in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return gains / ideal if ideal else 0.0


def hit_at(ranked: Sequence[int], relevant: frozenset[int], k: int = K) -> float:
    return float(any(m in relevant for m in ranked[:k]))


def mrr_at(ranked: Sequence[int], relevant: frozenset[int], k: int = K) -> float:
    return next((1.0 / (i + 1) for i, m in enumerate(ranked[:k]) if m in relevant), 0.0)


def recall_at(ranked: Sequence[int], relevant: frozenset[int], k: int) -> float:
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def genre_distance(a: frozenset[str], b: frozenset[str]) -> float:
    union = a | b
    return 1.0 - len(a & b) / len(union) if union else 0.0


def intra_list_diversity(items: Sequence[int], genres: Mapping[int, frozenset[str]]) -> float:
    pairs = [(a, b) for i, a in enumerate(items) for b in items[i + 1 :]]
    if not pairs:
        return 0.0
    return float(
        np.mean([genre_distance(genres.get(a, frozenset()), genres.get(b, frozenset())) for a, b in pairs])
    )


def embedding_diversity(vectors: np.ndarray) -> float:
    """Mean 1 − cosine over the distinct pairs of a list's (normalised) item vectors."""
    n = len(vectors)
    if n < 2:
        return 0.0
    sims = vectors @ vectors.T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def novelty(items: Sequence[int], counts: Mapping[int, int], users: int) -> float:
    if not items:
        return 0.0
    return float(np.mean([-math.log2(max(counts.get(m, 0), 1) / max(users, 1)) for m in items]))
