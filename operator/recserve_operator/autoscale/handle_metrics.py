"""The autoscaler's input: what a DeploymentHandle records and pushes, and what the controller makes of it.

Ray 2.60 collects autoscaling metrics on the handle (``RAY_SERVE_COLLECT_AUTOSCALING_METRICS_ON_HANDLE``
defaults on); here the handle is the router's, the one caller of the ranker. Rewritten from
``ray/serve/_private/router.py`` (``_add_autoscaling_metrics_point``, ``_get_metrics_report``) and
``ray/serve/_private/autoscaling_state.py`` (``get_total_num_requests``):

- every record interval the handle samples its queued count and, per replica it has ever sent a
  request to, the requests in flight there; samples older than the look-back period are dropped;
- every metrics interval it pushes those series (a series with no sample yet is sent as one
  sample of its current value, stamped now);
- each control tick the controller merges the series of the queued count and of the replicas
  still running into one step function (sum of the last values), opens the window at the
  latest first sample of any series, and takes the time-weighted mean up to now, the last
  value holding until now.

So the autoscaler sees an average that lags the load by up to a look-back period, and moves
only when a push arrives; that lag is the point of modelling it rather than using the live count.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Series = list[tuple[float, float]]
LAST_WINDOW_FLOOR_S = 1e-3
"""Ray's guard against a last sample stamped at or after the controller's clock."""


@dataclass(frozen=True)
class Report:
    """One push: the queued series and each replica's in-flight series, as sent at ``sent_at``."""

    sent_at: float
    queued: Series
    running: dict[int, Series]


@dataclass(frozen=True)
class Aggregate:
    """A report reduced for fast time-weighted means: the integral up to its last sample."""

    window_start: float
    last_time: float
    last_value: float
    area: float  # integral of the merged total from window_start to last_time

    def mean(self, now: float) -> float:
        tail = now - self.last_time
        if tail <= 0:
            tail = LAST_WINDOW_FLOOR_S
        return (self.area + self.last_value * tail) / (self.last_time - self.window_start + tail)


def merge(series: list[Series]) -> Series:
    """The instantaneous total of right-continuous gauges: at each sample time, the sum of every
    series' last value (0 before a series' first sample)."""
    if len(series) == 1:
        return list(series[0])
    events = sorted((t, index, value) for index, one in enumerate(series) for t, value in one)
    current = [0.0] * len(series)
    total = 0.0
    merged: Series = []
    for t, index, value in events:
        total += value - current[index]
        current[index] = value
        if merged and merged[-1][0] == t:
            merged[-1] = (t, total)
        else:
            merged.append((t, total))
    return merged


def aggregate(report: Report, running: Iterable[int]) -> Aggregate | None:
    """The controller's view of ``report``, counting only the replicas in ``running``."""
    alive = set(running)
    series = [s for s in [report.queued, *(v for k, v in report.running.items() if k in alive)] if s]
    if not series:
        return None
    merged = merge(series)
    start = merged[0][0]
    if len(series) > 1:
        aligned = max(s[0][0] for s in series)
        if aligned <= merged[-1][0]:
            start = max(aligned, start)
    # ``start`` is one of the merged sample times, so the window holds whole steps only.
    area = sum(value * (t_next - t) for (t, value), (t_next, _) in itertools.pairwise(merged) if t >= start)
    return Aggregate(start, merged[-1][0], merged[-1][1], area)


@dataclass
class HandleRecorder:
    """The handle's in-memory metrics store and its pushes."""

    look_back_s: float
    queued: Series = field(default_factory=list)
    running: dict[int, Series] = field(default_factory=dict)

    def _prune(self, now: float, keys: Iterable[int]) -> None:
        start = now - self.look_back_s
        keep = set(keys)
        self.queued = [p for p in self.queued if p[0] > start]
        for replica in list(self.running):
            points = [p for p in self.running[replica] if p[0] > start]
            if points or replica in keep:
                self.running[replica] = points
            else:
                del self.running[replica]

    def record(self, now: float, queued: int, in_flight: Mapping[int, int]) -> None:
        """One sample of the queued count and of every replica the handle has sent requests to."""
        self.queued.append((now, float(queued)))
        for replica, count in in_flight.items():
            self.running.setdefault(replica, []).append((now, float(count)))
        self._prune(now, in_flight)

    def push(self, now: float, queued: int, in_flight: Mapping[int, int]) -> Report:
        self._prune(now, in_flight)
        return Report(
            sent_at=now,
            queued=list(self.queued) or [(now, float(queued))],
            running={
                replica: list(self.running.get(replica) or []) or [(now, float(count))]
                for replica, count in in_flight.items()
            },
        )
