"""One control-plane component as an OS process: started in its own process group with its
output in a log file, stopped by pid (SIGTERM to the group, then SIGKILL), never by name."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from recserve_serving.waiting import wait_for

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel to SIGKILL the child if the process that started it dies, so that a
    killed pytest leaves no component running behind it. SIGKILL, not SIGTERM: the parent's
    death gives no teardown order, and an API server whose etcd is already gone hangs in its
    graceful shutdown."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_using(path: str | os.PathLike[str]) -> list[int]:
    """Pids of live processes whose command line mentions ``path`` or whose working directory
    is inside it (every component runs in its control plane's workdir): the orphan check."""
    text = str(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (text in cmdline or cwd == text or cwd.startswith(text + "/")) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class ComponentError(RuntimeError):
    pass


class Component:
    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log: Path,
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def start(self) -> None:
        if self.proc is not None:
            raise ComponentError(f"{self.name} already started (pid {self.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def check_alive(self) -> None:
        """Raise with the log's tail if the process has exited."""
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else "?"
            raise ComponentError(f"{self.name} exited (code {code}); last log lines:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the component's process group, wait, then SIGKILL whatever is left."""
        if self.pid is None:
            return
        pgid = self.pid  # start_new_session made the component its group's leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._group_alive(pgid):
            self._reap()
            time.sleep(0.1)
        if self._group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._group_alive(pgid):
                self._reap()
                time.sleep(0.1)
        self._reap()
        if self._group_alive(pgid):
            raise ComponentError(f"{self.name} (pgid {pgid}) survived SIGKILL")

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # killpg(0) also succeeds for zombies; look for a live member.
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text(errors="replace")
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False


def wait_while_alive(
    components: Sequence[Component],
    predicate: Callable[[], Any],
    timeout: float,
    *,
    interval: float,
    message: str,
) -> Any:
    """``wait_for`` (a predicate's errors mean "not yet", e.g. connection refused while a server
    starts), except that a component that exits ends the wait at once, with its log: ``wait_for``
    alone would count that as "not yet" until the timeout. Returns the predicate's value."""

    def done() -> Any:
        if not all(comp.alive() for comp in components):
            return True
        return predicate()

    result = wait_for(done, timeout, interval=interval, message=message)
    for comp in components:
        comp.check_alive()  # raises, with the log, for the component that ended the wait
    return result
