"""The canary demo on the embedded default: promotion under traffic, then an automatic rollback.

One `recserve up` serves the MovieLens ranker; its manifest names a canary (the same
checkpoint built as an fp32 engine against the int8 stable), which steps 5% → 25% → 50%
→ 100% under generated traffic with no failed request. Then the manifest is edited, as a
GitOps commit would, to a deliberately bad canary (a ranker trained for one step, whose
scores are nothing like stable's), and analysis rolls it back on its own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from up_process import Up

from recserve_operator.embedded.processes import free_port
from recserve_operator.loadgen import BackgroundTraffic

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario, pytest.mark.long]

REPO = Path(__file__).resolve().parents[2]


def manifest(canary_uri: str, canary_optimization: dict | None) -> dict:
    spec = yaml.safe_load((REPO / "manifests/examples/movielens-ranker.yaml").read_text())
    canary: dict = {
        "checkpoint": {"uri": canary_uri},
        "steps": [
            {"weight": 5, "pause": "15s"},
            {"weight": 25, "pause": "15s"},
            {"weight": 50, "pause": "15s"},
        ],
        "stickyBy": "user_id",
        "analysis": {"maxErrorRate": 0.01, "maxScoreShift": 0.25, "minRequests": 5},
    }
    if canary_optimization is not None:
        canary["optimization"] = canary_optimization
    spec["spec"]["rollout"] = {"canary": canary}
    # Twenty candidates per request keep a loaded 2-core machine at several requests a second,
    # so a 5% step still sees its minimum of canary requests within minutes.
    spec["spec"]["serving"]["retrieval"] = {"candidates": 20, "defaultK": 10, "maxK": 20}
    return spec


@pytest.fixture(scope="module")
def env(test_state, tmp_path_factory):
    return dict(os.environ, RECSERVE_HOME=str(test_state), RECSERVE_RAY_TMP=str(tmp_path_factory.mktemp("r")))


def test_canary_promotes_under_traffic_then_a_bad_canary_rolls_back(tmp_path, env, bad_model):
    path = tmp_path / "model.yaml"
    fp32 = {"backend": "onnxruntime", "precision": "fp32", "maxBatchSize": 64, "maxSequenceLength": 128}
    path.write_text(yaml.safe_dump(manifest("models:/movielens-ranker/1", fp32)))
    port = free_port()
    up = Up(path, env, port)
    traffic: BackgroundTraffic | None = None
    try:
        up.wait_ready()
        traffic = BackgroundTraffic(f"http://127.0.0.1:{port}")
        up.wait_printed(r"CanaryPromoted", 900)
        steps = [int(m.group(1)) for line in up.lines for m in [re.search(r"at (\d+)% \(step", line)] if m]
        assert steps[:3] == [5, 25, 50], up.lines

        path.write_text(yaml.safe_dump(manifest(bad_model, None)))
        up.wait_printed(r"CanaryRolledBack", 600)
        rounds = traffic.finish()
        traffic = None
        served = sum(r.requests for r in rounds)
        assert served > 100
        assert sum(r.errors for r in rounds) == 0, [r.failures[:3] for r in rounds]
        assert any("score shift" in line for line in up.lines if "CanaryRolledBack" in line)
    finally:
        if traffic is not None:
            traffic.finish()
        up.down()
    assert [p.pid for p in up.tree if p.is_running()] == []
