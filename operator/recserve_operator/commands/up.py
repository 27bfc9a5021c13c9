"""``recserve up FILE``: serve a RecommenderModel on a local Ray cluster (the embedded default)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recserve_operator.embedded.runner import UpOptions, up
from recserve_serving.paths import state_dir
from recserve_serving.serve.config import SERVE_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="a RecommenderModel YAML file")
    parser.add_argument("--state", help="state directory (default: $RECSERVE_HOME or ./.recserve)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=SERVE_PORT, help=f"HTTP port (default {SERVE_PORT})")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for readiness")


def run(args: argparse.Namespace) -> int:
    options = UpOptions(
        manifest=args.manifest,
        state=state_dir(args.state),
        host=args.host,
        port=args.port,
        ready_timeout=args.ready_timeout,
    )
    return up(options)
