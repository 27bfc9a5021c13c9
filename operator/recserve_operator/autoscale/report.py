"""Text for people: a simulation's figures, a recommendation next to the current settings.

Pure formatting, so the CLI stays glue and tests can read exactly what an SRE will read.
"""

from __future__ import annotations

import math
from typing import Any

from recserve_operator.autoscale.figures import Figures
from recserve_operator.autoscale.knobs import Knobs
from recserve_operator.autoscale.patch import number
from recserve_operator.autoscale.profile import CapacityProfile
from recserve_operator.autoscale.recommend import Candidate, Recommendation, Setting
from recserve_operator.autoscale.simulate import ScaleEvent
from recserve_operator.autoscale.trace import Trace

MAX_EVENTS_SHOWN = 20


def ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞ (over 1% of requests failed)"
    return f"{value:,.0f} ms"


def describe_trace(trace: Trace, requests: int) -> str:
    return (
        f"trace: {trace.source} ({trace.kind}, {trace.duration_s:,.0f} s, {requests:,} requests, "
        f"mean {trace.mean_rate:.2f} rps, peak {trace.peak_rate:.2f} rps)"
    )


def describe_profile(profile: CapacityProfile, source: str) -> str:
    top = max(profile.levels, key=lambda x: x.throughput_rps)
    lone = profile.single_request
    saturation = (
        f"saturates at {top.throughput_rps:.2f} rps (concurrency {top.concurrency})"
        if profile.saturated
        else f"reached {top.throughput_rps:.2f} rps at concurrency {top.concurrency} without saturating"
    )
    return (
        f"profile: {source} (engine {profile.engine_key[:12]}, {profile.hardware.id}, {saturation}; "
        f"a lone request p50 {lone.p50_ms:.0f} ms, p99 {lone.p99_ms:.0f} ms)"
    )


def describe_knobs(knobs: Knobs, startup_note: str) -> str:
    return (
        f"settings: replicas {knobs.min_replicas}..{knobs.max_replicas} (start {knobs.start_replicas}), "
        f"targetOngoingRequests {knobs.target_ongoing_requests:g}, maxOngoingRequests {knobs.max_ongoing_requests}, "
        f"upscale delay {knobs.upscale_delay_s:g} s, downscale delay {knobs.downscale_delay_s:g} s, "
        f"replica start-up {knobs.startup_s:g} s ({startup_note}), "
        f"look-back {knobs.look_back_period_s:g} s, metrics every {knobs.metrics_interval_s:g} s"
    )


def describe_event(event: ScaleEvent) -> str:
    way = "up" if event.after > event.before else "down"
    return f"  t={event.time:,.1f}s {way} {event.before} -> {event.after} (autoscaler saw {event.total_requests:.2f} ongoing)"


def figure_lines(f: Figures, events: list[ScaleEvent], *, price: float | None) -> list[str]:
    lines = [
        f"requests {f.requests:,}: answered {f.answered:,}, refused (503) {f.rejected:,}, timed out (504) {f.timed_out:,}",
        f"latency of answered requests: p50 {ms(f.p50_ms)}, p99 {ms(f.p99_ms)}; p99 of all requests {ms(f.p99_all_ms)}",
    ]
    if f.slo_p99_ms is not None:
        verdict = "met" if f.slo_met else "MISSED"
        lines.append(
            f"SLO p99 {f.slo_p99_ms:g} ms: {verdict}; violated in {f.slo_violation_seconds:,} s of the trace"
        )
    cost = (
        f"; cost {f.cost:,.2f} at {price:g} per replica-hour"
        if f.cost is not None and price is not None
        else ""
    )
    lines.append(
        f"replica-seconds {f.replica_seconds:,.0f} ({f.replica_hours:.2f} replica-hours, mean "
        f"{f.mean_replicas:.2f} replicas, peak {f.peak_replicas}){cost}"
    )
    lines.append(f"scale events: {f.upscales} up, {f.downscales} down")
    lines += [describe_event(e) for e in events[:MAX_EVENTS_SHOWN]]
    if len(events) > MAX_EVENTS_SHOWN:
        lines.append(f"  ... {len(events) - MAX_EVENTS_SHOWN} more")
    return lines


