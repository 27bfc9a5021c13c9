"""Maximal Marginal Relevance: variety in a top k without a second model.

The ranker scores every candidate on its own, so nothing stops its best ten from being ten
near-copies (one franchise, one director). MMR (Carbonell & Goldstein, 1998) fixes that at
answer time from what the router already holds: the ranker's scores and the retrieval
index's item embeddings. It is greedy and needs one similarity row per pick, so its cost is
k × pool dot products, negligible next to scoring the candidates with a cross-encoder.

Pure numpy, no Ray and no I/O, so that the router, the tests and offline evaluation share it.
"""

from __future__ import annotations

import numpy as np


def relevance(scores: np.ndarray) -> np.ndarray:
    """Scores min-max normalised to [0, 1], so that λ weighs relevance and cosine similarity
    on the same scale whatever the ranker's score range (logits, probabilities). All-equal
    scores carry no preference and become all zeros."""
    values = np.asarray(scores, dtype=np.float64)
    spread = float(values.max() - values.min()) if len(values) else 0.0
    if spread == 0.0:
        return np.zeros_like(values)
    normalised: np.ndarray = (values - values.min()) / spread
    return normalised


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, lam: float) -> list[int]:
    """Indices of ``k`` items picked greedily, each maximising
    ``(1 - lam) · relevance - lam · (largest cosine similarity to the items already picked)``.

    ``vectors`` are L2-normalised, so a dot product is the cosine similarity. Candidates are
    visited best score first and ties go to the earlier one, which makes ``lam = 0`` return
    exactly the ranker's (stable) order rather than an order that merely scores the same.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be within 0..1, got {lam}")
    if len(scores) != len(vectors):
        raise ValueError(f"{len(scores)} scores for {len(vectors)} vectors")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    gain = (1.0 - lam) * relevance(np.asarray(scores)[order])
    ordered = np.asarray(vectors, dtype=np.float64)[order]
    closest = np.full(len(order), -np.inf)
    taken = np.zeros(len(order), dtype=bool)
    picked: list[int] = []
    for _ in range(min(k, len(order))):
        penalty = closest if picked else np.zeros(len(order))
        best = int(np.argmax(np.where(taken, -np.inf, gain - lam * penalty)))
        picked.append(int(order[best]))
        taken[best] = True
        closest = np.maximum(closest, ordered @ ordered[best])
    return picked
