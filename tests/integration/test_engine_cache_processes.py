"""The cache under real processes: a killed build and a concurrent lock holder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recserve_serving.engine import cache

pytestmark = pytest.mark.integration


def test_a_killed_build_leaves_nothing_finished_and_is_swept(tmp_path) -> None:
    key = "e" * 64
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from recserve_serving.engine import cache\n"
        f"t = cache.new_temp(Path({str(tmp_path)!r}), {key!r})\n"
        "(t / 'model.onnx').write_bytes(b'partial')\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == 9
    leftovers = list(tmp_path.glob(f"{cache.BUILDING_PREFIX}*"))
    assert len(leftovers) == 1
    assert not cache.finished(tmp_path / key)
    mine = cache.new_temp(tmp_path, key)
    assert cache.sweep(tmp_path) == leftovers
    assert mine.exists()


def test_key_lock_serialises_holders(tmp_path) -> None:
    key = "d" * 64
    with cache.key_lock(tmp_path, key):
        script = (
            "import fcntl, sys\n"
            f"h = open({str(tmp_path / f'.{key}.lock')!r}, 'w')\n"
            "try:\n    fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 3
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 0
    assert os.path.exists(tmp_path / f".{key}.lock")
