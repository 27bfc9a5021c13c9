"""Starting and stopping process trees by pid, leaving nothing behind.

Ray's head spawns a GCS server, a raylet, a dashboard and many workers; some of them
re-parent or open new sessions. So stopping collects the whole tree first, then signals
every member, then waits, and only then escalates to SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(command: Sequence[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, output to ``log_file``."""
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def process_tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their live descendants."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
    return list(found.values())


def processes_in_groups(pgids: Iterable[int]) -> list[psutil.Process]:
    """Live processes whose process group is one of ``pgids`` (catches re-parented children)."""
    wanted = set(pgids)
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.pid) in wanted:
                found.append(proc)
    return found


def stop_tree(pids: Iterable[int], pgids: Iterable[int] = (), grace: float = 15.0) -> list[int]:
    """SIGTERM every process of the trees and groups, SIGKILL what outlives ``grace``.

    Returns the pids that were still alive when asked to stop.
    """
    members = {p.pid: p for p in [*process_tree(pids), *processes_in_groups(pgids)]}
    me = os.getpid()
    members.pop(me, None)
    victims = list(members.values())
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(victims, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in victims]


def pid_alive(pid: int) -> bool:
    try:
        zombie: bool = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        return not zombie
    except psutil.Error:
        return False
