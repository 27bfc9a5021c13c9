"""A `recserve up` run as a test drives it: its output collected line by line, waits on what it
prints, and `down` plus a check that every process of its tree is gone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import yaml

from recserve_operator.embedded.processes import free_port, process_tree
from recserve_serving.waiting import wait_for

RECSERVE = [sys.executable, "-m", "recserve_operator.cli"]
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"


class Up:
    """``recserve up MANIFEST --port PORT`` in its own session."""

    def __init__(self, manifest: Path, env: dict[str, str], port: int) -> None:
        self.env = env
        self.endpoint = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [*RECSERVE, "up", str(manifest), "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.tree: list[psutil.Process] = []

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def printed(self, pattern: str) -> bool:
        """Whether a line matches ``pattern``; an exited `up` is a failure, with its last lines."""
        if self.process.poll() is not None:
            raise AssertionError("recserve up exited:\n" + "\n".join(self.lines[-40:]))
        return any(re.search(pattern, line) for line in self.lines)

    def wait_printed(self, pattern: str, timeout: float) -> None:
        try:
            # An exit ends the wait at once (printed() then says so), not after the whole timeout.
            wait_for(
                lambda: self.process.poll() is not None or self.printed(pattern),
                timeout,
                interval=1.0,
                message=pattern,
            )
        except TimeoutError as error:
            raise AssertionError(f"{error}; recserve up printed:\n" + "\n".join(self.lines[-30:])) from None
        if self.process.poll() is not None:
            self.reader.join(timeout=5)  # so that the error shows its last lines
        if not self.printed(pattern):
            raise AssertionError(
                f"{pattern!r} not printed; recserve up printed:\n" + "\n".join(self.lines[-30:])
            )

    def ready(self) -> bool:
        return self.printed(r"^READY ")

    def wait_ready(self, timeout: float = 1500) -> None:
        self.wait_printed(r"^READY ", timeout)
        self.tree = process_tree([self.process.pid])

    def down(self) -> None:
        """`recserve down` if it still runs, then wait for it to exit."""
        if self.process.poll() is None:
            subprocess.run([*RECSERVE, "down"], env=self.env, timeout=180, check=False)
        self.process.wait(timeout=120)

    def survivors(self) -> list[int]:
        return [p.pid for p in self.tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def up_example(state: Path, work: Path) -> tuple[Up, dict[str, Any], Path]:
    """`recserve up` of the example manifest (written to ``work``, so a test can edit it as a
    GitOps commit would) with the test state's registry and engines: the run, the manifest as
    applied, and its path. Twenty candidates per request keep a loaded 2-core machine at several
    requests a second, so canary steps see their minimum of requests within minutes."""
    stable = yaml.safe_load(EXAMPLE.read_text())
    stable["spec"]["serving"]["retrieval"] = {"candidates": 20, "defaultK": 10, "maxK": 20}
    manifest = work / "model.yaml"
    manifest.write_text(yaml.safe_dump(stable))
    env = {**os.environ, "RECSERVE_HOME": str(state), "RECSERVE_RAY_TMP": str(work / "ray")}
    return Up(manifest, env, free_port()), stable, manifest
