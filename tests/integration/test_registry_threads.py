"""The operator's first registry calls arrive from many worker threads at once (kopf runs sync
handlers in a pool; 200 models applied together reconcile together). MLflow's package imports
itself in cycles, and threads entering it through different modules used to leave it
half-initialised for good: every later reconcile failed with "partially initialized module
'mlflow'". A fresh interpreter is the only place the first import happens, so the calls run in one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FIRST_CALLS = """
import json, sys, threading
from pathlib import Path
from recserve_operator.cluster.checkpoints import describe, move_alias
from recserve_serving.registry import Registry

state, report = Path(sys.argv[1]), Path(sys.argv[2])
uri = f"sqlite:///{state / 'mlflow.db'}"
calls = [
    lambda: describe("models:/absent@champion", uri),
    lambda: move_alias(uri, "absent", "champion", "1"),
    lambda: Registry(state / "embedded"),
]
outcomes = []
start = threading.Barrier(12)

def call(index):
    start.wait()
    try:
        calls[index % len(calls)]()
        outcomes.append("ok")
    except Exception as error:
        outcomes.append(f"{type(error).__name__}: {error}")

threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
report.write_text(json.dumps(outcomes))
"""


def test_first_registry_calls_from_many_threads_at_once_leave_mlflow_whole(tmp_path: Path) -> None:
    report = tmp_path / "outcomes.json"
    done = subprocess.run(
        [sys.executable, "-c", FIRST_CALLS, str(tmp_path), str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(report.read_text())
    assert len(outcomes) == 12
    broken = [o for o in outcomes if "ImportError" in o or "AttributeError" in o or "Deadlock" in o]
    assert not broken, broken
    kinds = sorted({o.split(":")[0] for o in outcomes})
    assert kinds == ["CheckpointError", "ok"], outcomes
