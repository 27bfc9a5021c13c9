"""Each bad input to `recserve up` prints one line, exits 2, starts nothing and leaves no lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (REPO / "manifests/examples/movielens-ranker.yaml").read_text()


def run_up(manifest: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RECSERVE_HOME=str(state))
    return subprocess.run(
        [sys.executable, "-m", "recserve_operator.cli", "up", str(manifest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("missing", None, "no such file"),
        ("unparsable", "apiVersion: recserve.dev/v1alpha1\nkind: [unclosed\n", "YAML"),
        (
            "invalid",
            EXAMPLE.replace("maxReplicas: 2", "maxReplicas: 0"),
            "spec.serving.autoscaling.maxReplicas",
        ),
        (
            "unknown-checkpoint",
            EXAMPLE.replace("models:/movielens-ranker/1", "models:/no-such-model/3"),
            "no-such-model",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, name, text, says):
    manifest = tmp_path / f"{name}.yaml"
    if text is not None:
        manifest.write_text(text)
    state = tmp_path / "state"
    completed = run_up(manifest, state)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert says.lower() in lines[0].lower()
    assert not list((state / "runs").glob("*.json"))
    assert not (state / "ray").exists()
