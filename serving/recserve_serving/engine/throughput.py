"""How fast an engine ranks one recommend request: the measure a search compares engines by.

A request scores one user against the retrieval candidates, so the benchmark is one user
text repeated against N item texts, not N distinct pairs: an engine that encodes a repeated
user once must get the credit it gets in production. Every candidate of a search is timed
here, with the same texts, threads and repeats, so that the numbers compare; the gate's
latency figures use other batch shapes and answer another question (the latency limit).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recserve_serving.data import Dataset

DEFAULT_PAIRS = 200
DEFAULT_REPEATS = 5

Scorer = Callable[[list[str], list[str]], np.ndarray]


@dataclass(frozen=True)
class Workload:
    """The benchmark's shape: items per request (retrieval candidates), engine threads
    (what a replica's ``resources.cpus`` gives it), and timed repeats after one warm-up."""

    pairs: int = DEFAULT_PAIRS
    threads: int = 2
    repeats: int = DEFAULT_REPEATS

    def describe(self) -> str:
        return f"pairs={self.pairs},threads={self.threads},repeats={self.repeats}"


@dataclass(frozen=True)
class Throughput:
    best_ms: float
    median_ms: float
    pairs_per_s: float
    """From the median time: one lucky repeat should not decide a search."""


def recommend_texts(data: Dataset, pairs: int) -> tuple[list[str], list[str]]:
    """The most active user's text repeated ``pairs`` times, against the most popular items
    (what retrieval mostly proposes), cycling through the catalog if it has fewer."""
    user = int(data.train.groupby("user").size().idxmax())
    popular = [int(m) for m in data.popularity.index]
    items = [data.item_text(popular[i % len(popular)]) for i in range(pairs)]
    return [data.user_text(user)] * pairs, items


def measure(
    score: Scorer,
    users: list[str],
    items: list[str],
    repeats: int = DEFAULT_REPEATS,
    clock: Callable[[], float] = time.perf_counter,
) -> Throughput:
    """Time ``score(users, items)`` ``repeats`` times after one untimed warm-up call."""
    if not users or len(users) != len(items):
        raise ValueError(f"need as many user texts as item texts, at least one ({len(users)}, {len(items)})")
    score(users, items)
    times = []
    for _ in range(max(1, repeats)):
        start = clock()
        score(users, items)
        times.append(clock() - start)
    median = statistics.median(times)
    return Throughput(
        best_ms=min(times) * 1000.0,
        median_ms=median * 1000.0,
        pairs_per_s=len(users) / median if median > 0 else float("inf"),
    )
