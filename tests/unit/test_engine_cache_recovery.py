"""Engine cache recovery: stale build directories of other pods, and corrupt engines."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from recserve_serving.engine import cache
from recserve_serving.engine.digests import file_digests
from recserve_serving.engine.manifest import MANIFEST_FILE, CheckpointRef, EngineManifest
from recserve_serving.engine.reuse import intact
from recserve_serving.recipe import OptimizationRecipe

pytestmark = pytest.mark.unit
KEY = "c" * 64
HOUR = 3600.0


def building(root: Path, host: str, pid: int, incarnation: str, age: float) -> Path:
    """A ``.building-`` directory as another builder would have left it."""
    path = root / f"{cache.BUILDING_PREFIX}{KEY[:16]}-{host}-{pid}-{incarnation}-x1y2"
    path.mkdir(parents=True)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_a_killed_builder_that_was_pid_1_in_another_pod_is_swept_after_the_age_limit(tmp_path) -> None:
    # Every builder pod's process is pid 1, which is alive in any pod that looks.
    fresh = building(tmp_path, "recserve-build-7f9c-abcde", 1, "0a1b2c3d", age=60)
    stale = building(tmp_path, "recserve-build-7f9c-fghij", 1, "4e5f6a7b", age=cache.STALE_BUILD_SECONDS + 60)
    assert cache.sweep(tmp_path) == [stale]
    assert fresh.exists() and not stale.exists()


def test_a_build_dir_of_an_earlier_process_with_this_pid_on_this_host_is_swept_at_once(tmp_path) -> None:
    earlier = building(tmp_path, socket.gethostname(), os.getpid(), "00000000", age=5)
    mine = cache.new_temp(tmp_path, KEY)
    assert cache.sweep(tmp_path) == [earlier]
    assert mine.exists()


def test_a_build_dir_of_a_dead_pid_on_this_host_is_swept_at_once_and_a_live_one_kept(tmp_path) -> None:
    dead_pid = 2**22 + 12345  # above Linux's pid_max: never a running process
    dead = building(tmp_path, socket.gethostname(), dead_pid, "0a1b2c3d", age=5)
    alive = building(tmp_path, socket.gethostname(), os.getppid(), "0a1b2c3d", age=5)
    assert cache.sweep(tmp_path) == [dead]
    assert alive.exists()


def test_a_build_dir_without_an_owner_in_its_name_is_swept_by_age_only(tmp_path) -> None:
    young = tmp_path / f"{cache.BUILDING_PREFIX}{KEY[:16]}-1-abc"
    young.mkdir()
    old = tmp_path / f"{cache.BUILDING_PREFIX}{KEY[:16]}-2-def"
    old.mkdir()
    then = time.time() - 3 * HOUR
    os.utime(old, (then, then))
    assert cache.sweep(tmp_path) == [old]


def engine_dir(root: Path) -> Path:
    path = root / KEY
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"weights")
    (path / "tokenizer.json").write_text("{}")
    EngineManifest(
        key=KEY,
        checkpoint=CheckpointRef(uri="models:/m/1", digest="sha256:" + "a" * 64, name="m", version="1"),
        recipe=OptimizationRecipe(backend="onnxruntime"),
        backend="onnxruntime",
        backend_version="onnxruntime-1",
        precision="int8",
        hardware="cpu-x86_64-baseline",
        max_sequence_length=64,
        model_file="model.onnx",
        files=file_digests(path),
    ).write(path)
    return path


def test_an_intact_cached_engine_is_reused(tmp_path) -> None:
    final = engine_dir(tmp_path)
    manifest = intact(final, quarantine=True)
    assert manifest is not None and manifest.key == KEY and final.is_dir()


def test_a_corrupt_cached_engine_is_quarantined_so_the_next_build_rebuilds_it(tmp_path) -> None:
    final = engine_dir(tmp_path)
    (final / "model.onnx").write_bytes(b"flipped bits")
    assert intact(final, quarantine=False) is None
    assert final.is_dir()  # without the key's lock it is only refused, never moved
    assert intact(final, quarantine=True) is None
    assert not final.exists() and not cache.finished(final)  # the key is free to build again
    (moved,) = tmp_path.glob(f"{cache.QUARANTINE_PREFIX}{KEY}-*")
    assert (moved / "model.onnx").read_bytes() == b"flipped bits"
    assert (moved / MANIFEST_FILE).is_file()  # kept whole for whoever investigates
