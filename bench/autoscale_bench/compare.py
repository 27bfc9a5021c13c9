"""The simulator's prediction against what happened, with the issue's tolerances.

Pure: observed samples and a simulation in, rows and a Markdown table out. Tolerances (issue 16):
replica-seconds within 20%, p99 within 30%, the first upscale within one decision interval. The
autoscaler's input changes only when the router's handle pushes its metrics, so one decision
interval here is the push interval (``metrics_interval_s``, 10 s), not the 0.1 s control loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.autoscale_bench.observe import Sample
from recserve_operator.autoscale.figures import Figures, quantile
from recserve_operator.autoscale.simulate import SimulationResult
from recserve_operator.loadgen import Replayed

REPLICA_SECONDS_TOLERANCE = 0.20
P99_TOLERANCE = 0.30


def replica_seconds(samples: Sequence[Sample], start: float, end: float) -> float:
    """The integral of live replicas over [start, end], each sample holding until the next."""
    total = 0.0
    ordered = sorted(samples, key=lambda s: s.t)
    for here, after in zip(ordered, [*ordered[1:], None], strict=True):
        begin = max(here.t, start)
        finish = min(after.t if after is not None else end, end)
        if finish > begin:
            total += here.live * (finish - begin)
    return total


def first_upscale(samples: Sequence[Sample], start: float) -> float | None:
    """Seconds from ``start`` to the first rise of the target (poll resolution)."""
    ordered = [s for s in sorted(samples, key=lambda s: s.t) if s.t >= start]
    for before, after in itertools.pairwise(ordered):
        if after.target > before.target:
            return after.t - start
    return None


def p99_ms(latencies: Sequence[float]) -> float:
    """p99 in ms; a failed request is ``math.inf`` and counts as slower than any answer."""
    return 1000 * quantile(list(latencies), 0.99)


def p99_per_second(
    replayed: Sequence[Replayed], duration: float, bucket_s: float
) -> list[tuple[float, float]]:
    """The real p99 (ms) of the requests due in each bucket, failures as infinitely slow."""
    grouped: dict[int, list[float]] = {}
    for r in replayed:
        if r.due < duration:
            grouped.setdefault(int(r.due / bucket_s), []).append(
                r.latency if 200 <= r.status < 300 else math.inf
            )
    return [(k * bucket_s, p99_ms(v)) for k, v in sorted(grouped.items())]


@dataclass(frozen=True)
class Row:
    setting: str
    what: str
    real: float | None
    simulated: float | None
    tolerance: str
    within: bool | None  # None: not comparable (one side missing or infinite)


def _relative(setting: str, what: str, real: float, simulated: float, tolerance: float) -> Row:
    if not (math.isfinite(real) and math.isfinite(simulated)) or real == 0:
        return Row(setting, what, real, simulated, f"±{tolerance:.0%}", None)
    return Row(setting, what, real, simulated, f"±{tolerance:.0%}", abs(simulated - real) / real <= tolerance)


def compare(
    setting: str,
    samples: Sequence[Sample],
    replay_start: float,
    duration: float,
    real_latencies: Sequence[float],
    simulated: SimulationResult,
    figures: Figures,
    decision_interval: float,
) -> list[Row]:
    real_rs = replica_seconds(samples, replay_start, replay_start + duration)
    rows = [
        _relative(setting, "replica-seconds", real_rs, simulated.replica_seconds, REPLICA_SECONDS_TOLERANCE),
        _relative(
            setting, "p99 ms (all requests)", p99_ms(real_latencies), figures.p99_all_ms, P99_TOLERANCE
        ),
    ]
    real_up = first_upscale(samples, replay_start)
    sim_up = simulated.upscales[0].time if simulated.upscales else None
    if real_up is None or sim_up is None:
        within = real_up is None and sim_up is None  # both stayed put: agreement; one scaled: not
    else:
        within = abs(real_up - sim_up) <= decision_interval
    rows.append(Row(setting, "first upscale s", real_up, sim_up, f"±{decision_interval:g} s", within))
    return rows


def _cell(value: float | None) -> str:
    if value is None:
        return "none"
    if math.isinf(value):
        return "∞"
    return f"{value:,.1f}"


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| setting | figure | real | simulated | tolerance | within |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        verdict = "n/a" if r.within is None else ("yes" if r.within else "**no**")
        lines.append(
            f"| {r.setting} | {r.what} | {_cell(r.real)} | {_cell(r.simulated)} | {r.tolerance} | {verdict} |"
        )
    return lines
