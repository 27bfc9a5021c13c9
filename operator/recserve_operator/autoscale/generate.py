"""Example traces: the three shapes autoscaling gets wrong most often.

- a **diurnal** cycle: a day of traffic, low at night and peaking in the afternoon, with a little
  noise; it asks how much a long ``downscaleDelaySeconds`` costs overnight;
- a **flash spike**: a sudden burst far above the base rate that holds for a couple of minutes;
  it asks whether replicas start in time (upscale delay, start-up time, ``minReplicas`` headroom);
- a **slow ramp**: a steady climb; it asks whether the autoscaler keeps up or lags a step behind.

Each returns a rates trace (requests per second per step); ``trace.to_csv`` writes it.
"""

from __future__ import annotations

import math
import random

from recserve_operator.autoscale.trace import Trace


def _check(low: float, high: float, duration_s: float, step_s: float) -> None:
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got {low:g} and {high:g}")
    if not 0 < step_s <= duration_s:
        raise ValueError(f"need 0 < step <= duration, got step {step_s:g} and duration {duration_s:g}")


def _trace(name: str, step_s: float, duration_s: float, rates: list[float]) -> Trace:
    times = tuple(i * step_s for i in range(len(rates)))
    return Trace(name, "rates", times, tuple(round(r, 6) for r in rates), duration_s)


def diurnal(
    low: float,
    high: float,
    *,
    duration_s: float = 86_400,
    step_s: float = 60,
    peak_at_s: float = 14 * 3600,
    noise: float = 0.05,
    seed: int = 0,
) -> Trace:
    """A cosine day from ``low`` (12 hours from the peak) to ``high`` (at ``peak_at_s``)."""
    _check(low, high, duration_s, step_s)
    rng = random.Random(seed)
    steps = math.ceil(duration_s / step_s)
    rates = []
    for i in range(steps):
        phase = 2 * math.pi * (i * step_s - peak_at_s) / 86_400
        level = low + (high - low) * (1 + math.cos(phase)) / 2
        rates.append(max(0.0, level * (1 + rng.uniform(-noise, noise))))
    return _trace("diurnal", step_s, steps * step_s, rates)


def flash_spike(
    base: float,
    peak: float,
    *,
    duration_s: float = 1800,
    step_s: float = 1,
    at_s: float | None = None,
    rise_s: float | None = None,
    hold_s: float | None = None,
    decay_s: float | None = None,
) -> Trace:
    """``base`` rps, then a linear rise to ``peak`` at ``at_s``, held, then a linear decay back.

    Unset, the timing scales with the duration: over the default 30 minutes the spike starts
    at 10 min, rises in 10 s, holds 2 min and decays in 1 min.
    """
    _check(base, peak, duration_s, step_s)
    at = duration_s / 3 if at_s is None else at_s
    rise = duration_s / 180 if rise_s is None else rise_s
    hold = duration_s / 15 if hold_s is None else hold_s
    decay = duration_s / 30 if decay_s is None else decay_s
    steps = math.ceil(duration_s / step_s)
    rates = []
    for i in range(steps):
        t = i * step_s - at
        if t < 0 or t >= rise + hold + decay:
            level = base
        elif t < rise:
            level = base + (peak - base) * t / rise
        elif t < rise + hold:
            level = peak
        else:
            level = peak - (peak - base) * (t - rise - hold) / decay
        rates.append(level)
    return _trace("flash-spike", step_s, steps * step_s, rates)


def slow_ramp(start: float, end: float, *, duration_s: float = 3600, step_s: float = 10) -> Trace:
    """A straight climb from ``start`` to ``end`` rps over the whole duration."""
    _check(min(start, end), max(start, end), duration_s, step_s)
    steps = math.ceil(duration_s / step_s)
    rates = [start + (end - start) * i / max(1, steps - 1) for i in range(steps)]
    return _trace("slow-ramp", step_s, steps * step_s, rates)
