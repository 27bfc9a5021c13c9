"""Bounded HTTP traffic for demos, tests and benchmarks: real requests, real users.

Each worker posts ``/v1/recommend`` for users drawn from MovieLens ids, until a request
count or a deadline is reached (whichever first); nothing runs unbounded. Results keep
per-request latency, status and served version, so callers can check splits and errors.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from recserve_serving.serve.api_models import UNROUTED, VERSION_HEADER


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.codes.values()) + len(self.failures)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code >= 500) + len(self.failures)

    def quantile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def qps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    users: list[int],
    k: int,
    deadline: float,
    budget: list[int],
    result: LoadResult,
    rng: random.Random,
) -> None:
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        user = rng.choice(users)
        start = time.perf_counter()
        try:
            response = await client.post(f"{url}/v1/recommend", json={"user_id": user, "k": k})
        except httpx.HTTPError as error:
            result.failures.append(f"user {user}: {error!r}")
            continue
        result.latencies.append(time.perf_counter() - start)
        result.codes[response.status_code] += 1
        result.versions[response.headers.get(VERSION_HEADER, UNROUTED)] += 1


async def _run(url: str, concurrency: int, requests: int, seconds: float, k: int, seed: int) -> LoadResult:
    rng = random.Random(seed)
    users = list(range(1, 611))
    result = LoadResult()
    budget = [requests]
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(
            *(
                _worker(client, url, users, k, started + seconds, budget, result, random.Random(rng.random()))
                for _ in range(concurrency)
            )
        )
    result.elapsed = time.monotonic() - started
    return result


def generate(
    url: str, *, concurrency: int = 4, requests: int = 1000, seconds: float = 60.0, k: int = 10, seed: int = 0
) -> LoadResult:
    """Send up to ``requests`` recommend calls within ``seconds`` from ``concurrency`` workers."""
    return asyncio.run(_run(url.rstrip("/"), concurrency, requests, seconds, k, seed))


class BackgroundTraffic:
    """``generate`` in bounded rounds on a background thread until ``finish()``: a rollout's
    steady user traffic, every request of which is kept for counting failures."""

    def __init__(
        self, url: str, *, concurrency: int = 4, round_requests: int = 200, round_seconds: float = 10
    ):
        self.url = url
        self.concurrency, self.round_requests, self.round_seconds = concurrency, round_requests, round_seconds
        self.stop = threading.Event()
        self.rounds: list[LoadResult] = []
        self.thread = threading.Thread(target=self._run, name="background-traffic", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seed = 0
        while not self.stop.is_set():
            self.rounds.append(
                generate(
                    self.url,
                    concurrency=self.concurrency,
                    requests=self.round_requests,
                    seconds=self.round_seconds,
                    seed=seed,
                )
            )
            seed += 1

    def finish(self, timeout: float = 120) -> list[LoadResult]:
        self.stop.set()
        self.thread.join(timeout=timeout)
        return self.rounds
