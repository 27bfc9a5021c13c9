"""The two README figures of the comparison: throughput against concurrency, and the latency CDF.

Both read the report's rows (the Serve recommend levels of the optimized path and of today's),
so they always show the figures of the table next to them. matplotlib renders off-screen (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.serving_bench.report import SERVE, SERVE_TODAY, Row

SERIES = (("optimized", SERVE, "tab:blue"), ("today", SERVE_TODAY, "tab:gray"))
THROUGHPUT_PNG = "serving-throughput.png"
LATENCY_CDF_PNG = "serving-latency-cdf.png"


def _levels(rows: Sequence[Row], path: str) -> list[Row]:
    """A path's levels by concurrency (the first row of each level), with at least one success."""
    seen: dict[int, Row] = {}
    for row in rows:
        if row.path == path and row.ok > 0:
            seen.setdefault(row.concurrency, row)
    return [seen[c] for c in sorted(seen)]


def throughput_plot(rows: Sequence[Row], out: Path, title: str) -> Path | None:
    """Recommend QPS against concurrency, one line per path (Ray Serve); None when nothing was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(name, _levels(rows, path), color) for name, path, color in SERIES]
    if not any(levels for _, levels, _ in series):
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, levels, color in series:
        if levels:
            axes.plot(
                [r.concurrency for r in levels], [r.qps for r in levels], marker="o", color=color, label=name
            )
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({r.concurrency for _, levels, _ in series for r in levels}))
    axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.set_xlabel("concurrent clients")
    axes.set_ylabel("recommend requests / s")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out


def _one_two_five(value: float, _: object) -> str:
    """Minor tick labels of a log axis: only 2× and 5× a power of ten, so that they do not collide."""
    mantissa = f"{value:.0e}"[0] if value > 0 else ""
    return f"{value:g}" if mantissa in ("2", "5") else ""


def latency_cdf_plot(rows: Sequence[Row], out: Path, title: str, concurrency: int = 1) -> Path | None:
    """The recommend latency CDF at one concurrency, one curve per path (Ray Serve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for name, path, color in SERIES:
        level = next((r for r in _levels(rows, path) if r.concurrency == concurrency), None)
        if level is not None and level.latencies_s:
            curves.append((name, sorted(1000 * s for s in level.latencies_s), color))
    if not curves:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, latencies, color in curves:
        n = len(latencies)
        fractions = [0.0] + [(i + 1) / n for i in range(n)]
        axes.step([latencies[0], *latencies], fractions, where="post", color=color, label=f"{name} (n={n})")
    low = min(latencies[0] for _, latencies, _ in curves)
    high = max(latencies[-1] for _, latencies, _ in curves)
    log = low > 0 and high / low > 10  # the paths an order of magnitude apart: a log axis shows both
    if log:
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axes.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_one_two_five))
    axes.set_xlabel("recommend latency, ms" + (" (log scale)" if log else ""))
    axes.set_ylabel("fraction of requests")
    axes.set_ylim(0, 1.02)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3, which="both")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out


def write_plots(rows: Sequence[Row], directory: Path, subtitle: str, suffix: str = "") -> list[Path]:
    """Both figures into ``directory`` (``suffix`` before ``.png``, e.g. for quick runs); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)

    def named(file: str) -> Path:
        return directory / file.replace(".png", f"{suffix}.png")

    written = [
        throughput_plot(rows, named(THROUGHPUT_PNG), f"Recommend throughput, Ray Serve\n{subtitle}"),
        latency_cdf_plot(
            rows, named(LATENCY_CDF_PNG), f"Recommend latency at concurrency 1, Ray Serve\n{subtitle}"
        ),
    ]
    return [path for path in written if path is not None]
