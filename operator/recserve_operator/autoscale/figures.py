"""The figures an SRE decides on, from one simulation: latency, SLO seconds, replica-hours and cost.

A refused (503) or timed-out (504) request counts as slower than any SLO: it is in the p99 of
all requests as infinitely slow, so an SLO is met only if at least 99% of requests were answered
within it. p50/p99 of answered requests are reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from recserve_operator.autoscale.simulate import SimulationResult


def quantile(values: Sequence[float], q: float) -> float:
    """The q-th quantile (0..1), linear between ranks like ``loadgen.percentile_ms``; nan when empty.

    Infinite values sort last; a rank that falls on one is infinite.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    if fraction == 0 or ordered[high] == ordered[low]:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


@dataclass(frozen=True)
class Figures:
    requests: int
    answered: int
    rejected: int
    timed_out: int
    p50_ms: float  # of answered requests
    p99_ms: float  # of answered requests
    p99_all_ms: float  # of every request, refused and timed-out ones as infinitely slow
    slo_p99_ms: float | None
    slo_violation_seconds: int  # seconds whose arrivals' p99 (all requests) exceeds the SLO
    replica_seconds: float
    cost: float | None  # at the price per replica-hour, when one is given
    upscales: int
    downscales: int
    mean_replicas: float
    peak_replicas: int

    @property
    def slo_met(self) -> bool:
        return self.slo_p99_ms is not None and self.p99_all_ms <= self.slo_p99_ms

    @property
    def replica_hours(self) -> float:
        return self.replica_seconds / 3600


def violation_seconds(result: SimulationResult, slo_ms: float) -> int:
    """Seconds of the trace in which the p99 of the requests that arrived exceeds ``slo_ms``."""
    by_second: dict[int, list[float]] = {}
    for arrived, latency in zip(result.arrivals, result.latency_s, strict=True):
        by_second.setdefault(int(arrived), []).append(latency)
    limit = slo_ms / 1000
    return sum(1 for latencies in by_second.values() if quantile(latencies, 0.99) > limit)


def figures(
    result: SimulationResult, *, slo_p99_ms: float | None = None, price_per_replica_hour: float | None = None
) -> Figures:
    answered = [x for x in result.latency_s if x != math.inf]
    duration = result.duration_s
    timeline = result.timeline
    return Figures(
        requests=len(result.latency_s),
        answered=len(answered),
        rejected=result.rejected,
        timed_out=result.timed_out,
        p50_ms=1000 * quantile(answered, 0.5),
        p99_ms=1000 * quantile(answered, 0.99),
        p99_all_ms=1000 * quantile(result.latency_s, 0.99),
        slo_p99_ms=slo_p99_ms,
        slo_violation_seconds=0 if slo_p99_ms is None else violation_seconds(result, slo_p99_ms),
        replica_seconds=result.replica_seconds,
        cost=None
        if price_per_replica_hour is None
        else result.replica_seconds / 3600 * price_per_replica_hour,
        upscales=len(result.upscales),
        downscales=len(result.downscales),
        mean_replicas=result.replica_seconds / duration
        if duration > 0
        else float(result.knobs.start_replicas),
        peak_replicas=max(timeline.replicas, default=result.knobs.start_replicas),
    )
