"""Canary metrics from a Prometheus server, over a step's window, with PromQL.

A window's count is the counter now minus the counter at the window's start
(``x - x offset <age>``), not ``increase(x[age])``: ``increase`` extrapolates to the range's
edges, which over a short step overstates counts (measured against a real Prometheus: 70 for
40 requests in a few seconds). A counter that starts inside the window counts from zero; a
router restart inside the window (a counter reset) undercounts it, which can only make the
verdict Inconclusive, never a false failure. Score shift is computed from both versions'
score histogram (``recserve_score``) bucket deltas with the same KS distance the scrape provider uses, so both
providers judge alike.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import httpx

from recserve_operator.planners.analysis import WindowMetrics, histogram_quantile, ks_statistic
from recserve_serving.errors import Unavailable
from recserve_serving.serve.metrics import LATENCY, REQUESTS, SCORE


class PrometheusProvider:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[dict[str, Any]]:
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise Unavailable(f"Prometheus at {self.url} unreachable: {error}") from error
        if body.get("status") != "success":
            raise Unavailable(f"Prometheus query failed: {body.get('error', body)}")
        return list(body["data"]["result"])

    def scalar(self, promql: str) -> float:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    @staticmethod
    def delta(series: str, window: str, by: str = "") -> str:
        """PromQL for how much ``series`` (summed, optionally by a label) grew over ``window``."""
        grouping = f" by ({by})" if by else ""
        now = f"sum{grouping} ({series})"
        return f"clamp_min({now} - (sum{grouping} ({series} offset {window}) or {now} * 0), 0)"

    def buckets(self, metric: str, selector: str, window: str) -> tuple[list[float], list[float]]:
        rows = self.query(self.delta(f"{metric}_bucket{{{selector}}}", window, by="le"))
        pairs = sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in rows)
        return [b for b, _ in pairs], [c for _, c in pairs]

    def canary_window(
        self, model: str, stable: str, canary: str, since: datetime, now: datetime
    ) -> WindowMetrics:
        if now <= since:  # a window that only opens now has seen nothing; Prometheus keeps the rest
            return WindowMetrics(requests=0, errors=0, p99_latency_ms=None, score_shift=None)
        window = f"{max(1, math.ceil((now - since).total_seconds()))}s"
        selector = f'model="{model}",version="{canary}"'
        requests = self.scalar(self.delta(f"{REQUESTS}{{{selector}}}", window))
        errors = self.scalar(self.delta(f'{REQUESTS}{{{selector},code=~"5.."}}', window))
        bounds, latency = self.buckets(LATENCY, selector, window)
        p99 = histogram_quantile(0.99, bounds, latency) if bounds else None
        score_bounds, canary_scores = self.buckets(SCORE, selector, window)
        stable_bounds, stable_scores = self.buckets(SCORE, f'model="{model}",version="{stable}"', window)
        shift = None
        if score_bounds and score_bounds == stable_bounds:
            shift = ks_statistic(score_bounds, canary_scores, stable_scores)
        return WindowMetrics(
            requests=round(requests),
            errors=round(errors),
            p99_latency_ms=None if p99 is None else p99 * 1000,
            score_shift=shift,
        )
