"""Offline evaluation shared by training, the quality gate, reports and the benchmark.

Protocol: for each sampled held-out user, the candidates are their held-out likes plus
uniformly sampled items they never rated; every scorer (cross-encoder engine, most-popular,
ALS) ranks the same candidates, built from the same training side of the temporal split.
Sampled candidates instead of the full catalogue keep a cross-encoder evaluation within
seconds on 2 cores; the comparison stays fair because every scorer sees the same lists.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recserve_serving.data import Dataset

PairScorer = Callable[[list[str], list[str]], np.ndarray]
K = 10


@dataclass(frozen=True)
class EvalSettings:
    """How big an evaluation is; part of a gate report so two reports can be compared."""

    users: int = 100
    candidates: int = 50
    seed: int = 0
    latency_repeats: int = 10

    def describe(self) -> str:
        return f"users={self.users},candidates={self.candidates},seed={self.seed}"


@dataclass(frozen=True)
class EvalCase:
    user_id: int
    user_text: str
    candidates: tuple[int, ...]
    relevant: frozenset[int]


@dataclass(frozen=True)
class EvalSet:
    """Deterministic for (users, candidates, seed): two builds gate against the same lists."""

    cases: tuple[EvalCase, ...]
    users: int
    candidates: int
    seed: int

    def pairs(self, data: Dataset) -> tuple[list[str], list[str]]:
        users = [c.user_text for c in self.cases for _ in c.candidates]
        items = [data.item_text(m) for c in self.cases for m in c.candidates]
        return users, items

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        bounds = np.cumsum([len(c.candidates) for c in self.cases])[:-1]
        return np.split(np.asarray(flat, dtype=np.float32), bounds)


def eval_set(
    data: Dataset,
    *,
    users: int = 100,
    candidates: int = 50,
    seed: int = 0,
    max_relevant: int = 10,
    popular_negatives: bool = True,
) -> EvalSet:
    """Sample users with held-out likes and a liked training history, and their candidate lists."""
    rng = np.random.default_rng(seed)
    eligible = [u for u in data.user_codes() if data.held_out_likes(u) and data.liked_history(u)]
    chosen = sorted(rng.choice(eligible, size=min(users, len(eligible)), replace=False).tolist())
    cases = []
    for user_id in chosen:
        relevant = data.held_out_likes(user_id)[:max_relevant]
        negatives = data.negatives(user_id, candidates - len(relevant), rng, popular=popular_negatives)
        pool = np.array(relevant + negatives)
        rng.shuffle(pool)
        cases.append(
            EvalCase(int(user_id), data.user_text(user_id), tuple(int(m) for m in pool), frozenset(relevant))
        )
    return EvalSet(tuple(cases), users, candidates, seed)


def _ndcg(ranked_relevance: np.ndarray, n_relevant: int) -> float:
    gains = ranked_relevance[:K] / np.log2(np.arange(2, min(K, len(ranked_relevance)) + 2))
    ideal = (1.0 / np.log2(np.arange(2, min(K, n_relevant) + 2))).sum()
    return float(gains.sum() / ideal)


def _auc(scores: np.ndarray, relevance: np.ndarray) -> float:
    pos, neg = scores[relevance == 1], scores[relevance == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def genre_diversity(genre_sets: Sequence[frozenset[str]]) -> float:
    """Mean pairwise Jaccard distance of one list's genre sets: 0 when every item shares the
    same genres, 1 when no two share any. Genres, not embeddings, so that the metric does not
    grade the ranker with the retriever's own notion of similarity. Two items without genres
    count as alike; a list of one item has no pairs and no variety."""
    distances = [
        1.0 - (len(a & b) / len(a | b) if a | b else 1.0)
        for i, a in enumerate(genre_sets)
        for b in genre_sets[i + 1 :]
    ]
    return float(np.mean(distances)) if distances else 0.0


def ranking_metrics(data: Dataset, evals: EvalSet, scores: Sequence[np.ndarray]) -> dict[str, float]:
    """NDCG@10, HitRate@10, AUC (per user, averaged), coverage, novelty and diversity of the top 10s.

    Coverage is the share of all candidate items that reach some user's top 10; novelty the
    mean self-information -log2(share of training users who rated it) of top-10 items.
    Both say whether a scorer recommends beyond the few blockbusters. Diversity is the
    intra-list genre diversity of each top 10 (``genre_diversity``), averaged over users: it
    says whether one user's list is more than one kind of item.
    """
    if len(scores) != len(evals.cases):
        raise ValueError(f"{len(scores)} score lists for {len(evals.cases)} users")
    ndcg, hits, aucs = [], [], []
    shown: set[int] = set()
    pool: set[int] = set()
    novelty: list[float] = []
    diversity: list[float] = []
    n_users = max(1, data.train.user.nunique())
    for case, case_scores in zip(evals.cases, scores, strict=True):
        order = np.argsort(-np.asarray(case_scores), kind="stable")
        ranked = np.array([case.candidates[i] for i in order])
        relevance = np.array([m in case.relevant for m in ranked], dtype=np.int64)
        ndcg.append(_ndcg(relevance.astype(np.float64), len(case.relevant)))
        hits.append(float(relevance[:K].any()))
        aucs.append(_auc(np.asarray(case_scores)[order], relevance))
        top = ranked[:K].tolist()
        shown.update(top)
        pool.update(case.candidates)
        novelty.extend(-math.log2(max(data.popularity.get(m, 0), 1) / n_users) for m in top)
        diversity.append(genre_diversity([frozenset(data.categories(m)) for m in top]))
    return {
        "ndcg@10": float(np.mean(ndcg)),
        "hitrate@10": float(np.mean(hits)),
        "auc": float(np.nanmean(aucs)),
        "coverage": len(shown) / max(1, len(pool)),
        "novelty": float(np.mean(novelty)),
        "diversity": float(np.mean(diversity)),
    }


def score_texts(scorer: PairScorer, data: Dataset, evals: EvalSet, batch_size: int = 64) -> list[np.ndarray]:
    users, items = evals.pairs(data)
    flat = [
        scorer(users[i : i + batch_size], items[i : i + batch_size]) for i in range(0, len(users), batch_size)
    ]
    return evals.split(np.concatenate(flat))


def evaluate_scorer(
    scorer: PairScorer, data: Dataset, evals: EvalSet, batch_size: int = 64
) -> dict[str, float]:
    return ranking_metrics(data, evals, score_texts(scorer, data, evals, batch_size))


def popularity_scores(data: Dataset, evals: EvalSet) -> list[np.ndarray]:
    counts = data.popularity
    return [np.array([counts.get(m, 0) for m in c.candidates], dtype=np.float32) for c in evals.cases]


def als_scores(
    data: Dataset, evals: EvalSet, *, factors: int = 64, iterations: int = 15, seed: int = 0
) -> list[np.ndarray]:
    """Implicit-feedback ALS (``implicit``) on the same training interactions, likes weighted up."""
    from implicit.als import AlternatingLeastSquares

    users = {u: i for i, u in enumerate(sorted(data.train.user.unique()))}
    items = {m: i for i, m in enumerate(data.item_ids.tolist())}
    rows = data.train.user.map(users).to_numpy()
    cols = data.train.item.map(items).to_numpy()
    weights = np.where(data.train.liked.to_numpy(), 4.0, 1.0).astype(np.float32)
    matrix = sp.csr_matrix((weights, (rows, cols)), shape=(len(users), len(items)))
    model = AlternatingLeastSquares(
        factors=factors,
        iterations=iterations,
        random_state=seed,
        num_threads=2,
        calculate_training_loss=False,
    )
    model.fit(matrix, show_progress=False)
    user_factors, item_factors = np.asarray(model.user_factors), np.asarray(model.item_factors)
    out = []
    for case in evals.cases:
        vector = user_factors[users[case.user_id]]
        out.append(np.array([item_factors[items[m]] @ vector for m in case.candidates], dtype=np.float32))
    return out


def baselines(data: Dataset, evals: EvalSet) -> dict[str, dict[str, float]]:
    return {
        "most-popular": ranking_metrics(data, evals, popularity_scores(data, evals)),
        "als": ranking_metrics(data, evals, als_scores(data, evals)),
    }


def latency(scorer: PairScorer, users: list[str], items: list[str], *, repeats: int = 20) -> dict[str, float]:
    """p50/p99 milliseconds and pairs per second of one batch (after one warm-up call)."""
    scorer(users, items)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scorer(users, items)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "pairs_per_s": float(len(users) / np.median(times)),
    }
