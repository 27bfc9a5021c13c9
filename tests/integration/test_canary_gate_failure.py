"""On the embedded default, a canary whose engine fails its quality gate never touches stable.

`recserve up` serves the example; a GitOps-style edit adds a canary whose recipe cannot pass its
gate (a p99 limit of 0.001 ms). The canary must be marked failed with its gate report while
stable answers every request, and a fixed manifest must then start a new canary, all in the same
running `up`.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import yaml
from up_process import up_example

from recserve_operator.loadgen import BackgroundTraffic

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario, pytest.mark.long]


def with_canary(doc: dict[str, Any], gate: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    optimization = {**doc["spec"]["optimization"], "precision": "fp32", "qualityGate": gate}
    doc["spec"]["rollout"] = {
        "canary": {
            "checkpoint": {"uri": "models:/movielens-ranker/1"},
            "optimization": optimization,
            "steps": [{"weight": 50, "pause": "10m"}],
            "analysis": {"maxErrorRate": 0.01, "minRequests": 5},
        }
    }
    return doc


def test_a_canary_that_fails_its_quality_gate_leaves_stable_serving(test_state, tmp_path) -> None:
    up, stable, manifest = up_example(test_state, tmp_path)
    endpoint = up.endpoint
    traffic: BackgroundTraffic | None = None
    try:
        up.wait_ready()
        traffic = BackgroundTraffic(endpoint, concurrency=2, round_requests=40, round_seconds=5)

        manifest.write_text(yaml.safe_dump(with_canary(stable, {"maxDrop": 1.0, "maxP99LatencyMs": 0.001})))
        up.wait_printed(r"CanaryQualityGateFailed: .*failed its quality gate; stable keeps serving", 900)
        failure = next(line for line in up.lines if "CanaryQualityGateFailed" in line)
        assert "(report: " in failure and ".json" in failure, failure
        up.wait_printed(r"phase Degraded", 120)
        assert httpx.get(f"{endpoint}/v2/health/ready", timeout=10).status_code == 200

        manifest.write_text(yaml.safe_dump(with_canary(stable, {"maxDrop": 1.0})))
        up.wait_printed(r"CanaryStarted", 900)
        assert httpx.get(f"{endpoint}/v2/health/ready", timeout=10).status_code == 200

        rounds = traffic.finish()
        traffic = None
        served = sum(r.requests for r in rounds)
        failed = sum(r.errors for r in rounds)
        print(f"\ncanary gate failure on recserve up: {served} requests, {failed} failed")
        assert served > 20 and failed == 0, [r.failures[:3] for r in rounds]
    finally:
        if traffic is not None:
            traffic.finish()
        up.down()
    assert up.survivors() == []
