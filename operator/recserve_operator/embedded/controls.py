"""Manual canary controls for the embedded default, the local twin of the cluster annotations.

``recserve promote|abort NAME`` drops a file naming the canary digest it acts on; the
running ``up`` reads it on its next pass. Naming the digest keeps a stale file from
touching a later canary, exactly like the ``recserve.dev/promote`` annotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from recserve_operator.embedded.runs import runs_dir
from recserve_operator.planners.canary import Controls

Action = Literal["promote", "abort"]


def control_file(state: Path, name: str, action: Action) -> Path:
    return runs_dir(state) / f"{name}.{action}"


def request(state: Path, name: str, action: Action, digest: str) -> None:
    control_file(state, name, action).write_text(digest)


def read_controls(state: Path, name: str, digest: str | None) -> Controls:
    def wanted(action: Action) -> bool:
        path = control_file(state, name, action)
        return digest is not None and path.is_file() and path.read_text().strip() == digest

    return Controls(promote=wanted("promote"), abort=wanted("abort"))


def clear(state: Path, name: str) -> None:
    actions: tuple[Action, ...] = ("promote", "abort")
    for action in actions:
        control_file(state, name, action).unlink(missing_ok=True)
