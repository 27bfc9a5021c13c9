"""Training data for a ranker that re-ranks the hybrid retriever's candidates.

A ranker only ever sees what retrieval hands it, so it is trained on exactly that: for users
of the protocol's validation slice, the retriever (fitted on the validation snapshot, never
on anything held out) proposes candidates; a group is one held-out like found among them and
negatives drawn from the same candidates — the hard negatives the served ranker must tell
apart, not random movies it would never be shown. The validation users are split in two:
the encoder trains on one half, and the fusion head is fitted on the other, so that the head
weighs the encoder by how it does on users it never saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recserve_serving.data import MovieLens, Pair
from recserve_serving.fusion import FusionHead, fit_fusion
from recserve_serving.hybrid import FEATURES, CollaborativeIndex, HybridRetriever
from recserve_serving.quality.split import EvalUser, protocol_split, validation_split
from recserve_serving.retrieval import load_or_build_index

CANDIDATES = 200
HARD_POOL = 50
"""Negatives come from the retriever's best 50 non-relevant candidates: the ones a ranker must beat."""
MAX_HISTORY = 50
"""The router reads the most recent 50 likes of a request (RouterConfig.max_history)."""


@dataclass
class RetrievalTraining:
    data: MovieLens
    retriever: HybridRetriever
    encoder_users: list[EvalUser]
    head_users: list[EvalUser]

    def user_text(self, user: EvalUser) -> str:
        return self.data.user_text(None, history=list(user.history)[-MAX_HISTORY:])

    def candidates(self, user: EvalUser) -> list[int]:
        return self.retriever.top(
            self.retriever.user(list(user.history)[-MAX_HISTORY:]), set(user.seen), CANDIDATES
        )


def retrieval_training(
    data: MovieLens, index_dir: Path, data_dir: Path, *, seed: int = 0
) -> RetrievalTraining:
    """The validation slice's retriever and its users, split in halves for encoder and head."""
    validation = validation_split(protocol_split(data.ratings))
    content = load_or_build_index(
        index_dir, data_dir, {int(m): data.item_text(int(m)) for m in data.movie_ids}
    )
    retriever = HybridRetriever(content, CollaborativeIndex.fit(data.movie_ids, validation.snapshot))
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


def fit_head(
    training: RetrievalTraining,
    scorer: Callable[[list[str], list[str]], np.ndarray],
    rng: np.random.Generator,
    *,
    users: int = 120,
    negatives: int = 40,
) -> FusionHead:
    """The fusion head, on held-out users' candidates: every relevant one and ``negatives`` others."""
    scores, rows, labels = [], [], []
    for user in training.head_users[:users]:
        history = list(user.history)[-MAX_HISTORY:]
        scored = training.retriever.user(history)
        candidates = training.retriever.top(scored, set(user.seen), CANDIDATES)
        features = training.retriever.features(scored, candidates)
        relevant = [i for i, m in enumerate(candidates) if m in user.relevant]
        others = [i for i, m in enumerate(candidates) if m not in user.relevant]
        picked = relevant + sorted(
            rng.choice(others, size=min(negatives, len(others)), replace=False).tolist()
        )
        text = training.user_text(user)
        scores.append(scorer([text] * len(picked), [training.data.item_text(candidates[i]) for i in picked]))
        rows.append(features[picked])
        labels.append(np.array([1.0] * len(relevant) + [0.0] * (len(picked) - len(relevant))))
    return fit_fusion(FEATURES, np.concatenate(scores), np.concatenate(rows), np.concatenate(labels))
