"""``recserve eval``: the full-catalog temporal protocol for baselines and a ranker or a live endpoint."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recserve_operator.commands.data_option import add_data_arguments, data_spec

if TYPE_CHECKING:
    from recserve_serving.quality.run import RankerUnderTest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ranker = parser.add_mutually_exclusive_group()
    ranker.add_argument(
        "--checkpoint",
        help="rank with this checkpoint (models:/NAME/VERSION, models:/NAME@ALIAS, file://...)",
    )
    ranker.add_argument("--engine", type=Path, help="rank with this built engine directory")
    add_data_arguments(parser)
    parser.add_argument(
        "--endpoint",
        help="also evaluate a live router at this base URL (http://127.0.0.1:8000): each held-out user's "
        "history goes through POST /v1/recommend",
    )
    parser.add_argument(
        "--diversity",
        type=float,
        nargs="*",
        default=[0.2, 0.4, 0.6],
        metavar="LAMBDA",
        help="also evaluate the served pipeline with MMR at these lambdas (default 0.2 0.4 0.6; none: off)",
    )
    parser.add_argument("--users", type=int, default=200, help="test users sampled (0: all of them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the user sample")
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip most-popular, ALS, item-kNN, hybrid"
    )
    parser.add_argument(
        "--served-only",
        action="store_true",
        help="only the served pipeline (and --endpoint): no baselines, no content-only pipeline",
    )
    parser.add_argument(
        "--no-tune", action="store_true", help="ALS at the default setting, not tuned on validation"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for eval.json, eval.md, eval.png (default STATE/eval)"
    )
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _ranker(args: argparse.Namespace, state: Path) -> RankerUnderTest | None:
    from recserve_serving.fusion import read_fusion
    from recserve_serving.quality.run import RankerUnderTest

    if args.engine is not None:
        from recserve_serving.engine.runtime import load_engine

        engine = load_engine(args.engine)
        return RankerUnderTest(f"engine {engine.name}", engine.score, read_fusion(args.engine))
    if args.checkpoint is not None:
        import torch

        from recserve_serving.model import load_checkpoint, score_pairs
        from recserve_serving.registry import Registry

        resolved = Registry(state).resolve(args.checkpoint)
        checkpoint = load_checkpoint(resolved.path)
        torch.set_num_threads(2)

        def score(users: list[str], items: list[str]) -> np.ndarray:
            with torch.inference_mode():
                return score_pairs(checkpoint, users, items)

        return RankerUnderTest(
            f"checkpoint {args.checkpoint} (torch fp32)", score, read_fusion(resolved.path)
        )
    return None


def run(args: argparse.Namespace) -> int:
    from recserve_serving.data import load_dataset
    from recserve_serving.paths import state_dir
    from recserve_serving.quality.run import EvalOptions, evaluate, setup

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the table
    if args.users < 0:
        print("error: --users must be 0 (all) or a positive count", file=sys.stderr)
        return 2
    state = state_dir(args.state)
    options = EvalOptions(
        users=args.users or None, seed=args.seed, tune_als=not args.no_tune, progress=not args.quiet
    )
    ranker = _ranker(args, state)
    if ranker is None and args.endpoint is None and args.no_baselines:
        print(
            "error: nothing to evaluate: give --checkpoint, --engine or --endpoint, or keep the baselines",
            file=sys.stderr,
        )
        return 2
    context = setup(load_dataset(data_spec(args)), state / "retrieval", options)
    report = evaluate(
        context,
        options,
        ranker=ranker,
        endpoint=args.endpoint,
        diversity=args.diversity,
        baselines_too=not (args.no_baselines or args.served_only),
        content_too=not args.served_only,
    )
    out = args.out or state / "eval"
    out.mkdir(parents=True, exist_ok=True)
    tables = "\n\n".join(report.table(cohort) for cohort in ("all", "warm", "cold"))
    (out / "eval.md").write_text(f"{report.protocol}\n\n{tables}\n")
    report.write_json(out / "eval.json")
    report.plot(out / "eval.png")
    print(report.protocol)
    print(tables)
    print(f"written: {out / 'eval.json'}, {out / 'eval.md'}, {out / 'eval.png'}")
    return 0
