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


def test_bad_data_is_one_line_naming_the_column_and_starts_nothing(tmp_path):
    """spec.data is read and checked before any training, build or process: an interactions
    table that names items the catalog lacks is refused with a count and a sample."""
    catalog = tmp_path / "items.csv"
    catalog.write_text("sku,name\nA-1,Kettle\nA-2,Teapot\n")
    events = tmp_path / "events.csv"
    events.write_text("who,what,when\nu1,A-1,1700000000\nu1,Z-9,1700000100\n")
    data = (
        "  data:\n"
        f"    catalog: {{uri: 'file://{catalog}', idColumn: sku, titleColumn: name, text: '{{name}}'}}\n"
        f"    interactions: {{uri: 'file://{events}', userColumn: who, itemColumn: what, "
        "timestampColumn: when}\n"
    )
    manifest = tmp_path / "bad-data.yaml"
    manifest.write_text(
        EXAMPLE.split("  data:")[0] + data + "  optimization:" + EXAMPLE.split("  optimization:")[1]
    )
    state = tmp_path / "state"
    completed = run_up(manifest, state)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert "Z-9" in lines[0] and "1 of 2" in lines[0], lines[0]
    assert not list((state / "runs").glob("*.json"))
    assert not (state / "ray").exists()
    assert not (state / "engines").exists() and not (state / "retrieval").exists()
