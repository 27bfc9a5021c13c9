"""The build Job's termination message is what the cluster platform parses back into status."""

import json
from types import SimpleNamespace

import pytest

from recserve_operator.api.status import EngineStatus
from recserve_operator.commands.build import write_result

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
