"""Training data for a ranker that re-ranks the hybrid retriever's candidates.

A ranker only ever sees what retrieval hands it, so it is trained on exactly that: for users
of the protocol's validation slice, the retriever (fitted on the validation snapshot, never
on anything held out) proposes candidates; a group is one held-out like found among them and
negatives drawn from the same candidates — the hard negatives the served ranker must tell
apart, not random items it would never be shown. The validation users are split in two:
the encoder trains on one half, and the fusion head is fitted on the other, so that the head
weighs the encoder by how it does on users it never saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recserve_serving.data import Dataset, Pair
from recserve_serving.fusion import FusionHead, fit_fusion, retrieval_order_head
from recserve_serving.hybrid import FEATURES, CollaborativeIndex, HybridRetriever
from recserve_serving.quality.split import EvalUser, protocol_split, validation_split
from recserve_serving.retrieval import load_or_build_index
from recserve_serving.serve.config import MAX_REQUEST_HISTORY

CANDIDATES = 200
HARD_POOL = 50
"""Negatives come from the retriever's best 50 non-relevant candidates: the ones a ranker must beat."""
MAX_HISTORY = MAX_REQUEST_HISTORY
"""Trained on the history the router reads."""


@dataclass
class RetrievalTraining:
    data: Dataset
    retriever: HybridRetriever
    encoder_users: list[EvalUser]
    head_users: list[EvalUser]

    def user_text(self, user: EvalUser) -> str:
        return self.data.user_text(None, history=list(user.history)[-MAX_HISTORY:])

    def candidates(self, user: EvalUser) -> list[int]:
        return self.retriever.top(
            self.retriever.user(list(user.history)[-MAX_HISTORY:]), set(user.seen), CANDIDATES
        )


def retrieval_training(data: Dataset, index_dir: Path, *, seed: int = 0) -> RetrievalTraining:
    """The validation slice's retriever and its users, split in halves for encoder and head."""
    validation = validation_split(protocol_split(data.interactions))
    content = load_or_build_index(index_dir, {int(m): data.item_text(int(m)) for m in data.item_ids})
    retriever = HybridRetriever(content, CollaborativeIndex.fit(data.item_ids, validation.snapshot))
    users = list(validation.users)
    np.random.default_rng(seed).shuffle(users)
    half = len(users) // 2
    return RetrievalTraining(data, retriever, users[:half], users[half:])


def hard_negative_pairs(
    training: RetrievalTraining, n: int, rng: np.random.Generator, *, negatives_per_positive: int = 3
) -> list[Pair]:
    """``n`` pairs in groups of one positive and its hard negatives (same user text)."""
    pools: list[tuple[str, list[int], list[int]]] = []
    for user in training.encoder_users:
        candidates = training.candidates(user)
        found = [m for m in candidates if m in user.relevant]
        negatives = [m for m in candidates if m not in user.relevant][:HARD_POOL]
        if found and len(negatives) >= negatives_per_positive:
            pools.append((training.user_text(user), found, negatives))
    if not pools:
        raise ValueError("no validation user has a held-out like among their retrieved candidates")
    pairs: list[Pair] = []
    item = training.data.item_text
    while len(pairs) < n:
        text, found, negatives = pools[int(rng.integers(len(pools)))]
        pairs.append(Pair(text, item(found[int(rng.integers(len(found)))]), 1.0))
        for m in rng.choice(negatives, size=negatives_per_positive, replace=False):
            pairs.append(Pair(text, item(int(m)), 0.0))
    return pairs[:n]


@dataclass(frozen=True)
class HeadChoice:
    head: FusionHead
    fitted_ndcg: float
    """NDCG@10 of the fitted head on the check users' lists."""
    retrieval_ndcg: float
    """NDCG@10 of the retrieval order alone on the same lists."""


def fit_head(
    training: RetrievalTraining,
    scorer: Callable[[list[str], list[str]], np.ndarray],
    rng: np.random.Generator,
    *,
    users: int = 160,
    negatives: int = 40,
) -> HeadChoice:
    """The fusion head, fitted listwise on half of the held-out users' candidate lists (each
    relevant candidate and ``negatives`` others) and checked on the other half against the
    retrieval order alone: the head ships only if it ranks better there, else the retrieval
    order does (model selection on validation users, never on the test side)."""
    found = [_head_list(training, user, scorer, rng, negatives) for user in training.head_users[:users]]
    lists = [item for item in found if item is not None]
    half = len(lists) // 2
    fit_part, check_part = lists[:half], lists[half:]
    fitted = fit_fusion(
        FEATURES, [r for r, _, _ in fit_part], [m for _, m, _ in fit_part], [y for _, _, y in fit_part]
    )
    plain = retrieval_order_head(FEATURES)
    fitted_ndcg, plain_ndcg = (_list_ndcg(head, check_part) for head in (fitted, plain))
    return HeadChoice(fitted if fitted_ndcg > plain_ndcg else plain, fitted_ndcg, plain_ndcg)


def _head_list(
    training: RetrievalTraining,
    user: EvalUser,
    scorer: Callable[[list[str], list[str]], np.ndarray],
    rng: np.random.Generator,
    negatives: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    history = list(user.history)[-MAX_HISTORY:]
    scored = training.retriever.user(history)
    candidates = training.retriever.top(scored, set(user.seen), CANDIDATES)
    relevant = [i for i, m in enumerate(candidates) if m in user.relevant]
    if not relevant:
        return None
    features = training.retriever.features(scored, candidates)
    others = [i for i, m in enumerate(candidates) if m not in user.relevant]
    picked = relevant + sorted(rng.choice(others, size=min(negatives, len(others)), replace=False).tolist())
    text = training.user_text(user)
    scores = scorer([text] * len(picked), [training.data.item_text(candidates[i]) for i in picked])
    labels = np.array([1.0] * len(relevant) + [0.0] * (len(picked) - len(relevant)))
    return np.asarray(scores, dtype=np.float64), features[picked], labels


def _list_ndcg(head: FusionHead, lists: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    from recserve_serving.quality.metrics import ndcg_at

    values = []
    for scores, features, labels in lists:
        order = np.argsort(-head.apply(scores, features), kind="stable")
        relevant = frozenset(int(i) for i in np.flatnonzero(labels))
        values.append(ndcg_at([int(i) for i in order], relevant))
    return float(np.mean(values)) if values else 0.0
