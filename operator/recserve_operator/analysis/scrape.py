"""Canary metrics from a direct scrape of the router's ``/metrics``.

Counters and histograms are cumulative since the router started, so a step's window is
the difference between now and a snapshot taken when the window began (the first scrape
at or after the step start; reconcile takes it in the pass that starts the step). A router restart resets counters; a negative difference is
taken as a reset and the current values count as the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from recserve_operator.planners.analysis import WindowMetrics, histogram_quantile, ks_statistic
from recserve_serving.errors import Unavailable
from recserve_serving.serve.metrics import LATENCY, REQUESTS, SCORE

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Sample:
    """Every sample of one scrape, by metric name and sorted labels."""

    values: dict[Key, float]

    def select(self, name: str, **labels: str) -> dict[Key, float]:
        return {
            key: value
            for key, value in self.values.items()
            if key[0] == name and all(dict(key[1]).get(k) == v for k, v in labels.items())
        }


def parse(text: str) -> Sample:
    values: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return Sample(values)


def _delta(now: Sample, then: Sample | None) -> Sample:
    if then is None:
        return now
    out = {}
    for key, value in now.values.items():
        diff = value - then.values.get(key, 0.0)
        out[key] = value if diff < 0 else diff
    return Sample(out)


def _buckets(sample: Sample, name: str, **labels: str) -> tuple[list[float], list[float]]:
    """(upper bounds, cumulative counts) of one histogram, summed over any other labels."""
    per_bound: dict[float, float] = {}
    for key, value in sample.select(f"{name}_bucket", **labels).items():
        bound = float(dict(key[1])["le"])
        per_bound[bound] = per_bound.get(bound, 0.0) + value
    bounds = sorted(per_bound)
    return bounds, [per_bound[b] for b in bounds]


def _sum(values: Iterable[float]) -> float:
    return float(sum(values))


def window_metrics(window: Sample, model: str, stable: str, canary: str) -> WindowMetrics:
    requests = window.select(REQUESTS, model=model, version=canary)
    total = _sum(requests.values())
    errors = _sum(v for k, v in requests.items() if dict(k[1]).get("code", "").startswith("5"))
    bounds, latency = _buckets(window, LATENCY, model=model, version=canary)
    p99 = histogram_quantile(0.99, bounds, latency) if bounds else None
    score_bounds, canary_scores = _buckets(window, SCORE, model=model, version=canary)
    _, stable_scores = _buckets(window, SCORE, model=model, version=stable)
    shift = None
    if score_bounds and len(stable_scores) == len(canary_scores):
        shift = ks_statistic(score_bounds, canary_scores, stable_scores)
    return WindowMetrics(
        requests=int(total),
        errors=int(errors),
        p99_latency_ms=None if p99 is None or math.isnan(p99) else p99 * 1000,
        score_shift=shift,
    )


class ScrapeProvider:
    """Scrapes ``{endpoint}/metrics`` and keeps one baseline per model, endpoint and canary.

    The baseline lives in memory, so a restarted operator has none for a step already under
    way: it takes one at its first scrape and reports that moment as ``window_start``, and
    the caller restarts the step's window there rather than judging seconds of traffic.
    """

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.baselines: dict[tuple[str, str, str], tuple[datetime, Sample]] = {}

    def scrape(self, endpoint: str) -> Sample:
        try:
            response = httpx.get(f"{endpoint.rstrip('/')}/metrics", timeout=self.timeout)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise Unavailable(f"cannot scrape {endpoint}/metrics: {error}") from error
        return parse(response.text)

    def canary_window(
        self, endpoint: str, model: str, stable: str, canary: str, since: datetime, now: datetime
    ) -> WindowMetrics:
        sample = self.scrape(endpoint)
        key = (endpoint, model, canary)
        kept = self.baselines.get(key)
        if kept is None or kept[0] < since:
            self.baselines[key] = (now, sample)
            empty = window_metrics(_delta(sample, sample), model, stable, canary)
            return replace(empty, window_start=now)
        taken_at, baseline = kept
        return replace(window_metrics(_delta(sample, baseline), model, stable, canary), window_start=taken_at)
