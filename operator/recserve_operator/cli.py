"""The ``recserve`` command line.

Each subcommand lives in its own module and is imported only when chosen, so that
``recserve validate`` stays fast and does not import torch or Ray. Expected failures
(``RecserveError``) print one line and exit 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from recserve_serving.errors import RecserveError

EXIT_USAGE = 2

# name -> (module, help); each module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("recserve_operator.commands.validate", "check RecommenderModel manifests"),
    "crd": ("recserve_operator.commands.crd", "print or check the generated CRD YAML"),
    "train": ("recserve_operator.commands.train", "fine-tune the MovieLens ranker and register it"),
    "retrain": (
        "recserve_operator.commands.retrain",
        "fine-tune a model's stable version on its new feedback; a version no worse moves to the candidate",
    ),
    "eval": (
        "recserve_operator.commands.eval",
        "measure ranking quality on the full-catalog temporal split (offline or a live endpoint)",
    ),
    "build": ("recserve_operator.commands.build", "build (or fetch from cache) an optimized engine"),
    "engines": ("recserve_operator.commands.engines", "garbage-collect the engine cache (engines gc --ttl)"),
    "up": ("recserve_operator.commands.up", "serve a RecommenderModel on a local Ray cluster"),
    "down": ("recserve_operator.commands.down", "stop what `recserve up` started"),
    "promote": ("recserve_operator.commands.promote", "promote the live canary of a model now"),
    "abort": ("recserve_operator.commands.abort", "roll the live canary of a model back to 0%"),
    "operator": ("recserve_operator.commands.operator", "run the Kubernetes operator (kopf)"),
    "autoscale": (
        "recserve_operator.commands.autoscale",
        "tune autoscaling: profile a replica, simulate a trace, recommend settings",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv)  # prints usage (or --help) and exits
        return EXIT_USAGE
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    parser = argparse.ArgumentParser(prog=f"recserve {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args))
    except RecserveError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