def _knob_values(setting: Setting, knobs: Knobs) -> dict[str, str]:
    ongoing = "unset" if setting.max_ongoing is None else str(setting.max_ongoing)
    return {
        "targetOngoingRequests": f"{number(setting.target)}",
        "minReplicas": str(setting.min_replicas),
        "upscaleDelaySeconds": f"{number(setting.upscale_delay_s)}",
        "downscaleDelaySeconds": f"{number(setting.downscale_delay_s)}",
        "maxOngoingRequests": f"{ongoing} (runs as {knobs.max_ongoing_requests})",
        "maxReplicas (kept)": str(knobs.max_replicas),
    }


def _predicted(c: Candidate, price: float | None) -> dict[str, str]:
    f = c.figures
    rows = {
        "p50 (answered)": ms(f.p50_ms),
        "p99 (all requests)": ms(f.p99_all_ms),
        "requests over the SLO": f"{c.over_slo:,} of {f.requests:,}",
        "SLO-violation seconds": f"{f.slo_violation_seconds:,}",
        "replica-hours": f"{f.replica_hours:.2f}",
        "mean / peak replicas": f"{f.mean_replicas:.2f} / {f.peak_replicas}",
        "scale events up / down": f"{f.upscales} / {f.downscales}",
    }
    if price is not None and f.cost is not None:
        rows[f"cost at {price:g}/replica-hour"] = f"{f.cost:,.2f}"
    return rows


def _table(title: str, current: dict[str, str], recommended: dict[str, str], label: str) -> list[str]:
    width = max(len(k) for k in current) + 2
    col = max(len("current"), *(len(v) for v in current.values())) + 2
    lines = [f"{title:<{width}}{'current':<{col}}{label}"]
    lines += [f"{k:<{width}}{current[k]:<{col}}{recommended[k]}" for k in current]
    return lines


def recommendation_lines(rec: Recommendation, slo_ms: float, *, price: float | None) -> list[str]:
    label = "recommended" if rec.met else "closest"
    lines = []
    if rec.met:
        lines.append(
            f"cheapest setting found that meets p99 {slo_ms:g} ms ({rec.simulations} settings simulated):"
        )
    else:
        lines.append(
            f"no setting meets p99 {slo_ms:g} ms on this trace ({rec.simulations} settings simulated, "
            f"maxReplicas {rec.best.knobs.max_replicas}); the closest is shown. Raise maxReplicas, "
            "or make a replica faster (spec.optimization, retrieval.candidates), then profile again."
        )
    lines.append("")
    lines += _table(
        "knob",
        _knob_values(rec.current.setting, rec.current.knobs),
        _knob_values(rec.best.setting, rec.best.knobs),
        label,
    )
    lines.append("")
    lines += _table("predicted", _predicted(rec.current, price), _predicted(rec.best, price), label)
    return lines


def figures_json(f: Figures) -> dict[str, Any]:
    """The figures for machines (``--json``); infinities become null."""

    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "requests": f.requests,
        "answered": f.answered,
        "rejected": f.rejected,
        "timedOut": f.timed_out,
        "p50Ms": finite(f.p50_ms),
        "p99Ms": finite(f.p99_ms),
        "p99AllMs": finite(f.p99_all_ms),
        "sloP99Ms": f.slo_p99_ms,
        "sloMet": f.slo_met if f.slo_p99_ms is not None else None,
        "sloViolationSeconds": f.slo_violation_seconds,
        "replicaSeconds": f.replica_seconds,
        "cost": f.cost,
        "upscales": f.upscales,
        "downscales": f.downscales,
        "meanReplicas": f.mean_replicas,
        "peakReplicas": f.peak_replicas,
    }
