"""``bench/gpu.py --smoke`` runs on a CPU-only machine: it says so, runs the CPU reference and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_gpu_bench_smoke_on_cpu() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "serving"),
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",  # the CPU path, even where a GPU exists
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--seconds", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "CUDA: not available" in out
    assert "TensorRT: " in out
    rows = {
        line.split()[0] + " " + line.split()[1]: line.split()
        for line in out.splitlines()
        if line.startswith("torch ")
    }
    assert set(rows) == {"torch fp32", "torch bf16"}
    assert rows["torch fp32"][4] == "ref" and rows["torch bf16"][4] == "ok", out
