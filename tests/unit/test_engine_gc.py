"""Engine cache garbage collection: referenced engines stay, recently used ones stay, the rest go."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recserve_serving.engine.gc import collect_garbage, marker, touch_used
from recserve_serving.engine.manifest import MANIFEST_FILE

pytestmark = pytest.mark.unit
DAY = 24 * 3600


def engine(root: Path, key_char: str, age_days: float) -> Path:
    path = root / (key_char * 64)
    path.mkdir(parents=True)
    (path / MANIFEST_FILE).write_text("{}")
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path


def test_unreferenced_engines_unused_for_the_ttl_are_removed_and_nothing_else(tmp_path: Path) -> None:
    old = engine(tmp_path, "a", 10)
    in_service = engine(tmp_path, "b", 30)
    recent = engine(tmp_path, "c", 1)
    loaded_lately = engine(tmp_path, "d", 20)
    touch_used(loaded_lately)
    building = tmp_path / ".building-eeee-123-x"
    building.mkdir()
    unfinished = tmp_path / ("f" * 64)
    unfinished.mkdir()
    (unfinished / "model.onnx").write_text("half")
    os.utime(unfinished, (time.time() - 30 * DAY,) * 2)

    dry = collect_garbage(tmp_path, ttl_seconds=7 * DAY, keep={in_service.name}, dry_run=True)
    assert dry.removed == [old.name] and old.is_dir()

    done = collect_garbage(tmp_path, ttl_seconds=7 * DAY, keep={in_service.name})
    assert done.removed == [old.name]
    assert done.kept_referenced == [in_service.name]
    assert sorted(done.kept_recent) == sorted([recent.name, loaded_lately.name])
    assert not old.exists() and not marker(old).exists()
    assert in_service.is_dir() and recent.is_dir() and loaded_lately.is_dir()
    assert building.is_dir() and unfinished.is_dir(), "only finished engines are collected"
    assert not list(tmp_path.glob(".deleting-*"))


def gc_cli(ttl: str, cache: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "recserve_operator.cli",
        "engines",
        "gc",
        "--ttl",
        ttl,
        "--cache",
        str(cache),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_refuses_a_bad_ttl_with_one_line(tmp_path: Path) -> None:
    proc = gc_cli("a week", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --ttl: not a duration: 'a week'; write it like 12h or 168h"
    ]


def test_cli_collects(tmp_path: Path) -> None:
    old = engine(tmp_path, "a", 10)
    proc = gc_cli("168h", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"deleted {old.name}" in proc.stdout and not old.exists()


def test_a_build_scratch_directory_leaves_no_use_marker(tmp_path) -> None:
    from recserve_serving.engine.gc import marker, touch_used

    scratch = tmp_path / ".building-abc-123-xyz"
    scratch.mkdir()
    touch_used(scratch)
    assert not marker(scratch).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [scratch.name]


def test_gc_never_deletes_an_engine_a_running_recserve_up_serves(tmp_path: Path) -> None:
    from recserve_operator.embedded.runs import RunRecord

    state = tmp_path / "state"
    served = engine(state / "engines", "b", 30)
    canary = engine(state / "engines", "c", 30)
    unused = engine(state / "engines", "d", 30)
    record = RunRecord(state, "ranker").acquire()  # this test process plays the running `up`
    status = {"stable": {"engine": {"key": served.name}}, "canary": {"engine": {"key": canary.name}}}
    record.update(phase="Ready", status=status)
    dead = RunRecord(state, "stopped")
    dead.data["pid"] = 2**22 + 12345  # a crashed `up`: its engines are ordinary cache entries
    dead.acquire()
    dead.update(status={"stable": {"engine": {"key": unused.name}}})
    command = [sys.executable, "-m", "recserve_operator.cli", "engines", "gc", "--ttl", "168h"]
    proc = subprocess.run([*command, "--state", str(state)], capture_output=True, text=True, timeout=120)
    record.release()
    assert proc.returncode == 0, proc.stderr
    assert served.exists() and canary.exists()
    assert not unused.exists() and f"deleted {unused.name}" in proc.stdout
