"""Fetch a trace from Prometheus: a range query of request rates over a past window.

Real traffic replays this way, e.g. yesterday's
``sum(rate(recserve_requests_total{model="movielens-ranker",endpoint="/v1/recommend"}[1m]))``.
The query must return one series in requests per second; ``trace.from_prometheus_matrix``
checks the answer and turns it into a rates trace.
"""

from __future__ import annotations

import httpx

from recserve_operator.autoscale.trace import Trace, TraceError, from_prometheus_matrix
from recserve_serving.errors import Unavailable

MAX_POINTS = 11_000
"""Prometheus refuses a range query of more than 11,000 points per series."""


def fetch_rates(
    url: str, query: str, *, start: float, end: float, step_s: float, timeout: float = 30.0
) -> Trace:
    """GET ``/api/v1/query_range`` for ``query`` from ``start`` to ``end`` (Unix seconds) every ``step_s``."""
    if end <= start:
        raise TraceError(f"the range must end after it starts (start {start:.0f}, end {end:.0f})")
    if step_s <= 0:
        raise TraceError(f"--step must be > 0 seconds, got {step_s:g}")
    if (end - start) / step_s > MAX_POINTS:
        raise TraceError(
            f"{(end - start) / step_s:.0f} points at a {step_s:g} s step; Prometheus answers at most "
            f"{MAX_POINTS}: raise --step to {(end - start) / MAX_POINTS:.0f} s or shorten the range"
        )
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
    try:
        response = httpx.get(endpoint, params=params, timeout=timeout)
    except httpx.HTTPError as error:
        raise Unavailable(f"Prometheus at {url} unreachable: {error}") from error
    try:
        body = response.json()
    except ValueError:
        raise TraceError(
            f"{endpoint} answered {response.status_code} with no JSON: {response.text[:200]!r}"
        ) from None
    return from_prometheus_matrix(body, f"Prometheus {url} query {query!r}")
