"""The build Job's termination message is what the cluster platform parses back into status."""

import json
from types import SimpleNamespace

import pytest

from recserve_operator.api.status import EngineStatus
from recserve_operator.cluster.platform import failed_build
from recserve_operator.commands.build import write_failure, write_result
from recserve_serving.errors import EngineError, QualityGateFailed

pytestmark = pytest.mark.unit


def test_termination_message_round_trips_into_engine_status(tmp_path):
    manifest = SimpleNamespace(
        key="k" * 64,
        backend="onnxruntime",
        precision="int8",
        metrics={"size_bytes": 23_000_000.0, "ndcg@10": 0.41, "ndcg@10_drop": 0.004, "p50_ms": 3.0},
    )
    path = tmp_path / "termination-log"
    write_result(path, SimpleNamespace(path=tmp_path / "engines" / "k", manifest=manifest))
    message = path.read_text()
    assert len(message.encode()) < 4096, "Kubernetes truncates termination messages at 4 KiB"
    result = json.loads(message)
    status = EngineStatus.model_validate(result["engine"])
    assert status.size_bytes == 23_000_000 and status.quality == {"ndcg@10": 0.41, "ndcg@10_drop": 0.004}
    assert result["engineDir"].endswith("/engines/k")


def test_a_build_job_that_fails_its_gate_names_the_gate_and_its_report(tmp_path):
    path = tmp_path / "termination-log"
    table = "metric  reference  engine\n" + "ndcg@10  0.41  0.12\n" * 400
    write_failure(path, QualityGateFailed(f"engine failed its gate\n{table}", report="/cache/reports/k.json"))
    message = path.read_text()
    assert len(message.encode()) < 4096, "Kubernetes truncates termination messages at 4 KiB"
    outcome = failed_build("build-x", message)
    assert outcome.state == "Failed" and outcome.failure == "QualityGateFailed"
    assert outcome.report == "/cache/reports/k.json" and "build-x" in outcome.message


def test_a_build_job_that_fails_otherwise_is_an_engine_failure(tmp_path):
    path = tmp_path / "termination-log"
    write_failure(path, EngineError("engine /cache/k does not match its manifest; rebuild it"))
    outcome = failed_build("build-x", path.read_text())
    assert (outcome.failure, outcome.report) == ("EngineFailed", None)
    plain = failed_build("build-x", "Traceback ...\nOOMKilled")
    assert plain.state == "Failed" and plain.failure == "EngineFailed" and "OOMKilled" in plain.message
