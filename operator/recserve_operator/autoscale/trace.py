"""Request traces: one request per timestamp, or request rates per time step, and their arrivals.

Two CSV shapes, told apart by their header line (``#`` lines are comments):

- ``timestamp``: one line per request, seconds, ascending (a replayed access log);
- ``time,rate``: requests per second from ``time`` until the next line's time (the last step
  lasts as long as the one before it, or one second); Prometheus range queries and the
  generators write this shape.

Times are seconds; the trace starts at its first time (so Unix timestamps work as they are).
Rates are replayed as Poisson arrivals with a fixed seed, so every simulation of one trace sees
the very same requests. Bad input is refused with the line that is wrong and what it must be.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal

from recserve_serving.errors import InvalidRequest

TIMESTAMP_HEADER = "timestamp"
RATE_HEADER = "time,rate"


class TraceError(InvalidRequest):
    """A trace file or query result that cannot be replayed, with where and how to fix it."""


@dataclass(frozen=True)
class Trace:
    source: str
    kind: Literal["timestamps", "rates"]
    times: tuple[float, ...]  # seconds from the trace's start, ascending
    rates: tuple[float, ...] | None  # requests per second from each time on (rates traces only)
    duration_s: float

    def arrivals(self, seed: int = 0) -> list[float]:
        """Request arrival times: the timestamps themselves, or a Poisson process at the rates."""
        if self.rates is None:
            return list(self.times)
        rng = random.Random(f"recserve-arrivals-{seed}")
        arrivals: list[float] = []
        ends = [*self.times[1:], self.duration_s]
        for start, end, rate in zip(self.times, ends, self.rates, strict=True):
            if rate <= 0:
                continue
            t = start + rng.expovariate(rate)
            while t < end:
                arrivals.append(t)
                t += rng.expovariate(rate)
        return arrivals

    @property
    def mean_rate(self) -> float:
        if self.duration_s <= 0:
            return 0.0
        if self.rates is None:
            return len(self.times) / self.duration_s
        ends = [*self.times[1:], self.duration_s]
        return (
            sum(r * (e - s) for s, e, r in zip(self.times, ends, self.rates, strict=True)) / self.duration_s
        )

    @property
    def peak_rate(self) -> float:
        """The highest step rate (rates traces) or the busiest second (timestamp traces)."""
        if self.rates is not None:
            return max(self.rates, default=0.0)
        per_second: dict[int, int] = {}
        for t in self.times:
            per_second[int(t)] = per_second.get(int(t), 0) + 1
        return float(max(per_second.values(), default=0))


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{where}: {what} {text!r} must be a finite number")
    return value


def rates_trace(source: str, times: list[float], rates: list[float], where: list[str]) -> Trace:
    """A rates trace from absolute step times, checked the same way whatever it came from."""
    if not times:
        raise TraceError(f"{source}: no data lines after the header; a trace needs at least one")
    for i, (t, rate) in enumerate(zip(times, rates, strict=True)):
        if t < 0:
            raise TraceError(f"{where[i]}: time {t:g} is negative; times are seconds >= 0")
        if i and t <= times[i - 1]:
            raise TraceError(
                f"{where[i]}: time {t:g} is not after the previous line's {times[i - 1]:g}; "
                "steps must be in strictly ascending time order"
            )
        if rate < 0:
            raise TraceError(f"{where[i]}: rate {rate:g} is negative; a rate is requests per second >= 0")
    step = times[-1] - times[-2] if len(times) > 1 else 1.0
    start = times[0]
    relative = tuple(t - start for t in times)
    return Trace(source, "rates", relative, tuple(rates), relative[-1] + step)


def parse_trace(text: str, source: str) -> Trace:
    """A trace from CSV ``text``; ``source`` (a file name) prefixes every error message."""
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise TraceError(
            f"{source}: empty; write a header line `{TIMESTAMP_HEADER}` or `{RATE_HEADER}`, then data"
        )
    header_line, header = lines[0]
    columns = ",".join(c.strip().lower() for c in header.split(","))
    data = lines[1:]
    if columns == TIMESTAMP_HEADER:
        return _timestamps(source, data)
    if columns == RATE_HEADER:
        times, rates, where = [], [], []
        for n, line in data:
            cells = [c.strip() for c in line.split(",")]
            at = f"{source}:{n}"
            if len(cells) != 2:
                raise TraceError(f"{at}: expected 2 values `time,rate`, got {len(cells)}: {line!r}")
            times.append(_number(cells[0], at, "time"))
            rates.append(_number(cells[1], at, "rate"))
            where.append(at)
        return rates_trace(source, times, rates, where)
    raise TraceError(
        f"{source}:{header_line}: header {header!r} is neither `{TIMESTAMP_HEADER}` (one request per line) "
        f"nor `{RATE_HEADER}` (requests per second from that time on)"
    )


def _timestamps(source: str, data: list[tuple[int, str]]) -> Trace:
    if not data:
        raise TraceError(f"{source}: no data lines after the header; a trace needs at least one request")
    times: list[float] = []
    for n, line in data:
        at = f"{source}:{n}"
        if "," in line:
            raise TraceError(f"{at}: expected one timestamp per line, got {line!r}")
        t = _number(line, at, "timestamp")
        if t < 0:
            raise TraceError(f"{at}: timestamp {t:g} is negative; timestamps are seconds >= 0")
        if times and t < times[-1]:
            raise TraceError(
                f"{at}: timestamp {t:g} is before the previous line's {times[-1]:g}; "
                "sort the trace by time (e.g. `sort -g`)"
            )
        times.append(t)
    start = times[0]
    relative = tuple(t - start for t in times)
    return Trace(source, "timestamps", relative, None, relative[-1])


def to_csv(trace: Trace, comment: str = "") -> str:
    """The CSV text ``parse_trace`` reads back as the same trace."""
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    if trace.rates is None:
        return head + TIMESTAMP_HEADER + "\n" + "".join(f"{t:.6f}\n" for t in trace.times)
    rows = "".join(f"{t:g},{r:.6g}\n" for t, r in zip(trace.times, trace.rates, strict=True))
    return head + RATE_HEADER + "\n" + rows


def from_prometheus_matrix(body: Any, source: str) -> Trace:
    """A rates trace from a Prometheus ``/api/v1/query_range`` answer holding one series.

    The query must already be requests per second, e.g.
    ``sum(rate(recserve_requests_total{model="m",endpoint="/v1/recommend"}[1m]))``.
    """
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body) if isinstance(body, dict) else body
        raise TraceError(f"{source}: the query failed: {error}")
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        raise TraceError(f"{source}: expected a range (matrix) result, got {data.get('resultType')!r}")
    series = data.get("result") or []
    if len(series) != 1:
        labels = [s.get("metric", {}) for s in series[:3]]
        raise TraceError(
            f"{source}: the query returned {len(series)} series {labels}; it must return exactly one, "
            "e.g. wrap it in sum(...)"
        )
    times, rates, where = [], [], []
    for stamp, value in series[0].get("values") or []:
        at = f"{source} at {stamp}"
        times.append(_number(str(stamp), at, "time"))
        rates.append(_number(str(value), at, "rate"))
        where.append(at)
    return rates_trace(source, times, rates, where)
