"""``recserve abort NAME``: send the live canary's traffic back to stable (weight 0) and stop it."""

from __future__ import annotations

import argparse

from recserve_operator.commands.canary_control import add_arguments, run_action

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    return run_action(args, "abort")
