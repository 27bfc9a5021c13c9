"""``recserve promote NAME`` and ``recserve abort NAME``: manual canary control.

Both act on the canary that is live right now, named by its digest, so a late or repeated
command never touches a later canary. With a running ``recserve up`` of NAME in the state
directory they act locally; otherwise they annotate the RecommenderModel in the cluster
(``recserve.dev/promote`` / ``recserve.dev/abort``), never touching its spec.
"""

from __future__ import annotations

import argparse
from typing import Literal

from recserve_operator.embedded.controls import request
from recserve_operator.embedded.processes import pid_alive
from recserve_operator.embedded.runs import list_runs
from recserve_serving.errors import InvalidRequest
from recserve_serving.paths import state_dir

Action = Literal["promote", "abort"]
LIVE_STATES = {"Progressing", "Paused"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the RecommenderModel whose canary to act on")
    parser.add_argument("--namespace", "-n", default=None, help="namespace in the cluster (default: current)")
    parser.add_argument("--state", help="state directory of a local `recserve up`")


def _local(args: argparse.Namespace, action: Action) -> bool:
    state = state_dir(args.state)
    record = list_runs(state).get(args.name)
    if record is None or not pid_alive(int(record.get("pid", 0))):
        return False
    canary = (record.get("status") or {}).get("canary") or {}
    if canary.get("state") not in LIVE_STATES:
        raise InvalidRequest(
            f"{args.name} has no canary in progress (canary state: {canary.get('state', 'none')})"
        )
    request(state, args.name, action, str(canary["digest"]))
    print(f"{action} requested for canary {canary['checkpoint']} of {args.name} (local)")
    return True


def run_action(args: argparse.Namespace, action: Action) -> int:
    if _local(args, action):
        return 0
    from recserve_operator.kube import annotate_canary_control

    checkpoint = annotate_canary_control(args.name, args.namespace, action)
    print(f"{action} requested for canary {checkpoint} of {args.name} (annotation recserve.dev/{action})")
    return 0
