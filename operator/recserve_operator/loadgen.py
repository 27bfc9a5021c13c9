"""Bounded HTTP traffic for demos, tests and benchmarks: real requests, real users.

Each worker posts ``/v1/recommend`` for users drawn from MovieLens ids (or the caller's own
request bodies to any path), until a request count or a deadline is reached (whichever
first); nothing runs unbounded. Results keep per-request latency, status and served version,
so callers can check splits and errors.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from recserve_serving.serve.api_models import UNROUTED, VERSION_HEADER

JSON_HEADERS = {"Content-Type": "application/json"}


def percentile_ms(latencies_s: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) in milliseconds, linear interpolation; nan when empty.

    Interpolated rather than nearest-rank so that a p99 over a few dozen requests still moves
    with the slowest ones instead of jumping between two observed values.
    """
    if not latencies_s:
        return math.nan
    ordered = sorted(latencies_s)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return 1000 * value


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    ok_latencies: list[float] = field(default_factory=list)  # 2xx only: what a served request costs
    codes: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    version_errors: Counter[str] = field(default_factory=Counter)  # 5xx answers, by the version named
    failures: list[str] = field(default_factory=list)
    first_error: str = ""  # the first failure or non-2xx answer, short enough for a report line
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.codes.values()) + len(self.failures)

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code >= 500) + len(self.failures)

    def quantile_ms(self, q: float) -> float:
        """Latency quantile ``q`` (0..1) of every answered request, in milliseconds."""
        return percentile_ms(self.latencies, 100 * q)

    @property
    def qps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    next_body: Callable[[], bytes],
    deadline: float,
    budget: list[int],
    result: LoadResult,
) -> None:
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        body = next_body()
        start = time.perf_counter()
        try:
            response = await client.post(url, content=body, headers=JSON_HEADERS)
        except httpx.HTTPError as error:
            result.failures.append(f"{body.decode(errors='replace')[:80]}: {error!r}")
            result.first_error = result.first_error or repr(error)
            continue
        took = time.perf_counter() - start
        result.latencies.append(took)
        result.codes[response.status_code] += 1
        version = response.headers.get(VERSION_HEADER, UNROUTED)
        result.versions[version] += 1
        if response.status_code >= 500:
            result.version_errors[version] += 1
        if response.is_success:
            result.ok_latencies.append(took)
        else:
            result.first_error = result.first_error or f"{response.status_code} {response.text[:200]}"


def _random_users(k: int, rng: random.Random) -> Callable[[], bytes]:
    users = range(1, 611)
    return lambda: json.dumps({"user_id": rng.choice(users), "k": k}).encode()


def _in_order(bodies: Sequence[bytes]) -> Callable[[], bytes]:
    """One cycle shared by all workers, so every run sends the same sequence of bodies."""
    order = itertools.cycle(bodies)
    return lambda: next(order)


async def _run(
    url: str,
    concurrency: int,
    requests: int,
    seconds: float,
    k: int,
    seed: int,
    bodies: Sequence[bytes] | None,
    timeout: float,
) -> LoadResult:
    rng = random.Random(seed)
    shared = _in_order(bodies) if bodies else None
    result = LoadResult()
    budget = [requests]
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(
            *(
                _worker(
                    client,
                    url,
                    shared or _random_users(k, random.Random(rng.random())),
                    started + seconds,
                    budget,
                    result,
                )
                for _ in range(concurrency)
            )
        )
    result.elapsed = time.monotonic() - started
    return result


def generate(
    url: str,
    *,
    concurrency: int = 4,
    requests: int = 1000,
    seconds: float = 60.0,
    k: int = 10,
    seed: int = 0,
    path: str = "/v1/recommend",
    bodies: Sequence[bytes] | None = None,
    timeout: float = 60.0,
) -> LoadResult:
    """Send up to ``requests`` POSTs to ``url + path`` within ``seconds`` from ``concurrency`` workers.

    Without ``bodies`` each request recommends ``k`` movies to a random MovieLens user; with
    them, the JSON bodies are sent in order (cycled), which lets a benchmark replay one
    request mix on every server it compares.
    """
    return asyncio.run(_run(url.rstrip("/") + path, concurrency, requests, seconds, k, seed, bodies, timeout))


@dataclass(frozen=True)
class Replayed:
    """One request of an open-loop replay: when it was due, how long it took, how it ended."""

    due: float  # seconds from the replay's start
    latency: float  # seconds from sending to the answer (or the failure)
    status: int  # the HTTP status; 0 when no answer came (connection error, client timeout)


async def _replay(
    url: str, arrivals: Sequence[float], k: int, seed: int, timeout: float, max_in_flight: int
) -> list[Replayed]:
    next_body = _random_users(k, random.Random(seed))
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    results: list[Replayed] = []

    async def one(client: httpx.AsyncClient, due: float, body: bytes) -> None:
        start = time.perf_counter()
        try:
            response = await client.post(url, content=body, headers=JSON_HEADERS)
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        results.append(Replayed(due, time.perf_counter() - start, status))

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()
        tasks = []
        for due in arrivals:
            delay = started + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, due, next_body())))
        await asyncio.gather(*tasks)
    return sorted(results, key=lambda r: r.due)


def replay(
    url: str,
    arrivals: Sequence[float],
    *,
    k: int = 10,
    seed: int = 0,
    path: str = "/v1/recommend",
    timeout: float = 60.0,
    max_in_flight: int = 1024,
) -> list[Replayed]:
    """Send one recommend request at each of ``arrivals`` (seconds from now), whatever the answers.

    Open loop, unlike ``generate``: a slow server does not slow the senders down, which is how
    real traffic (and a trace replay) behaves. ``max_in_flight`` bounds the client's connections;
    keep it above what the server can hold, or the client queues instead of the server.
    """
    return asyncio.run(_replay(url.rstrip("/") + path, arrivals, k, seed, timeout, max_in_flight))


class BackgroundTraffic:
    """``generate`` in bounded rounds on a background thread until ``finish()``: a rollout's
    steady user traffic, every request of which is kept for counting failures."""

    def __init__(
        self, url: str, *, concurrency: int = 4, round_requests: int = 200, round_seconds: float = 10
    ) -> None:
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
