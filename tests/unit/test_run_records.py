import json
import os
import subprocess
import sys

import pytest

from recserve_operator.embedded.runs import AlreadyRunning, RunRecord, list_runs

pytestmark = pytest.mark.unit


def test_second_acquire_while_owner_alive_is_refused(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "runs").mkdir()
        (tmp_path / "runs" / "m.json").write_text(json.dumps({"name": "m", "pid": owner.pid}))
        with pytest.raises(AlreadyRunning, match=r"m is already running \(pid \d+"):
            RunRecord(tmp_path, "m").acquire()
    finally:
        owner.kill()
        owner.wait()


def test_stale_record_of_dead_owner_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "m.json").write_text(json.dumps({"name": "m", "pid": dead.pid}))
    record = RunRecord(tmp_path, "m").acquire()
    assert list_runs(tmp_path)["m"]["pid"] == os.getpid()
    record.update(endpoint="http://127.0.0.1:1")
    assert list_runs(tmp_path)["m"]["endpoint"] == "http://127.0.0.1:1"
    record.release()
    assert list_runs(tmp_path) == {}
