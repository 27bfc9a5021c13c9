"""``recserve validate FILE...``: check manifests before they reach a cluster (or a GitOps repo).

Exit 0 when every document is a valid RecommenderModel; otherwise exit 2 with one line per
problem, ``FILE[:doc N] field.path: what is allowed``, so editors and CI can point at it.
"""

from __future__ import annotations

import argparse

from recserve_operator.validate import STDIN, validate_files

EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help=f"YAML manifest, one or more documents; {STDIN} reads stdin"
    )


def run(args: argparse.Namespace) -> int:
    report = validate_files(args.files)
    for problem in report.problems:
        print(problem)
    if not report.ok:
        return EXIT_INVALID
    print(f"ok: {len(report.models)} RecommenderModel(s) in {len(args.files)} file(s)")
    return 0
