"""What the run prints: one row per path and level, ratios between rows, target verdicts, markdown.

The machine is shared and noisy, so the table puts ratios next to the raw figures: only the
ratios of one run mean anything. Everything here is pure, so the figures can be checked
without running the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from recserve_operator.loadgen import percentile_ms

# Targets of the serving benchmark.
OPTIMIZED_VS_TODAY = 5.0  # issue 13: recommend throughput at saturation, per core, against today's path
P50_AT_1_MS = 200.0  # at most: the optimized path's recommend p50 at concurrency 1 (200 candidates)
SERVE_VS_DIRECT = 0.9
BATCHING_ON_VS_OFF = 2.0
FULL_VS_TWO_STAGE_P99 = 5.0
EXPLAIN_VS_PLAIN_P50 = 2.0  # at most: explaining may cost up to the plain request's latency again

# Row labels, used for ratios and targets.
DIRECT = "engine in-process (2-stage)"
DIRECT_PLAIN = "engine in-process (2-stage), interleaved with explain"
DIRECT_EXPLAIN = "engine in-process (2-stage), explain"
FULL = "engine in-process, full catalog"
SERVE = "Ray Serve /v1/recommend"
SERVE_PLAIN = "Ray Serve /v1/recommend, interleaved with explain"
SERVE_OFF = "Ray Serve /v1/recommend, batching off"
SERVE_EXPLAIN = "Ray Serve /v1/recommend, explain"
SERVE_OIP1 = "Ray Serve OIP infer, 1 pair"
SERVE_OIP1_OFF = "Ray Serve OIP infer, 1 pair, batching off"
KSERVE = "kserve ModelServer OIP infer"
BASELINE = "FastAPI + torch fp32, full catalog"
# Today's path (a cross-shaped checkpoint under the old recipe), measured in the same run.
DIRECT_TODAY = "today: engine in-process (2-stage)"
SERVE_TODAY = "today: Ray Serve /v1/recommend"
# The two sides of the comparison: (name, in-process row, Serve recommend rows).
SIDES = (("optimized", DIRECT, SERVE), ("today", DIRECT_TODAY, SERVE_TODAY))


@dataclass
class Row:
    """One measured path at one concurrency: successful requests over the wall time of the block."""

    path: str
    concurrency: int
    ok: int
    errors: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    note: str = ""
    p90_ms: float = math.nan
    latencies_s: list[float] = field(default_factory=list, repr=False)
    """The successful requests' latencies, for the plots."""

    @property
    def qps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else math.nan


