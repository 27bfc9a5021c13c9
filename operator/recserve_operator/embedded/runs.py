"""One record per running ``recserve up``: the lock against a second ``up`` and the map for ``down``.

The record is created with O_EXCL, so two concurrent ``up`` of one model cannot both
win. A record whose owner pid is gone is stale (a crash or SIGKILL) and is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from recserve_operator.embedded.processes import pid_alive
from recserve_serving.errors import RecserveError


class AlreadyRunning(RecserveError):
    """A second ``up`` of a model that is being served."""


def runs_dir(state: Path) -> Path:
    path = state / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_run(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def list_runs(state: Path) -> dict[str, dict[str, Any]]:
    """Every recorded run by model name (stale ones included; ``down`` cleans them)."""
    found = {}
    for path in sorted(runs_dir(state).glob("*.json")):
        record = read_run(path)
        if record is not None:
            found[path.stem] = record
    return found


class RunRecord:
    """The lock file of one model's ``up``; ``update`` adds what ``down`` needs to know."""

    def __init__(self, state: Path, name: str) -> None:
        self.path = runs_dir(state) / f"{name}.json"
        self.name = name
        self.data: dict[str, Any] = {"name": name, "pid": os.getpid(), "phase": "starting"}

    def acquire(self) -> RunRecord:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                existing = read_run(self.path) or {}
                pid = int(existing.get("pid", 0))
                if pid and pid != os.getpid() and pid_alive(pid):
                    where = existing.get("endpoint") or "starting"
                    raise AlreadyRunning(
                        f"{self.name} is already running (pid {pid}, {where}); "
                        f"stop it with `recserve down {self.name}` first"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(self.data, handle)
            return self
        raise AlreadyRunning(f"could not take the run lock {self.path}")

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if (read_run(self.path) or {}).get("pid") == os.getpid():
                self.path.unlink()
