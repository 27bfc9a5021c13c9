"""``recserve down [NAME]``: stop what ``recserve up`` started, by pid, leaving nothing behind."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

from recserve_operator.embedded.processes import pid_alive, stop_tree
from recserve_operator.embedded.runs import list_runs, runs_dir
from recserve_serving.errors import NotFound
from recserve_serving.paths import state_dir
from recserve_serving.waiting import WaitTimeout, wait_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="model to stop (default: every running model)")
    parser.add_argument("--state", help="state directory (default: $RECSERVE_HOME or ./.recserve)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop")


def stop_run(state: Path, name: str, record: dict[str, Any], timeout: float) -> None:
    """Ask ``up`` to shut down (SIGTERM); if it does not, stop its Ray cluster ourselves."""
    up_pid = int(record.get("pid", 0))
    ray_pid = int((record.get("ray") or {}).get("pid", 0))
    if up_pid and pid_alive(up_pid):
        os.kill(up_pid, signal.SIGTERM)
        try:
            wait_for(lambda: not pid_alive(up_pid), timeout, message=f"recserve up (pid {up_pid}) to exit")
        except WaitTimeout:
            stop_tree([up_pid], grace=5)
    if ray_pid and pid_alive(ray_pid):
        stop_tree([ray_pid], pgids=[ray_pid])
    (runs_dir(state) / f"{name}.json").unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    state = state_dir(args.state)
    runs = list_runs(state)
    if args.name:
        if args.name not in runs:
            running = ", ".join(sorted(runs)) or "none"
            raise NotFound(f"no running model named {args.name!r} in {state} (running: {running})")
        runs = {args.name: runs[args.name]}
    if not runs:
        print(f"nothing is running from {state}")
        return 0
    for name, record in runs.items():
        stop_run(state, name, record, args.timeout)
        print(f"stopped {name}")
    return 0
