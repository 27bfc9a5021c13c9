"""The pure part of ``optimization.search``: name candidates, pick the winner, draw the front.

Nothing here builds, loads or times an engine (``search_build`` does, and hands the results
in as ``Trial``s), so the choice can be tested on fixtures: the fastest candidate that passed
its gate wins; one that failed never does, however fast; when none passed, the error lists
every candidate with its reason. The report is also the search's cache record, keyed by
everything that could change the outcome, so a second build returns the recorded choice
instead of measuring again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recserve_serving.errors import QualityGateFailed
from recserve_serving.recipe import OptimizationRecipe

SEARCH_FORMAT = 1
"""Bumped when the measurement changes, so old records are not compared with new numbers."""
DEFAULT_SEQUENCE_LENGTH = 128


def summary(recipe: OptimizationRecipe) -> str:
    """A short name for a candidate, e.g. ``int8 distill=3 prune=0.25/0.25`` (for status)."""
    parts = [recipe.precision if recipe.backend == "auto" else f"{recipe.backend}-{recipe.precision}"]
    if recipe.precision == "int8" and recipe.quantization.mode == "static":
        parts.append("static")
    if recipe.distill is not None:
        parts.append(f"distill={recipe.distill.layers}")
    if recipe.prune is not None and (recipe.prune.heads > 0 or recipe.prune.ffn > 0):
        parts.append(f"prune={recipe.prune.heads:g}/{recipe.prune.ffn:g}")
    if recipe.max_sequence_length != DEFAULT_SEQUENCE_LENGTH:
        parts.append(f"seq={recipe.max_sequence_length}")
    return " ".join(parts)


@dataclass(frozen=True)
class Trial:
    """One candidate's outcome. ``quality`` is its gate metric and ``drop`` the loss against the
    checkpoint (both absent when it could not be built); ``pairs_per_s`` is absent unless an
    engine was measured, which a candidate that failed its gate never is (its build is discarded)."""

    recipe: str
    passed: bool
    reason: str = ""
    engine_key: str | None = None
    quality: float | None = None
    drop: float | None = None
    pairs_per_s: float | None = None
    median_ms: float | None = None
    best_ms: float | None = None
    report: str | None = None


def pareto_front(trials: list[Trial]) -> list[int]:
    """Indices of the measured trials no other trial beats on both quality and throughput
    (at least as good on both and better on one), passed or not: the trade-off on offer."""
    measured = [i for i, t in enumerate(trials) if t.quality is not None and t.pairs_per_s is not None]

    def beats(a: Trial, b: Trial) -> bool:
        assert a.quality is not None and b.quality is not None
        assert a.pairs_per_s is not None and b.pairs_per_s is not None
        at_least = a.quality >= b.quality and a.pairs_per_s >= b.pairs_per_s
        return at_least and (a.quality > b.quality or a.pairs_per_s > b.pairs_per_s)

    return [i for i in measured if not any(beats(trials[j], trials[i]) for j in measured if j != i)]


def failure_message(trials: list[Trial]) -> str:
    lines = [f"none of the {len(trials)} search candidates passed its quality gate:"]
    for index, trial in enumerate(trials):
        lines.append(f"  {index} {trial.recipe}: {trial.reason or 'passed but was not measured'}")
    return "\n".join(lines)


def choose(trials: list[Trial]) -> int:
    """The index of the fastest passed and measured trial (the first listed among equals)."""
    eligible = [i for i, t in enumerate(trials) if t.passed and t.pairs_per_s is not None]
    if not eligible:
        raise QualityGateFailed(failure_message(trials))
    return max(eligible, key=lambda i: (trials[i].pairs_per_s, -i))


def search_key(checkpoint_digest: str, candidates: list[dict[str, Any]], hardware: str, workload: str) -> str:
    """sha256 of what decides a search: the checkpoint, the concrete candidate recipes in order,
    the machine (its engines and its speed) and the benchmark's shape."""
    payload = {
        "format": SEARCH_FORMAT,
        "checkpoint": checkpoint_digest,
        "candidates": candidates,
        "hardware": hardware,
        "workload": workload,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def record_path(cache_root: Path, key: str) -> Path:
    """Where a search's record lives: beside its candidates' gate reports (``build.REPORTS``,
    spelt out here because this module stays free of the build's torch imports)."""
    return Path(cache_root) / "reports" / f"search-{key}.json"


def chosen_engine_keys(cache_root: Path) -> set[str]:
    """The engine key every recorded search in this cache chose."""
    keys = set()
    for path in record_path(cache_root, "*").parent.glob("search-*.json"):
        report = SearchReport.read(path)
        if report is not None and report.chosen is not None:
            keys.add(report.trials[report.chosen].engine_key or "")
    return keys - {""}


@dataclass
class SearchReport:
    """Every candidate, the Pareto front and the choice: written as JSON beside the gate reports."""

    key: str
    checkpoint: str
    metric: str
    workload: str
    trials: list[Trial]
    front: list[int] = field(default_factory=list)
    chosen: int | None = None

    @classmethod
    def decide(
        cls, key: str, checkpoint: str, metric: str, workload: str, trials: list[Trial]
    ) -> SearchReport:
        """The report of finished trials; raises QualityGateFailed (listing why each candidate
        failed) when none passed, after the report is complete so that it can be written first."""
        report = cls(key, checkpoint, metric, workload, trials, pareto_front(trials))
        try:
            report.chosen = choose(trials)
        except QualityGateFailed:
            report.chosen = None
        return report

    @property
    def winner(self) -> Trial:
        if self.chosen is None:
            raise QualityGateFailed(failure_message(self.trials))
        return self.trials[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "format": SEARCH_FORMAT}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SearchReport:
        trials = [Trial(**t) for t in raw["trials"]]
        return cls(
            raw["key"], raw["checkpoint"], raw["metric"], raw["workload"], trials, raw["front"], raw["chosen"]
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        temp.replace(path)

    @classmethod
    def read(cls, path: Path) -> SearchReport | None:
        """The recorded search at ``path``; None when there is none or it is of another format
        (a record that cannot be read is measured again, never trusted)."""
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != SEARCH_FORMAT:
                return None
            return cls.from_dict(raw)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def status(self) -> list[dict[str, Any]]:
        """The compact form for ``status.*.engine.search``: rounded, so that a record read
        again gives the same status and the operator has nothing new to write."""
        return [
            {
                "recipe": t.recipe,
                "passed": t.passed,
                "drop": None if t.drop is None else round(t.drop, 4),
                "pairsPerS": None if t.pairs_per_s is None else round(t.pairs_per_s),
                "front": i in self.front,
                "chosen": i == self.chosen,
            }
            for i, t in enumerate(self.trials)
        ]

    def table(self) -> str:
        rows = [("", "candidate", self.metric, "drop", "pairs/s", "gate", "")]
        for i, t in enumerate(self.trials):
            mark = "chosen" if i == self.chosen else ("front" if i in self.front else "")
            rows.append(
                (
                    str(i),
                    t.recipe,
                    "-" if t.quality is None else f"{t.quality:.4f}",
                    "-" if t.drop is None else f"{t.drop:+.4f}",
                    "-" if t.pairs_per_s is None else f"{t.pairs_per_s:.0f}",
                    "passed" if t.passed else "FAILED",
                    mark,
                )
            )
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
        reasons = [f"  {i}: {t.reason}" for i, t in enumerate(self.trials) if t.reason]
        return "\n".join([f"search ({self.workload}):", *lines, *reasons])
