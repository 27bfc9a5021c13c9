"""The quality and latency gate: an optimized engine ships only if it ranks almost as well.

The reference is the unoptimized checkpoint run eagerly in fp32 on the same evaluation
lists (cached per checkpoint digest and evaluation size, since it does not depend on the
recipe). The report is a plain dict so it can be written as JSON next to the engine and
printed as a table by the CLI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.data import Dataset
from recserve_serving.engine.base import Engine
from recserve_serving.evaluate import EvalSet, EvalSettings, evaluate_scorer, latency
from recserve_serving.model import Checkpoint, count_parameters
from recserve_serving.recipe import QualityGate
from recserve_serving.train import checkpoint_metrics

REPORT_FILE = "report.json"
RANKING = ("ndcg@10", "hitrate@10", "auc", "coverage", "novelty", "diversity")


@dataclass
class GateReport:
    metric: str
    max_drop: float
    reference: dict[str, float]
    engine: dict[str, float]
    max_p99_latency_ms: float | None = None
    failures: list[str] = field(default_factory=list)
    evaluation: str = ""
    minimums: dict[str, float] = field(default_factory=dict)
    """qualityGate.minimums as metric -> min; reports written before minimums existed read as none."""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def drop(self) -> float:
        return self.reference[self.metric] - self.engine[self.metric]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "drop": self.drop}

    @classmethod
    def read(cls, path: Path) -> GateReport:
        raw = json.loads(path.read_text())
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    def table(self) -> str:
        rows = [("metric", "checkpoint", "engine", "change")]
        for name in RANKING:
            ref, new = self.reference.get(name), self.engine.get(name)
            if ref is not None and new is not None:
                rows.append((name, f"{ref:.4f}", f"{new:.4f}", f"{new - ref:+.4f}"))
        for name in (
            "params",
            "size_bytes",
            "p50_ms_b1",
            "p99_ms_b1",
            "p50_ms_max_batch",
            "p99_ms_max_batch",
        ):
            ref, new = self.reference.get(name), self.engine.get(name)
            if new is not None:
                rows.append((name, "-" if ref is None else f"{ref:.4g}", f"{new:.4g}", ""))
        limit = f"{self.metric} drop <= {self.max_drop}"
        if self.max_p99_latency_ms is not None:
            limit += f", p99 at max batch <= {self.max_p99_latency_ms} ms"
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        verdict = "PASSED" if self.passed else "FAILED: " + "; ".join(self.failures)
        return "\n".join([*lines, *self._minimum_lines(), f"gate ({limit}): {verdict}"])

    def _minimum_lines(self) -> list[str]:
        """One line per qualityGate.minimums entry with its verdict, so that a failed gate shows
        which floor failed next to the drop that may have passed."""
        lines = []
        for name, floor in self.minimums.items():
            value = self.engine.get(name)
            shown = "missing" if value is None else f"{value:.4f}"
            verdict = "ok" if _meets(value, floor) else "FAILED"
            lines.append(f"minimum {name} >= {floor:g}: engine {shown}, {verdict}")
        return lines


def reference_metrics(
    checkpoint: Checkpoint, digest: str, data: Dataset, evals: EvalSet, settings: EvalSettings, cache: Path
) -> dict[str, float]:
    """Eager fp32 metrics of the unoptimized checkpoint, computed once per digest, data and eval
    size, and again when the cached ones predate a metric the gate may now judge."""
    size = settings.describe().replace(",", "-")
    path = cache / f"{digest.removeprefix('sha256:')[:32]}-{data.digest[:16]}-{size}.json"
    if path.is_file():
        cached: dict[str, float] = json.loads(path.read_text())
        if all(name in cached for name in RANKING):
            return cached
    metrics = checkpoint_metrics(checkpoint, data, evals)
    metrics["params"] = float(count_parameters(checkpoint.model))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    temp.replace(path)
    return metrics


def engine_metrics(engine: Engine, data: Dataset, evals: EvalSet, settings: EvalSettings) -> dict[str, float]:
    """Ranking quality on the eval lists, then latency at batch 1 and at maxBatchSize."""
    metrics = evaluate_scorer(engine.score, data, evals, batch_size=min(64, engine.max_batch_size))
    users, items = evals.pairs(data)
    batch = engine.max_batch_size
    reps = max(2, settings.latency_repeats)
    one = latency(engine.score, users[:1], items[:1], repeats=reps * 3)
    full = latency(engine.score, (users * 2)[:batch], (items * 2)[:batch], repeats=reps)
    metrics.update(
        {
            "p50_ms_b1": one["p50_ms"],
            "p99_ms_b1": one["p99_ms"],
            "p50_ms_max_batch": full["p50_ms"],
            "p99_ms_max_batch": full["p99_ms"],
            "pairs_per_s_max_batch": full["pairs_per_s"],
        }
    )
    return metrics


def judge(
    gate: QualityGate, reference: dict[str, float], engine: dict[str, float], evaluation: str
) -> GateReport:
    report = GateReport(
        metric=gate.metric,
        max_drop=gate.max_drop,
        reference=reference,
        engine=engine,
        max_p99_latency_ms=gate.max_p99_latency_ms,
        evaluation=evaluation,
        minimums={m.metric: m.minimum for m in gate.minimums or ()},
    )
    if not np.isfinite(engine[gate.metric]):
        report.failures.append(f"{gate.metric} is not finite: the engine produces NaN or inf scores")
    elif report.drop > gate.max_drop + 1e-9:
        report.failures.append(f"{gate.metric} dropped {report.drop:.4f} > maxDrop {gate.max_drop}")
    p99 = engine["p99_ms_max_batch"]
    if gate.max_p99_latency_ms is not None and p99 > gate.max_p99_latency_ms:
        report.failures.append(
            f"p99 latency at maxBatchSize {p99:.1f} ms > maxP99LatencyMs {gate.max_p99_latency_ms}"
        )
    report.failures.extend(_below_minimums(report.minimums, engine))
    return report


def _meets(value: float | None, floor: float) -> bool:
    return value is not None and bool(np.isfinite(value)) and value >= floor - 1e-9


def _below_minimums(minimums: dict[str, float], engine: dict[str, float]) -> list[str]:
    """A failure per floor the engine misses; a metric the evaluation did not produce fails
    too, since a gate that cannot be checked must not pass."""
    failures = []
    for name, floor in minimums.items():
        value = engine.get(name)
        if value is None:
            failures.append(
                f"{name} is missing from the engine's metrics, so minimum {floor:g} cannot be checked"
            )
        elif not _meets(value, floor):
            failures.append(f"{name} {value:.4f} < minimum {floor:g} (qualityGate.minimums)")
    return failures
