"""Turning a path into table rows: HTTP levels through the project's load generator, and the
engine called in-process, which is the capacity every served path is compared with."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.serving_bench.processes import say
from bench.serving_bench.report import Row, summarize
from recserve_operator.loadgen import LoadResult, generate

K = 10  # every path recommends, or scores the pairs of, the top 10
SEED = 7  # the users of the request mix


@dataclass(frozen=True)
class Settings:
    """How much each block runs. ``--quick`` is a smoke run of every path with small requests."""

    quick: bool
    users: int  # distinct request bodies, cycled in the same order on every path
    direct_s: float  # each of the two in-process blocks
    full_users: int  # full-catalog requests (at most; none starts after full_s)
    full_s: float
    baseline_requests: int
    catalog_limit: int | None  # quick: "full catalog" is cut to this many movies
    candidates: int | None  # quick: retrieval.candidates override
    issue_s: float  # no new request of a level starts after this
    explain_requests: int  # each side of the explain comparison (plain, explain) at concurrency 1
    levels: tuple[int, ...] = (1, 8)  # the recommend sweep on Serve, for both paths
    train: tuple[str, ...] = ()  # extra `recserve train` options for checkpoints the bench trains
    alternations: int = 2  # in-process: rounds of (optimized block, today block), at start and at end
    level_s: float = 60.0  # a sweep level issues no new request after this (the sweep's time bound)

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                quick=True,
                users=80,
                direct_s=4,
                full_users=1,
                full_s=0,
                baseline_requests=1,
                catalog_limit=500,
                candidates=20,
                issue_s=60,
                explain_requests=8,
                levels=(1, 8, 32),
                train=("--steps", "5", "--eval-users", "10"),
                alternations=1,
                level_s=60,
            )
        return cls(
            quick=False,
            users=400,
            direct_s=20,
            full_users=2,
            full_s=150,
            baseline_requests=1,
            catalog_limit=None,
            candidates=None,
            issue_s=300,
            explain_requests=40,
            levels=(1, 2, 4, 8, 16, 32),
            train=(),
            alternations=2,
            level_s=150,
        )

    def level_requests(self, concurrency: int) -> int:
        """Requests of one level of the recommend sweep: whole rounds, at least enough for a p99
        worth reading at low concurrency (each level also stops issuing after ``issue_s``)."""
        if self.quick:
            return max(4, concurrency * 2)
        rounds = max(2, -(-30 // concurrency))  # ceil(30 / c), at least 2 rounds
        return concurrency * rounds

    def requests(self, concurrency: int, *, small: bool = False) -> int:
        """Closed-loop requests of one level: whole rounds of ``concurrency`` (so the last round is full)."""
        if small:  # 1-pair requests are cheap: many rounds
            return concurrency * (10 if self.quick else 20)
        if concurrency == 1:
            return 4 if self.quick else 10
        return concurrency * 2 if self.quick or concurrency >= 32 else concurrency * 3


def row_of(label: str, concurrency: int, result: LoadResult, note: str = "") -> Row:
    """A table row of the successful requests; the first error, if any, goes into the note."""
    if result.first_error:
        note = (note + "; " if note else "") + f"first error: {result.first_error[:120]}"
    errors = result.requests - len(result.ok_latencies)
    return summarize(label, concurrency, result.ok_latencies, result.elapsed, errors, note)


def measure_http(
    label: str,
    url: str,
    path: str,
    bodies: Sequence[bytes],
    concurrency: int,
    settings: Settings,
    *,
    small: bool = False,
    note: str = "",
    requests: int | None = None,
    seconds: float | None = None,
) -> Row:
    """One closed-loop level: a whole number of rounds of ``concurrency`` requests, timed end to end
    (``requests`` of them when given, else as many as the settings say for the level)."""
    requests = requests or settings.requests(concurrency, small=small)
    result = generate(
        url,
        path=path,
        bodies=bodies,
        concurrency=concurrency,
        seconds=seconds or settings.issue_s,
        requests=requests,
        timeout=600,
    )
    row = row_of(label, concurrency, result, note)
    say(
        f"{label} c={concurrency}: {row.ok} ok, {row.errors} err, {row.qps:.2f} QPS, "
        f"p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms"
    )
    return row


def warm_up(url: str, path: str, bodies: Sequence[bytes]) -> None:
    """A few requests (other users than the measured ones) so that first-call costs are not measured."""
    result = generate(
        url, path=path, bodies=list(reversed(bodies)), concurrency=4, seconds=300, requests=8, timeout=600
    )
    if result.requests > len(result.ok_latencies):
        raise RuntimeError(f"warm-up of {url}{path} failed: {result.first_error[:300]}")


def direct_block(
    engine: Any, catalog: Any, router: Any, users: Sequence[int], seconds: float
) -> tuple[list[float], float]:
    """Two-stage recommend in-process, one request after another: latencies and wall time."""
    from recserve_serving.serve.api_models import RecommendRequest
    from recserve_serving.serve.recommend import plan_recommendation

    latencies = []
    started = time.monotonic()
    for i in range(100_000):
        if time.monotonic() - started >= seconds:
            break
        start = time.perf_counter()
        plan = plan_recommendation(RecommendRequest(user_id=users[i % len(users)], k=K), catalog, router)
        scores = engine.score(plan.user_texts, plan.item_texts)
        plan.respond(scores.tolist(), "direct")
        latencies.append(time.perf_counter() - start)
    return latencies, time.monotonic() - started


def alternating_blocks(
    engines: Sequence[Any], catalog: Any, router: Any, users: Sequence[int], seconds: float, rounds: int
) -> list[tuple[list[float], float, list[float]]]:
    """``direct_block`` of each engine in turn, ``rounds`` times (A B A B …), so that a change of
    load on the shared machine weighs on every engine alike. Per engine: (latencies, busy seconds,
    QPS of each of its blocks)."""
    results: list[tuple[list[float], float, list[float]]] = [([], 0.0, []) for _ in engines]
    for _ in range(rounds):
        for n, engine in enumerate(engines):
            latencies, elapsed = direct_block(engine, catalog, router, users, seconds)
            merged, busy, qps = results[n]
            merged += latencies
            qps.append(len(latencies) / elapsed if elapsed else 0.0)
            results[n] = (merged, busy + elapsed, qps)
    return results


def explain_blocks(
    engine: Any, catalog: Any, router: Any, users: Sequence[int], requests: int
) -> tuple[tuple[list[float], float], tuple[list[float], float]]:
    """Recommend in-process without and with explanations, ``requests`` of each, alternating request
    by request (same user, plain first), so that a change of load on the machine weighs on both
    sides alike. (latencies, busy seconds) of each side."""
    from recserve_serving.serve.api_models import RecommendRequest
    from recserve_serving.serve.explain import explain_items, occlude
    from recserve_serving.serve.recommend import plan_recommendation

    sides: tuple[list[float], list[float]] = ([], [])
    for i in range(requests):
        for side, explain in zip(sides, (False, True), strict=True):
            start = time.perf_counter()
            request = RecommendRequest(user_id=users[i % len(users)], k=K, explain=explain)
            plan = plan_recommendation(request, catalog, router)
            response = plan.respond(engine.score(plan.user_texts, plan.item_texts).tolist(), "direct")
            if explain:
                codes = plan.codes_of(response.items)
                occlusion = occlude(
                    catalog, plan.user_id, plan.history, plan.user_text, codes, router.explain
                )
                explain_items(response.items, occlusion, engine.score(*occlusion.pairs()).tolist(), catalog)
            side.append(time.perf_counter() - start)
    return (sides[0], sum(sides[0])), (sides[1], sum(sides[1]))


def unrated(catalog: Any, user: int, limit: int | None) -> list[int]:
    """Every catalog movie the user has not rated (the first ``limit`` of them in a quick run)."""
    seen = catalog.seen(user)
    return [int(m) for m in catalog.dataset.item_ids if int(m) not in seen][:limit]


def full_catalog(
    engine: Any, catalog: Any, users: Sequence[int], seconds: float, limit: int | None
) -> tuple[list[float], float, int]:
    """The same engine scoring every movie each user has not rated (no retrieval stage)."""
    latencies, pairs = [], 0
    started = time.monotonic()
    for n, user in enumerate(users):
        if n and time.monotonic() - started >= seconds:
            break
        start = time.perf_counter()
        candidates = unrated(catalog, user, limit)
        user_text = catalog.user_text(user, None)
        scores = engine.score([user_text] * len(candidates), [catalog.item_text(m) for m in candidates])
        sorted(range(len(scores)), key=lambda i: -scores[i])[:K]
        latencies.append(time.perf_counter() - start)
        pairs += len(candidates)
    return latencies, time.monotonic() - started, pairs // max(1, len(latencies))
