"""The evaluation split: per-user temporal hold-out on the full catalog, plus cold-start users.

Every user's most recent interactions (``holdout_fraction`` of them, by time) are held out;
their held-out likes are what a method must find among the *whole* catalog minus what the
user rated before the cut. A ``cold_fraction`` of users is removed from the snapshot
altogether: the system never trains on them, and they arrive with only a request history,
which is how a new user meets a deployed model.

The snapshot (warm users' training side) is the only data anything may learn from: the
retrieval index, ALS, item-kNN, popularity and the ranker. Tuning happens on
``validation_split``, the same construction applied inside the snapshot, so the test side
is touched once, by the final figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recserve_serving.data import temporal_split


@dataclass(frozen=True)
class EvalUser:
    user_id: int
    history: tuple[int, ...]
    """Liked items before the cut, oldest first: what a request's ``history`` carries."""
    seen: frozenset[int]
    """Everything rated before the cut: never recommended back."""
    relevant: frozenset[int]
    """Liked items after the cut: the answer key."""
    cold: bool


@dataclass(frozen=True)
class ProtocolSplit:
    snapshot: pd.DataFrame
    users: tuple[EvalUser, ...]
    holdout_fraction: float
    cold_fraction: float
    seed: int

    def describe(self) -> str:
        warm = sum(not u.cold for u in self.users)
        return (
            f"temporal per-user hold-out {self.holdout_fraction:.0%}, cold users {self.cold_fraction:.0%} "
            f"(seed {self.seed}): {len(self.snapshot)} snapshot interactions, "
            f"{warm} warm and {len(self.users) - warm} cold test users"
        )

    def sample(self, n: int | None, *, seed: int = 0) -> ProtocolSplit:
        """At most ``n`` test users, in the same warm/cold proportion, deterministically."""
        if n is None or n >= len(self.users):
            return self
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(self.users), size=n, replace=False).tolist())
        return ProtocolSplit(
            self.snapshot,
            tuple(self.users[i] for i in picked),
            self.holdout_fraction,
            self.cold_fraction,
            self.seed,
        )


def protocol_split(
    interactions: pd.DataFrame, *, holdout_fraction: float = 0.2, cold_fraction: float = 0.1, seed: int = 0
) -> ProtocolSplit:
    """Split ``interactions`` (``Dataset.interactions``: user, item, weight, timestamp, liked) as the
    module docstring says."""
    if not 0.0 <= cold_fraction < 1.0:
        raise ValueError(f"cold_fraction must be in [0, 1), got {cold_fraction}")
    train, test, _ = temporal_split(interactions, holdout_fraction)
    all_users = np.array(sorted(interactions.user.unique()), dtype=np.int64)
    rng = np.random.default_rng(seed)
    cold = set(rng.choice(all_users, size=round(cold_fraction * len(all_users)), replace=False).tolist())
    snapshot = train[~train.user.isin(cold)].reset_index(drop=True)
    test_likes = test[test.liked].groupby("user").item.apply(frozenset)
    users = []
    for user_id, frame in train.groupby("user"):
        relevant = test_likes.get(user_id)
        ordered = frame.sort_values("timestamp", kind="stable")
        liked = tuple(int(m) for m in ordered.item[ordered.liked])
        if not relevant or not liked:
            continue
        users.append(
            EvalUser(
                user_id=int(user_id),
                history=liked,
                seen=frozenset(int(m) for m in ordered.item),
                relevant=frozenset(int(m) for m in relevant),
                cold=int(user_id) in cold,
            )
        )
    return ProtocolSplit(snapshot, tuple(users), holdout_fraction, cold_fraction, seed)


def validation_split(split: ProtocolSplit) -> ProtocolSplit:
    """The same protocol applied inside the snapshot: for tuning and ranker training only."""
    return protocol_split(
        split.snapshot,
        holdout_fraction=split.holdout_fraction,
        cold_fraction=split.cold_fraction,
        seed=split.seed + 1,
    )
