"""Judging a canary step from its metrics: the pure half of canary analysis.

Providers (a Prometheus query, or a direct scrape of the app's ``/metrics``) turn the
step's window into ``WindowMetrics``; this module turns those into a verdict against the
spec's limits. Too few requests is Inconclusive, never Fail: a quiet hour must not roll
back a good model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from recserve_operator.api.status import AnalysisResult
from recserve_operator.api.types import AnalysisSpec


@dataclass(frozen=True)
class WindowMetrics:
    """What the canary (and stable, for score shift) did during one step's window."""

    requests: int
    errors: int
    p99_latency_ms: float | None
    score_shift: float | None
    window_start: datetime | None = None
    """When the window really began, where that is later than asked (a baseline taken again)."""


def ks_statistic(
    bucket_bounds: Sequence[float], canary: Sequence[float], stable: Sequence[float]
) -> float | None:
    """Two-sample Kolmogorov-Smirnov distance of two histograms with the same buckets.

    ``canary`` and ``stable`` are cumulative counts per upper bound (Prometheus ``le``
    buckets, +Inf last). None when either side has no observations.
    """
    if len(canary) != len(bucket_bounds) or len(stable) != len(bucket_bounds):
        raise ValueError("histograms must have one cumulative count per bucket bound")
    total_c, total_s = canary[-1], stable[-1]
    if total_c <= 0 or total_s <= 0:
        return None
    return max(abs(c / total_c - s / total_s) for c, s in zip(canary, stable, strict=True))


def histogram_quantile(q: float, bucket_bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """Prometheus-style quantile from cumulative bucket counts, interpolating inside a bucket."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bucket_bounds, cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def judge(spec: AnalysisSpec, metrics: WindowMetrics, now: datetime) -> AnalysisResult:
    error_rate = metrics.errors / metrics.requests if metrics.requests else None
    base = {
        "requests": metrics.requests,
        "error_rate": error_rate,
        "p99_latency_ms": metrics.p99_latency_ms,
        "score_shift": metrics.score_shift,
        "checked_at": now,
    }
    if metrics.requests < spec.min_requests:
        message = f"{metrics.requests} canary requests in this step, analysis needs {spec.min_requests}"
        return AnalysisResult(verdict="Inconclusive", message=message, **base)
    failures = []
    if spec.max_error_rate is not None and error_rate is not None and error_rate > spec.max_error_rate:
        failures.append(f"error rate {error_rate:.4f} > {spec.max_error_rate}")
    p99 = metrics.p99_latency_ms
    if spec.max_p99_latency_ms is not None and p99 is not None and p99 > spec.max_p99_latency_ms:
        failures.append(f"p99 latency {p99:.1f}ms > {spec.max_p99_latency_ms}ms")
    shift = metrics.score_shift
    if spec.max_score_shift is not None and shift is not None and shift > spec.max_score_shift:
        failures.append(f"score shift {shift:.3f} > {spec.max_score_shift}")
    if failures:
        return AnalysisResult(verdict="Fail", message="; ".join(failures), **base)
    if spec.max_score_shift is not None and shift is None:
        # A limit that cannot be checked yet (no stable scores in the window, e.g. while stable
        # itself is being handed over) holds the step; it must never pass by default.
        message = "score shift not measurable yet: no stable scores in this window"
        return AnalysisResult(verdict="Inconclusive", message=message, **base)
    return AnalysisResult(verdict="Pass", message=f"{metrics.requests} requests within limits", **base)
