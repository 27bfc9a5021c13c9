"""Which version serves a request: sticky and monotone in the canary weight.

A user's bucket is a stable hash of their id, so the same user always lands on the same
side at a given weight, and raising the weight only moves users from stable to canary,
never back. Requests without a user id have no stickiness to keep and split at random.
"""

from __future__ import annotations

import hashlib
import random

BUCKETS = 10_000


def user_bucket(user_id: int | str) -> int:
    digest = hashlib.sha256(f"recserve:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_version(user_id: int | str | None, canary_weight: float, rng: random.Random | None = None) -> str:
    """``"canary"`` for the first ``canary_weight`` percent of buckets, ``"stable"`` otherwise."""
    if canary_weight <= 0:
        return "stable"
    if canary_weight >= 100:
        return "canary"
    threshold = canary_weight / 100 * BUCKETS
    if user_id is None:
        return "canary" if (rng or random).random() * BUCKETS < threshold else "stable"
    return "canary" if user_bucket(user_id) < threshold else "stable"
