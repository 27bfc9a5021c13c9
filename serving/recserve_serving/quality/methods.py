"""The methods the protocol compares: baselines and recserve's own pipelines, behind one interface.

A method turns an evaluation user (history, what they saw) into a final top list and the
retrieval stage's candidate list (for recall at retrieval depth; a single-stage method's
candidates are its own ranking). Every method ranks the whole catalog minus what the user
rated before the cut; none sees the held-out side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recserve_serving.collaborative import AlsFoldIn, AlsSettings, ItemKnn
from recserve_serving.hybrid import HybridRetriever
from recserve_serving.quality.split import EvalUser
from recserve_serving.retrieval import ItemIndex

DEPTH = 200
"""Candidates a retrieval stage hands the ranker, and the deepest recall reported."""

PairScorer = Callable[[list[str], list[str]], np.ndarray]


@dataclass(frozen=True)
class Ranked:
    items: list[int]
    candidates: list[int]


class Method(Protocol):
    name: str

    def rank(self, user: EvalUser) -> Ranked: ...


def top_unseen(
    scores: np.ndarray, item_ids: np.ndarray, row: dict[int, int], seen: frozenset[int], n: int
) -> list[int]:
    """The ``n`` best-scored catalog items the user has not rated, best first."""
    masked = np.asarray(scores, dtype=np.float64).copy()
    masked[[row[m] for m in seen if m in row]] = -np.inf
    n = min(n, int(np.isfinite(masked).sum()))
    top = np.argpartition(-masked, n - 1)[:n]
    return [int(item_ids[i]) for i in top[np.argsort(-masked[top], kind="stable")]]


class ScoreMethod:
    """A single-stage method: one score per catalog item, the top ``DEPTH`` unseen are its ranking."""

    def __init__(
        self, name: str, item_ids: np.ndarray, score: Callable[[EvalUser], np.ndarray | None]
    ) -> None:
        self.name = name
        self.item_ids = item_ids
        self.row = {int(m): i for i, m in enumerate(item_ids)}
        self._score = score
        self._fallback: np.ndarray | None = None

    def with_fallback(self, scores: np.ndarray) -> ScoreMethod:
        """Scores used when the method has nothing to go on for a user (no known history item)."""
        self._fallback = scores
        return self

    def rank(self, user: EvalUser) -> Ranked:
        scores = self._score(user)
        if scores is None:
            scores = self._fallback if self._fallback is not None else np.zeros(len(self.item_ids))
        ranked = top_unseen(scores, self.item_ids, self.row, user.seen, DEPTH)
        return Ranked(ranked, ranked)


def most_popular(item_ids: np.ndarray, counts: np.ndarray) -> ScoreMethod:
    return ScoreMethod("most-popular", item_ids, lambda _user: counts)


def item_knn(item_ids: np.ndarray, knn: ItemKnn, counts: np.ndarray) -> ScoreMethod:
    row = {int(m): i for i, m in enumerate(item_ids)}
    return ScoreMethod(
        "item-kNN", item_ids, lambda user: knn.scores([row[m] for m in user.history if m in row])
    ).with_fallback(counts)


def als(
    item_ids: np.ndarray,
    user_factors: dict[int, np.ndarray],
    item_factors: np.ndarray,
    settings: AlsSettings,
    counts: np.ndarray,
) -> ScoreMethod:
    """ALS as its library trains it: a warm user's own factors; a cold one folded in from history."""
    row = {int(m): i for i, m in enumerate(item_ids)}
    fold = AlsFoldIn(item_factors, settings.regularization, settings.alpha)

    def score(user: EvalUser) -> np.ndarray | None:
        if not user.cold and user.user_id in user_factors:
            own: np.ndarray = item_factors @ user_factors[user.user_id]
            return own
        return fold.scores([row[m] for m in user.history if m in row])

    return ScoreMethod(f"ALS ({settings.describe()})", item_ids, score).with_fallback(counts)


def hybrid_retrieval(retriever: HybridRetriever) -> ScoreMethod:
    return ScoreMethod(
        "hybrid retrieval (no ranker)", retriever.item_ids, lambda user: retriever.fused(list(user.history))
    )


class TwoStage:
    """A retriever's ``DEPTH`` candidates re-ranked by a pair scorer on (user text, item text)."""

    def __init__(
        self,
        name: str,
        retrieve: Callable[[EvalUser], list[int]],
        user_text: Callable[[EvalUser], str],
        item_text: Callable[[int], str],
        scorer: PairScorer,
        *,
        k: int = 10,
    ) -> None:
        self.name = name
        self._retrieve = retrieve
        self._user_text = user_text
        self._item_text = item_text
        self._scorer = scorer
        self.k = k

    def scores(self, user: EvalUser) -> tuple[list[int], np.ndarray]:
        candidates = self._retrieve(user)
        text = self._user_text(user)
        return candidates, np.asarray(
            self._scorer([text] * len(candidates), [self._item_text(m) for m in candidates])
        )

    def rank(self, user: EvalUser) -> Ranked:
        candidates, scores = self.scores(user)
        order = np.argsort(-scores, kind="stable")
        return Ranked([candidates[i] for i in order], candidates)


def content_retrieval(index: ItemIndex) -> Callable[[EvalUser], list[int]]:
    return lambda user: index.search(list(user.history), set(user.seen), DEPTH)


def history_user(history_text: Callable[[Sequence[int]], str]) -> Callable[[EvalUser], str]:
    return lambda user: history_text(list(user.history))
