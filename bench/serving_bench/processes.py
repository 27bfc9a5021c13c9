"""Process control: every server the bench starts is stopped by pid however the run ends.

The machine is shared with other sessions, so nothing is found or stopped by name: each
child runs in its own process group, is waited on with the project's ``wait_for`` (which
gives up at once when the child dies, with its log), and is stopped with signals masked so
that a second Ctrl-C cannot leave it half-stopped.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwinds like Ctrl-C, so the same ``finally`` blocks stop everything."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_interruptibly(run: Callable[[], int]) -> int:
    """``run()`` with SIGTERM unwinding like Ctrl-C; an interrupted run (whose ``finally`` blocks
    stopped what it started) exits 130."""
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        return run()
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while stopping what the bench started, so that nothing is left half-stopped."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def owned(stop: Callable[[], None]) -> Iterator[None]:
    """Run the body, then ``stop()`` however it ends (error, Ctrl-C, SIGTERM)."""
    try:
        yield
    finally:
        with uninterrupted():
            stop()


class Exited(RuntimeError):
    """A server the bench started exited before it was ready."""


class Child:
    """A server subprocess in its own process group, stopped by pid (tree and group)."""

    def __init__(self, label: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.label = label
        self.command = command
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from recserve_operator.embedded.processes import spawn

        self.process = spawn(self.command, self.log, self.env)
        say(f"{self.label}: started pid {self.process.pid} (log {self.log})")

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def check_alive(self) -> None:
        if self.process is not None and not self.alive():
            raise Exited(f"{self.label} exited with code {self.process.returncode}:\n{tail(self.log)}")

    def stop(self) -> None:
        from recserve_operator.embedded.processes import stop_tree

        if self.process is None:
            return
        stopped = stop_tree([self.process.pid], pgids=[self.process.pid], grace=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        say(f"{self.label}: stopped pids {sorted(stopped)}")


def wait_while_alive(
    check: Callable[[], bool], timeout: float, what: str, child: Child, interval: float = 0.5
) -> None:
    """``wait_for`` that ends at once, with the child's log, when the child exits."""
    from recserve_serving.waiting import wait_for

    def done() -> bool:
        return not child.alive() or check()

    wait_for(done, timeout, interval=interval, message=what)
    child.check_alive()


def wait_http(url: str, child: Child, timeout: float) -> None:
    """Until ``url`` answers 200: a server is ready when it says so, not when its port opens."""
    import httpx

    def ready() -> bool:
        return httpx.get(url, timeout=5).status_code == 200

    wait_while_alive(ready, timeout, child.label, child)


def non_loopback_listeners(pids: Sequence[int]) -> list[str]:
    """Listening sockets of these process trees that are not bound to loopback."""
    import psutil

    from recserve_operator.embedded.processes import process_tree

    found = []
    for proc in process_tree(pids):
        with contextlib.suppress(psutil.Error):
            listing = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
            for conn in listing(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in ("127.0.0.1", "::1"):
                    found.append(f"{proc.name()}[{proc.pid}] {conn.laddr.ip}:{conn.laddr.port}")
    return sorted(set(found))
