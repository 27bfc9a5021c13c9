"""``recserve retrain``: what a CronJob runs. Bad input is one ``error:`` line and exit 2; a run
registers the next version and reports it; too little data is exit 0 with the reason; a run past
its time budget registers nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from recserve_operator.cli import main
from recserve_serving.privacy import Pseudonymizer
from recserve_serving.registry import DATA_CUTOFF_TAG, Registry
from recserve_serving.retrain import RetrainInputs, RetrainOptions, retrain
from recserve_serving.train import TrainingBudgetExceeded
from recserve_serving.trainingspec import TrainingSpec

pytestmark = pytest.mark.integration

NAME = "tiny-ranker"
KEY = "cli-test-key-0123456789abcdef0123"


def _model(uri: str = f"models:/{NAME}@champion", **training: object) -> dict[str, object]:
    return {
        "apiVersion": "recserve.dev/v1alpha1",
        "kind": "RecommenderModel",
        "metadata": {"name": "recs"},
        "spec": {
            "checkpoint": {"uri": uri},
            "training": {"minNewInteractions": 50, "budget": {"steps": 2, "batchSize": 16}, **training},
        },
    }


@pytest.fixture(scope="module")
def cutoff() -> int:
    from recserve_serving.example_data import EXAMPLE_DATA
    from recserve_serving.tabular import load_data

    return int(load_data(EXAMPLE_DATA).interactions.timestamp.quantile(0.995))


@pytest.fixture
def registered(state: Path, tmp_path: Path, cutoff: int) -> Registry:
    from recserve_serving.model import new_ranker, save_checkpoint

    out = save_checkpoint(new_ranker(max_len=64, layers=2, shape="prefix"), tmp_path / "parent")
    registry = Registry(state)
    registry.register(NAME, out, {}, tags={DATA_CUTOFF_TAG: str(cutoff)})
    return registry


def _run(state: Path, *args: str) -> int:
    return main(["retrain", "recs", "--state", str(state), *args])


def test_bad_input_is_one_error_line_and_exit_2(state: Path, tmp_path: Path, capsys) -> None:
    pinned = json.dumps(_model(f"models:/{NAME}/1"))
    assert _run(state, "--model-json", pinned) == 2
    assert "needs a registry alias, models:/REGISTERED@ALIAS" in capsys.readouterr().err
    manifest = tmp_path / "model.yaml"
    manifest.write_text(yaml.safe_dump(_model()))
    assert main(["retrain", "other", "--state", str(state), "-f", str(manifest)]) == 2
    assert "holds no RecommenderModel named 'other' (it holds: recs)" in capsys.readouterr().err
    assert _run(state, "-f", str(manifest)) == 2
    assert f"holds no model '{NAME}'" in capsys.readouterr().err
    assert _run(state, "--model-json", "{not json") == 2
    assert capsys.readouterr().err.startswith("error: --model-json is not JSON")


def test_a_cli_run_registers_and_reports(registered: Registry, tmp_path: Path, capsys) -> None:
    state = registered.state
    key = tmp_path / "key"
    key.write_text(KEY)
    report = tmp_path / "out" / "report.json"
    args = ["--model-json", json.dumps(_model(maxDrop=1.0)), "--key-file", str(key), "--report", str(report)]
    assert _run(state, *args, "--eval-users", "10") == 0
    out = capsys.readouterr().out
    assert f"registered models:/{NAME}/2 from version 1: promoted-to-candidate" in out
    written = json.loads(report.read_text())
    assert written["verdict"] == "promoted-to-candidate" and written["counts"]["new"] >= 50
    assert registered.resolve(f"models:/{NAME}@candidate").version == "2"
    # The next run starts from the champion's cutoff again, but a huge minimum stops it first.
    stopped = ["--model-json", json.dumps(_model(minNewInteractions=10**6)), "--key-file", str(key)]
    assert _run(state, *stopped) == 0
    assert capsys.readouterr().out.startswith("nothing to retrain: ")
    assert registered.latest_version(NAME) == "2"


def test_a_run_past_its_budget_registers_nothing(registered: Registry) -> None:
    from recserve_serving.example_data import EXAMPLE_DATA
    from recserve_serving.tabular import load_data

    spec = TrainingSpec(min_new_interactions=50)
    spent = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_minutes": 0})})
    inputs = RetrainInputs(load_data(EXAMPLE_DATA), [], frozenset(), Pseudonymizer(KEY.encode()).user)
    started = time.monotonic()
    with pytest.raises(TrainingBudgetExceeded, match="time budget ran out"):
        retrain(registered, NAME, spent, inputs, RetrainOptions(eval_users=5, eval_candidates=10))
    assert time.monotonic() - started < 60
    assert registered.latest_version(NAME) == "1"
    assert not [p for p in registered.state.iterdir() if p.name.startswith("recserve-retrain-")]