def summarize(
    path: str,
    concurrency: int,
    latencies_s: Sequence[float],
    elapsed_s: float,
    errors: int = 0,
    note: str = "",
) -> Row:
    """A table row from the latencies of the successful requests and the block's wall time."""
    return Row(
        path=path,
        concurrency=concurrency,
        ok=len(latencies_s),
        errors=errors,
        elapsed_s=elapsed_s,
        p50_ms=percentile_ms(latencies_s, 50),
        p99_ms=percentile_ms(latencies_s, 99),
        note=note,
        p90_ms=percentile_ms(latencies_s, 90),
        latencies_s=list(latencies_s),
    )


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, nan when either is missing or the denominator is zero."""
    if any(not isinstance(x, int | float) or math.isnan(x) for x in (numerator, denominator)):
        return math.nan
    return numerator / denominator if denominator else math.nan


def find(rows: Sequence[Row], path: str, concurrency: int | None = None) -> Row | None:
    for row in rows:
        if row.path == path and (concurrency is None or row.concurrency == concurrency):
            return row
    return None


def num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


def format_table(rows: Sequence[Row]) -> str:
    """Markdown table; QPS ratios against the in-process engine (2) and the plain baseline (3)."""
    direct = find(rows, DIRECT)
    baseline = find(rows, BASELINE)
    direct_qps = direct.qps if direct else math.nan
    baseline_qps = baseline.qps if baseline else math.nan
    lines = [
        "| path | conc. | ok | err | QPS | p50 ms | p90 ms | p99 ms | QPS × engine in-process | QPS × baseline "
        "| note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.path} | {r.concurrency} | {r.ok} | {r.errors} | {num(r.qps, 2)} | {num(r.p50_ms)} "
            f"| {num(r.p90_ms)} | {num(r.p99_ms)} | {_times(ratio(r.qps, direct_qps))} | {_times(ratio(r.qps, baseline_qps))} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class TargetResult:
    name: str
    value: float
    threshold: float
    detail: str
    at_most: bool = False
    """A cost ratio: met at or below the threshold instead of at or above it."""
    unit: str = "×"
    """``×`` for a ratio, ``ms`` for an absolute latency."""

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.threshold if self.at_most else self.value >= self.threshold

    def line(self) -> str:
        verdict = "MET" if self.met else "MISSED"
        bound = "≤" if self.at_most else "≥"
        if self.unit == "ms":
            value, threshold = f"{num(self.value, 0)} ms", f"{self.threshold:g} ms"
        else:
            value, threshold = _times(self.value), f"{self.threshold:g}×"
        return f"- {self.name}: {value} (target {bound} {threshold}) → **{verdict}** ({self.detail})"


def saturation_row(rows: Sequence[Row], path: str) -> Row | None:
    """The highest-throughput concurrency level of a path (its saturation point)."""
    candidates = [r for r in rows if r.path == path and r.ok > 0]
    return max(candidates, key=lambda r: r.qps) if candidates else None


def _qps(row: Row | None) -> float:
    return row.qps if row else math.nan


def _level(row: Row | None) -> str:
    return f"c={row.concurrency} {num(row.qps, 2)} QPS" if row else "no level measured"


def comparison_targets(rows: Sequence[Row]) -> list[TargetResult]:
    """Issue 13: the optimized path against today's, both served by Ray Serve in this run."""
    optimized, today = saturation_row(rows, SERVE), saturation_row(rows, SERVE_TODAY)
    first = find(rows, SERVE, 1)
    today_first = find(rows, SERVE_TODAY, 1)
    return [
        TargetResult(
            "recommend throughput at saturation, optimized vs today's path (Ray Serve, best level each)",
            ratio(_qps(optimized), _qps(today)),
            OPTIMIZED_VS_TODAY,
            f"optimized {_level(optimized)} vs today {_level(today)}",
        ),
        TargetResult(
            "recommend p50 at concurrency 1, optimized path (Ray Serve)",
            first.p50_ms if first else math.nan,
            P50_AT_1_MS,
            f"today's path: {num(today_first.p50_ms if today_first else math.nan, 0)} ms",
            at_most=True,
            unit="ms",
        ),
    ]


def evaluate_targets(rows: Sequence[Row]) -> list[TargetResult]:
    results = comparison_targets(rows)
    direct = find(rows, DIRECT)
    serve = saturation_row(rows, SERVE)
    results.append(
        TargetResult(
            "Ray Serve path vs engine in-process, throughput at saturation",
            ratio(serve.qps if serve else math.nan, direct.qps if direct else math.nan),
            SERVE_VS_DIRECT,
            f"best Serve level c={serve.concurrency if serve else '?'} "
            f"{num(serve.qps if serve else math.nan, 2)} QPS vs {num(direct.qps if direct else math.nan, 2)} QPS",
        )
    )
    for label, on_path, off_path in (
        ("recommend, the bench's request mix", SERVE, SERVE_OFF),
        ("OIP infer, 1 pair per request", SERVE_OIP1, SERVE_OIP1_OFF),
    ):
        on, off = find(rows, on_path, 32), find(rows, off_path, 32)
        results.append(
            TargetResult(
                f"batching on vs off at concurrency 32 ({label})",
                ratio(on.qps if on else math.nan, off.qps if off else math.nan),
                BATCHING_ON_VS_OFF,
                f"{num(on.qps if on else math.nan, 2)} vs {num(off.qps if off else math.nan, 2)} QPS",
            )
        )
    results.append(explain_target(rows))
    two_stage, full = find(rows, DIRECT), find(rows, FULL)
    results.append(
        TargetResult(
            "two-stage recommend p99 lower than full-catalog scoring (same engine, in-process)",
            ratio(full.p99_ms if full else math.nan, two_stage.p99_ms if two_stage else math.nan),
            FULL_VS_TWO_STAGE_P99,
            f"p99 {num(full.p99_ms if full else math.nan, 0)} ms full (n={full.ok if full else 0}) "
            f"vs {num(two_stage.p99_ms if two_stage else math.nan, 0)} ms two-stage",
        )
    )
    return results


