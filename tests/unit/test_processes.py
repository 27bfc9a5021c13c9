import subprocess
import sys

import pytest

from recserve_operator.embedded.processes import free_port, pid_alive, process_tree, stop_tree

pytestmark = pytest.mark.unit

# A parent that starts a child which ignores SIGTERM: stop_tree must still leave nothing.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(120)"],
    stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(120)
"""


def test_stop_tree_kills_descendants_even_when_they_ignore_sigterm():
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert {p.pid for p in process_tree([parent.pid])} == {parent.pid, child_pid}
    stop_tree([parent.pid], grace=1.0)
    parent.wait(timeout=10)
    assert not pid_alive(parent.pid)
    assert not pid_alive(child_pid)


def test_free_port_is_bindable_on_loopback():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
