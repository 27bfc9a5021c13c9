"""``recserve promote NAME``: make the live canary stable now, skipping its remaining steps."""

from __future__ import annotations

import argparse

from recserve_operator.commands.canary_control import add_arguments, run_action

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    return run_action(args, "promote")