def explain_target(rows: Sequence[Row]) -> TargetResult:
    """Recommend with ``"explain": true`` against without, p50 at concurrency 1 on the Serve path:
    the latency a client sees, measured back to back on the same server and users."""
    plain, explained = find(rows, SERVE_PLAIN, 1), find(rows, SERVE_EXPLAIN, 1)
    plain_p50 = plain.p50_ms if plain else math.nan
    explained_p50 = explained.p50_ms if explained else math.nan
    return TargetResult(
        "recommend k=10 with explain vs without, p50 at concurrency 1 (Ray Serve)",
        ratio(explained_p50, plain_p50),
        EXPLAIN_VS_PLAIN_P50,
        f"p50 {num(explained_p50, 0)} ms vs {num(plain_p50, 0)} ms",
        at_most=True,
    )


def comparison_table(rows: Sequence[Row]) -> str:
    """The optimized path and today's side by side: one line per path and concurrency level."""
    lines = [
        "| path | where | conc. | ok | QPS | p50 ms | p90 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side, direct_path, serve_path in SIDES:
        for where, path in (("in-process", direct_path), ("Ray Serve", serve_path)):
            for r in sorted((r for r in rows if r.path == path), key=lambda r: r.concurrency):
                lines.append(
                    f"| {side} | {where} | {r.concurrency} | {r.ok} | {num(r.qps, 2)} | {num(r.p50_ms)} "
                    f"| {num(r.p90_ms)} | {num(r.p99_ms)} |"
                )
    return "\n".join(lines)


def ratio_lines(rows: Sequence[Row]) -> list[str]:
    """The ratios issue 13 asks for, each with the figures it is computed from."""
    optimized, today = saturation_row(rows, SERVE), saturation_row(rows, SERVE_TODAY)
    direct, direct_today = find(rows, DIRECT), find(rows, DIRECT_TODAY)
    first, today_first = find(rows, SERVE, 1), find(rows, SERVE_TODAY, 1)
    lines = [
        f"optimized / today, throughput at saturation (Ray Serve): "
        f"{_times(ratio(_qps(optimized), _qps(today)))} ({_level(optimized)} vs {_level(today)})",
        f"optimized / today, engine in-process (sequential, alternating blocks): "
        f"{_times(ratio(_qps(direct), _qps(direct_today)))} "
        f"({num(_qps(direct), 2)} vs {num(_qps(direct_today), 2)} QPS)",
        f"optimized p50 at concurrency 1 (Ray Serve): {num(first.p50_ms if first else math.nan, 0)} ms; "
        f"today's {num(today_first.p50_ms if today_first else math.nan, 0)} ms "
        f"({_times(ratio(today_first.p50_ms if today_first else math.nan, first.p50_ms if first else math.nan))} "
        "lower)",
        f"Ray Serve / in-process, optimized engine: {_times(ratio(_qps(optimized), _qps(direct)))}; "
        f"today's engine: {_times(ratio(_qps(today), _qps(direct_today)))}",
    ]
    for label, on_path, off_path in (
        ("1-pair OIP infer", SERVE_OIP1, SERVE_OIP1_OFF),
        ("full recommend", SERVE, SERVE_OFF),
    ):
        on, off = find(rows, on_path, 32), find(rows, off_path, 32)
        lines.append(
            f"batching on / off at concurrency 32, {label}: {_times(ratio(_qps(on), _qps(off)))} "
            f"({num(_qps(on), 2)} vs {num(_qps(off), 2)} QPS)"
        )
    return lines


def render_report(
    *,
    command: str,
    started: datetime,
    header: Sequence[str],
    rows: Sequence[Row],
    targets: Sequence[TargetResult],
    notes: Sequence[str],
    plots: Sequence[str] = (),
) -> str:
    compared = any(r.path in (DIRECT_TODAY, SERVE_TODAY) for r in rows)
    missed = [t for t in targets if not t.met]
    parts = [
        f"# Serving benchmark, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {line}" for line in header],
        "",
    ]
    if compared:
        parts += [
            "## Optimized path vs today's path",
            "",
            comparison_table(rows),
            "",
            *[f"- {line}" for line in ratio_lines(rows)],
            "",
            *[f"![{Path(plot).stem}]({Path(plot).name})" for plot in plots],
            *([""] if plots else []),
            "## Every path",
            "",
        ]
    parts += [
        format_table(rows),
        "",
        "Targets:",
        "",
        *[t.line() for t in targets],
        "",
        *(["Missed:", "", *[t.line() for t in missed], ""] if missed else ["Every target met.", ""]),
        "Notes:",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    return "\n".join(parts)
