"""The timeline PNG of a simulation: load, replicas and p99 over the trace, one panel each.

matplotlib renders it headless (the Agg backend); it is imported here only, so the simulator and
the rest of the CLI never pay for it.
"""

from __future__ import annotations

import math
from pathlib import Path

from recserve_operator.autoscale.figures import quantile
from recserve_operator.autoscale.simulate import SimulationResult

MAX_POINTS = 2000
OBSERVED_COLORS = ("tab:blue", "tab:red", "tab:brown", "tab:pink")


def p99_per_bucket(result: SimulationResult, bucket_s: float) -> list[float]:
    """p99 in ms of the requests arriving in each bucket (nan where none arrived; refused and
    timed-out requests count as infinitely slow, which the plot clips to its top)."""
    buckets = max(1, math.ceil(result.duration_s / bucket_s))
    grouped: list[list[float]] = [[] for _ in range(buckets)]
    for arrived, latency in zip(result.arrivals, result.latency_s, strict=True):
        grouped[min(int(arrived / bucket_s), buckets - 1)].append(latency)
    return [1000 * quantile(g, 0.99) if g else math.nan for g in grouped]


def _coarsen(values: list[float], factor: int, how: str) -> list[float]:
    if factor <= 1:
        return values
    out = []
    for i in range(0, len(values), factor):
        chunk = [v for v in values[i : i + factor] if not math.isnan(v)]
        if not chunk:
            out.append(math.nan)
        elif how == "max":
            out.append(max(chunk))
        else:
            out.append(sum(chunk) / len(chunk))
    return out


def write_timeline(
    result: SimulationResult,
    path: Path,
    *,
    title: str,
    slo_p99_ms: float | None = None,
    observed: dict[str, list[tuple[float, float]]] | None = None,
    observed_p99: list[tuple[float, float]] | None = None,
) -> None:
    """Write the PNG; ``observed`` overlays measured series (name -> [(seconds, value)]) on the
    replicas panel and ``observed_p99`` (seconds, ms) on the latency panel, for comparing a
    simulation with a real run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result.timeline
    factor = max(1, math.ceil(len(tl.arrivals) / MAX_POINTS))
    step = tl.bucket_s * factor
    xs_unit, scale = (
        ("h", 3600.0)
        if result.duration_s > 4 * 3600
        else ("min", 60.0)
        if result.duration_s > 600
        else ("s", 1.0)
    )
    rate = _coarsen([a / tl.bucket_s for a in tl.arrivals], factor, "mean")
    xs = [i * step / scale for i in range(len(rate))]
    fig, (load, replicas, latency) = plt.subplots(3, 1, sharex=True, figsize=(11, 8))
    load.plot(xs, rate, color="tab:blue", lw=1)
    load.set_ylabel("requests/s")
    load.set_title(title, fontsize=10)
    n = len(tl.running)
    rx = [i * tl.bucket_s / scale for i in range(n)]
    sim = "simulated " if observed else ""
    replicas.step(
        rx, tl.replicas, where="post", color="tab:orange", lw=1.2, label=f"{sim}replicas (incl. starting)"
    )
    replicas.step(rx, tl.running, where="post", color="tab:green", lw=1.2, label=f"{sim}running")
    replicas.step(
        rx, tl.target, where="post", color="tab:gray", lw=0.8, ls="--", label=f"{sim}autoscaler target"
    )
    for (name, points), color in zip((observed or {}).items(), OBSERVED_COLORS, strict=False):
        xs_obs, ys_obs = [t / scale for t, _ in points], [v for _, v in points]
        replicas.step(xs_obs, ys_obs, where="post", lw=1.4, ls=":", color=color, label=name)
    replicas.set_ylabel("replicas")
    replicas.legend(loc="upper left", fontsize=8)
    p99 = _coarsen(p99_per_bucket(result, tl.bucket_s), factor, "max")
    finite = [v for v in p99 if math.isfinite(v)]
    top = max(finite, default=1.0) * 1.1
    if slo_p99_ms is not None:
        top = max(top, slo_p99_ms * 1.5)
        latency.axhline(slo_p99_ms, color="tab:red", lw=0.8, ls="--", label=f"SLO {slo_p99_ms:g} ms")
        latency.legend(loc="upper left", fontsize=8)
    label = "simulated p99" if observed_p99 else None
    latency.plot(
        xs, [min(v, top) if not math.isnan(v) else v for v in p99], color="tab:purple", lw=1, label=label
    )
    if observed_p99:
        real = [(t / scale, min(v, top)) for t, v in observed_p99]
        latency.plot(
            [t for t, _ in real], [v for _, v in real], color="tab:red", lw=1, ls=":", label="real p99"
        )
        latency.legend(loc="upper left", fontsize=8)
    latency.set_ylim(0, top)
    latency.set_ylabel(f"p99 ms per {step:g} s")
    latency.set_xlabel(f"time ({xs_unit})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
