"""``recserve autoscale`` end to end in-process on small traces: files in, figures and patches out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from autoscale_fixtures import profile_doc

from recserve_operator.cli import main
from recserve_operator.validate import load_model

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    manifest = tmp_path / "model.yaml"
    manifest.write_text(EXAMPLE.read_text().replace("maxReplicas: 2", "maxReplicas: 4"))
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(profile_doc()))
    return {"manifest": manifest, "profile": profile, "state": tmp_path / "state", "dir": tmp_path}


def autoscale(*args: str | Path) -> int:
    return main(["autoscale", *(str(a) for a in args)])


def test_trace_simulate_recommend_apply(files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    d = files["dir"]
    assert (
        autoscale("trace", "flash-spike", "--duration", 180, "--low", 2, "--high", 12, "--out", d / "t.csv")
        == 0
    )
    common = [
        "--spec",
        files["manifest"],
        "--profile",
        files["profile"],
        "--trace",
        d / "t.csv",
        "--state",
        files["state"],
    ]
    code = autoscale(
        "simulate",
        *common,
        "--slo-p99",
        "2s",
        "--price-per-replica-hour",
        2,
        "--png",
        d / "t.png",
        "--json",
        d / "t.json",
    )
    out = capsys.readouterr()
    assert code == 0
    assert "replica-seconds" in out.out and "SLO p99 2000 ms" in out.out
    assert "assuming the profile's" in out.err  # no status, no running `recserve up`: engine unknown
    assert (d / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads((d / "t.json").read_text())
    assert shown["figures"]["requests"] == sum(shown["timeline"]["arrivals"])
    assert shown["figures"]["cost"] == pytest.approx(shown["figures"]["replicaSeconds"] / 3600 * 2)

    code = autoscale("recommend", "--slo-p99", "2s", *common, "--apply", "--patch", d / "patch.yaml")
    out = capsys.readouterr()
    assert code == 0, out.out
    assert "cheapest setting found that meets p99 2000 ms" in out.out
    assert "spec patch" in out.out and f"applied to {files['manifest']}" in out.out
    applied = load_model(files["manifest"]).spec.serving.autoscaling
    patch = yaml.safe_load((d / "patch.yaml").read_text())
    for key, value in patch["spec"]["serving"]["autoscaling"].items():
        assert applied.model_dump(by_alias=True)[key] == value
    assert "# two cores: at most two one-core replicas" in files["manifest"].read_text()


def test_bad_input_is_one_error_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    d = files["dir"]
    (d / "bad.csv").write_text("timestamp\n0.5\n2\n1\n")
    common = ["--spec", files["manifest"], "--profile", files["profile"], "--state", files["state"]]
    assert autoscale("simulate", *common, "--trace", d / "bad.csv") == 2
    assert f"error: {d / 'bad.csv'}:4: timestamp 1 is before the previous line's 2" in capsys.readouterr().err

    (d / "ok.csv").write_text("time,rate\n0,1\n60,1\n")
    assert autoscale("recommend", "--slo-p99", "100ms", *common, "--trace", d / "ok.csv") == 2
    assert "a p99 of 100 ms is impossible" in capsys.readouterr().err


def test_a_profile_of_another_engine_than_the_running_model_is_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
):
    """The spec's engine is known from a live `recserve up` of the model (its run record)."""
    runs = files["state"] / "runs"
    runs.mkdir(parents=True)
    record = {
        "name": "movielens-ranker",
        "pid": os.getpid(),
        "status": {"stable": {"engine": {"key": "b" * 64}}},
    }
    (runs / "movielens-ranker.json").write_text(json.dumps(record))
    d = files["dir"]
    (d / "ok.csv").write_text("time,rate\n0,1\n60,1\n")
    args = ["--spec", files["manifest"], "--profile", files["profile"], "--trace", d / "ok.csv"]
    assert autoscale("simulate", *args, "--state", files["state"]) == 2
    err = capsys.readouterr().err
    assert "measured engine aaaaaaaaaaaa but the spec serves engine bbbbbbbbbbbb" in err
    assert "recserve autoscale profile movielens-ranker" in err
