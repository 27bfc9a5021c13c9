"""``recserve train``: fine-tune a ranker on a catalog's interactions (``--data``; the bundled
MovieLens example by default), register it, make it the champion."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from recserve_operator.commands.data_option import add_data_arguments, data_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from recserve_serving.tokens import SHAPES
    from recserve_serving.train import DEFAULT_BATCH, DEFAULT_SHAPE, DEFAULT_STEPS

    parser.add_argument("--name", default="movielens-ranker", help="registered model name")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default=DEFAULT_SHAPE,
        help="prefix: the user is encoded once per request and each candidate reads it (default); "
        "cross: full attention over every (user, item) pair",
    )
    parser.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="tokens per (user, item) pair (default: 128 for prefix, of which 32 are the item's; 64 for cross)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="keep only the base encoder's first N layers: a smaller, faster ranker (default: all 6)",
    )
    parser.add_argument(
        "--adversarial",
        type=float,
        default=None,
        metavar="EPSILON",
        help="FGM adversarial training on the embeddings with this epsilon",
    )
    parser.add_argument(
        "--eval-users", type=int, default=100, help="held-out users in the post-training evaluation"
    )
    parser.add_argument(
        "--negatives",
        choices=("hard", "sampled"),
        default="hard",
        help="hard: the hybrid retriever's candidates, plus a fusion head (default); sampled: "
        "random and popular movies, no head (a text-only ranker)",
    )
    parser.add_argument(
        "--state", default=None, help="state directory (default $RECSERVE_HOME or ./.recserve)"
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--until",
        type=timestamp,
        default=None,
        metavar="TIMESTAMP",
        help="train only on interactions at or before this moment: Unix seconds or an ISO date/time "
        "(UTC unless it names a zone), e.g. 2018-09-01; a later retrain adds what came after",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the registry already holds a version of --name (idempotent set-up)",
    )


def timestamp(text: str) -> int:
    """Unix seconds from ``1536000000`` or an ISO date/time (``2018-09-01``, ``2018-09-01T12:00+02:00``)."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither Unix seconds nor an ISO date/time (e.g. 1536000000 or 2018-09-01)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def run(args: argparse.Namespace) -> int:
    from recserve_serving.data import load_dataset
    from recserve_serving.paths import state_dir
    from recserve_serving.registry import Registry
    from recserve_serving.train import train_and_register

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    state = state_dir(args.state)
    registry = Registry(state)
    if args.if_missing and registry.has_model(args.name):
        print(f"models:/{args.name} is registered already; nothing to train (--if-missing)")
        return 0
    resolved, metrics = train_and_register(
        registry,
        args.name,
        load_dataset(data_spec(args), until=args.until),
        steps=args.steps,
        batch_size=args.batch_size,
        max_len=args.max_len,
        seed=args.seed,
        adversarial=args.adversarial,
        eval_users=args.eval_users,
        layers=args.layers,
        shape=args.shape,
        index_dir=state / "retrieval" if args.negatives == "hard" else None,
    )
    print(f"registered models:/{resolved.name}/{resolved.version} (@champion) digest {resolved.digest}")
    for key in ("ndcg@10", "most_popular_ndcg@10", "hitrate@10", "auc", "coverage", "wall_seconds"):
        if key in metrics:
            print(f"  {key:<22} {metrics[key]:.4f}")
    return 0
