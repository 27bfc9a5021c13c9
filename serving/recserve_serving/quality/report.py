"""Scoring methods on a split, and the report: a table, JSON and a PNG plot.

Per-user metrics are averaged within each cohort: all test users, warm ones (in the
snapshot) and cold ones (history given only with the request). Coverage is over the cohort's
top-10 lists against the whole catalog.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.quality import metrics as m
from recserve_serving.quality.methods import Method, Ranked
from recserve_serving.quality.split import EvalUser, ProtocolSplit

COHORTS = ("all", "warm", "cold")
HEADLINE = (
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "recall@50",
    "recall@200",
    "coverage@10",
    "ild_genres",
    "ild_embedding",
    "novelty",
)


@dataclass(frozen=True)
class ItemSpace:
    """What beyond-accuracy metrics need to know of the catalog."""

    item_ids: np.ndarray
    genres: Mapping[int, frozenset[str]]
    vectors: np.ndarray
    """L2-normalised item embeddings, rows in ``item_ids`` order."""
    counts: Mapping[int, int]
    """Snapshot interactions per item (novelty's popularity)."""
    snapshot_users: int

    row: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row", {int(x): i for i, x in enumerate(self.item_ids)})

    def embedding_diversity(self, items: Sequence[int]) -> float:
        return m.embedding_diversity(self.vectors[[self.row[i] for i in items if i in self.row]])


def user_metrics(user: EvalUser, ranked: Ranked, space: ItemSpace, k: int = m.K) -> dict[str, float]:
    top = ranked.items[:k]
    has_candidates = bool(ranked.candidates)
    return {
        "ndcg@10": m.ndcg_at(ranked.items, user.relevant, k),
        "hr@10": m.hit_at(ranked.items, user.relevant, k),
        "mrr@10": m.mrr_at(ranked.items, user.relevant, k),
        "recall@50": m.recall_at(ranked.candidates, user.relevant, 50) if has_candidates else math.nan,
        "recall@200": m.recall_at(ranked.candidates, user.relevant, 200) if has_candidates else math.nan,
        "ild_genres": m.intra_list_diversity(top, space.genres),
        "ild_embedding": space.embedding_diversity(top),
        "novelty": m.novelty(top, space.counts, space.snapshot_users),
    }


@dataclass
class MethodResult:
    name: str
    cohorts: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def aggregate(
    users: Sequence[EvalUser],
    per_user: Sequence[dict[str, float]],
    tops: Sequence[list[int]],
    catalog_size: int,
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for cohort in COHORTS:
        picked = [i for i, u in enumerate(users) if cohort == "all" or u.cold == (cohort == "cold")]
        if not picked:
            continue
        row = {key: float(np.nanmean([per_user[i][key] for i in picked])) for key in per_user[0]}
        row["coverage@10"] = len({x for i in picked for x in tops[i][: m.K]}) / max(1, catalog_size)
        row["users"] = float(len(picked))
        out[cohort] = row
    return out


def run_method(
    method: Method, split: ProtocolSplit, space: ItemSpace, *, progress: bool = True
) -> MethodResult:
    """Rank every test user with ``method`` and aggregate; a tqdm bar on stderr when asked."""
    import time

    from tqdm import tqdm

    started = time.perf_counter()
    per_user, tops = [], []
    users = tqdm(
        split.users, desc=method.name[:40], unit="user", file=sys.stderr, disable=not progress, leave=False
    )
    for user in users:
        ranked = method.rank(user)
        per_user.append(user_metrics(user, ranked, space))
        tops.append(ranked.items[: m.K])
    result = MethodResult(method.name, aggregate(split.users, per_user, tops, len(space.item_ids)))
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class EvalReport:
    protocol: str
    results: list[MethodResult]
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "notes": self.notes,
            "methods": [
                {"name": r.name, "seconds": round(r.seconds, 1), "cohorts": r.cohorts} for r in self.results
            ],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")

    def table(self, cohort: str = "all", columns: Sequence[str] = HEADLINE) -> str:
        """A Markdown table of one cohort: methods × metrics (n/a where a method cannot say)."""
        header = f"| method ({cohort} users) | " + " | ".join(columns) + " |"
        lines = [header, "| --- |" + " ---: |" * len(columns)]
        for result in self.results:
            row = result.cohorts.get(cohort)
            if row is None:
                continue
            cells = ["n/a" if math.isnan(row.get(c, math.nan)) else f"{row[c]:.4f}" for c in columns]
            lines.append(f"| {result.name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        """NDCG@10 and genre diversity per method, warm and cold side by side."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [r.name for r in self.results]
        fig, axes = plt.subplots(1, 2, figsize=(13, 0.5 * len(names) + 2), sharey=True)
        y = np.arange(len(names))
        for ax, metric in zip(axes, ("ndcg@10", "ild_genres"), strict=True):
            for offset, cohort in ((-0.2, "warm"), (0.2, "cold")):
                values = [r.cohorts.get(cohort, {}).get(metric, math.nan) for r in self.results]
                ax.barh(y + offset, values, height=0.4, label=f"{cohort} users")
            ax.set_title(metric)
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(y, names)
        axes[0].invert_yaxis()
        axes[1].legend(loc="lower right")
        fig.suptitle(self.protocol, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
