"""Engines side by side: torch eager fp32, ORT fp32, ORT INT8 (dynamic, static), distilled + INT8, pruned + INT8.

    .venv/bin/python bench/engines.py [--checkpoint models:/movielens-ranker@champion] [--rounds 5] [--only ROW ...]

Every engine is built through the real builder (gate relaxed so all of them build, their
drop is reported instead), scored on the same held-out evaluation lists, and timed in
interleaved rounds at batch 1 and batch 32 with 2 threads each. The machine is shared
and noisy, so only ratios from one run mean anything; rounds are interleaved so that a
burst of load hits every engine alike. ORT threads sleep between calls and
``OMP_WAIT_POLICY=PASSIVE`` keeps torch's from spinning into ORT's time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = "targets: ORT INT8 >= 2.0x torch eager at b32 with NDCG@10 drop <= 0.01; best distilled/pruned INT8 >= 4x with drop <= 0.02"

ROWS: list[tuple[str, dict]] = [
    ("torch eager fp32", {"backend": "torch", "precision": "fp32"}),
    ("ORT fp32", {"backend": "onnxruntime", "precision": "fp32"}),
    ("ORT INT8", {"backend": "onnxruntime", "precision": "int8"}),
    (
        "ORT INT8 static",
        {"backend": "onnxruntime", "precision": "int8", "quantization": {"mode": "static"}},
    ),
    (
        "distilled(3L) + INT8",
        {"backend": "onnxruntime", "precision": "int8", "distill": {"layers": 3, "steps": 150}},
    ),
    (
        "pruned(h.25,f.5) + INT8",
        {
            "backend": "onnxruntime",
            "precision": "int8",
            "prune": {"heads": 0.25, "ffn": 0.5, "recoverySteps": 60},
        },
    ),
    (
        "distilled(3L)+pruned + INT8",
        {
            "backend": "onnxruntime",
            "precision": "int8",
            "distill": {"layers": 3, "steps": 150},
            "prune": {"heads": 0.25, "ffn": 0.5, "recoverySteps": 60},
        },
    ),
]


def time_block(engine, users: list[str], items: list[str], calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        engine.score(users, items)
        times.append(time.perf_counter() - start)
    return times


def served_ndcg(engines: list, state: Path, users: int) -> dict[str, float]:
    """Each engine's served-pipeline NDCG@10 on one sample of the full-catalog protocol.

    The first row is the unoptimized teacher (torch eager fp32), so its figure is the teacher's."""
    from recserve_serving.engine.build import served_of
    from recserve_serving.fusion import read_fusion

    out = {}
    for label, built, engine in engines:
        started = time.perf_counter()
        metrics = served_of(engine.score, read_fusion(built.path), users, state / "retrieval")
        out[label] = metrics["served_ndcg@10"]
        print(
            f"{label}: served NDCG@10 {out[label]:.4f} ({time.perf_counter() - started:.0f}s)",
            file=sys.stderr,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="models:/movielens-ranker@champion")
    parser.add_argument("--state", default=None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--users", type=int, default=100, help="evaluation users")
    parser.add_argument("--candidates", type=int, default=50, help="candidates per evaluation user")
    parser.add_argument(
        "--served-users",
        type=int,
        default=60,
        help="users of the full-catalog protocol on which each engine's served pipeline "
        "(hybrid retrieval, the engine, its fusion head) is scored: served NDCG@10 (0: skip)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[label for label, _ in ROWS],
        help="these rows alone (the first is the ratios' base)",
    )
    args = parser.parse_args(argv)
    rows_wanted = [row for row in ROWS if args.only is None or row[0] in args.only]

    from recserve_serving.engine.build import build_engine
    from recserve_serving.engine.runtime import load_engine
    from recserve_serving.evaluate import EvalSettings, eval_set
    from recserve_serving.example_data import load_example
    from recserve_serving.paths import state_dir
    from recserve_serving.recipe import OptimizationRecipe
    from recserve_serving.registry import Registry

    state = state_dir(args.state)
    registry = Registry(state)
    resolved = registry.resolve(args.checkpoint)
    data = load_example()
    settings = EvalSettings(users=args.users, candidates=args.candidates, latency_repeats=3)
    engines = []
    for label, fields in rows_wanted:
        recipe = OptimizationRecipe.model_validate(
            {**fields, "maxBatchSize": 32, "qualityGate": {"maxDrop": 1.0}}
        )
        start = time.perf_counter()
        built = build_engine(resolved, recipe, state / "engines", data=data, evaluation=settings)
        took = time.perf_counter() - start
        print(
            f"{label}: {'cached' if built.cache_hit else f'built in {took:.0f}s'} {built.path}",
            file=sys.stderr,
        )
        engines.append((label, built, load_engine(built.path)))

    evals = eval_set(data, users=settings.users, candidates=settings.candidates, seed=settings.seed)
    users, items = evals.pairs(data)
    b1 = ([users[0]], [items[0]])
    b32 = (users[:32], items[:32])
    timings: dict[str, dict[str, list[float]]] = {label: {"b1": [], "b32": []} for label, _, _ in engines}
    for _, _, engine in engines:
        time_block(engine, *b32, 2)
    for _ in range(args.rounds):
        for label, _, engine in engines:
            timings[label]["b1"] += time_block(engine, *b1, 20)
            timings[label]["b32"] += time_block(engine, *b32, 4)
            time.sleep(0.2)

    served = served_ndcg(engines, state, args.served_users) if args.served_users else {}
    reference = engines[0][1].report.reference if engines[0][1].report else {}
    base_b32 = 32 / np.median(timings[engines[0][0]]["b32"])
    rows = []
    for label, built, _ in engines:
        metrics = built.manifest.metrics
        t1, t32 = np.array(timings[label]["b1"]) * 1000, np.array(timings[label]["b32"]) * 1000
        rows.append(
            {
                "engine": label,
                "pairs_per_s_b1": 1000 / np.median(t1),
                "pairs_per_s_b32": 32000 / np.median(t32),
                "p50_ms_b1": float(np.percentile(t1, 50)),
                "p99_ms_b1": float(np.percentile(t1, 99)),
                "p50_ms_b32": float(np.percentile(t32, 50)),
                "p99_ms_b32": float(np.percentile(t32, 99)),
                "size_mb": metrics["size_bytes"] / 1e6,
                "params_m": metrics["params"] / 1e6,
                "ndcg@10": metrics["ndcg@10"],
                "ndcg_drop": reference.get("ndcg@10", np.nan) - metrics["ndcg@10"],
                "auc": metrics["auc"],
                "coverage": metrics["coverage"],
                "ratio_b32": (32000 / np.median(t32)) / base_b32,
                "served_ndcg@10": served.get(label, np.nan),
            }
        )
    header = (
        "| engine | pairs/s b1 | pairs/s b32 | p50/p99 ms b1 | p50/p99 ms b32 | size MB | params M "
        "| NDCG@10 | drop | AUC | coverage | × torch b32 | served NDCG@10 | × teacher's |"
    )
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['engine']} | {r['pairs_per_s_b1']:.0f} | {r['pairs_per_s_b32']:.0f} "
            f"| {r['p50_ms_b1']:.1f}/{r['p99_ms_b1']:.1f} | {r['p50_ms_b32']:.0f}/{r['p99_ms_b32']:.0f} "
            f"| {r['size_mb']:.1f} | {r['params_m']:.1f} | {r['ndcg@10']:.4f} | {r['ndcg_drop']:+.4f} "
            f"| {r['auc']:.4f} | {r['coverage']:.3f} | {r['ratio_b32']:.2f}× "
            f"| {r['served_ndcg@10']:.4f} | {r['served_ndcg@10'] / rows[0]['served_ndcg@10']:.3f} |"
        )
    from recserve_serving.evaluate import baselines

    for name, metrics in baselines(data, evals).items():
        print(
            f"| baseline: {name} | | | | | | | {metrics['ndcg@10']:.4f} | | {metrics['auc']:.4f} | {metrics['coverage']:.3f} | |"
        )
    print(
        f"\n{TARGETS}; checkpoint {resolved.uri} ({resolved.digest[:19]}), eval {settings.describe()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
