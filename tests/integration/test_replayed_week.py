"""The replayed week, end to end (bench/replayed_week.py): a stale model, a window of ratings sent
as feedback, a retrain that moves @candidate, and the running operator canarying and promoting it
under traffic with no failed request."""

from __future__ import annotations

import os

import pytest

from bench.replayed_week import run

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario, pytest.mark.long]


def test_a_retrained_version_reaches_traffic_through_a_canary_with_no_failed_request(tmp_path):
    env = dict(os.environ, RECSERVE_RAY_TMP=str(tmp_path / "ray"))
    result = run(tmp_path / "week", env, train_steps=60, retrain_steps=60)
    retrain = result.retrain
    assert retrain["verdict"] == "promoted-to-candidate", retrain["reason"]
    assert retrain["new_metrics"]["ndcg@10"] >= retrain["parent_metrics"]["ndcg@10"] - retrain["max_drop"]
    assert result.replayed_events > 5000 and result.champion_moved_to == retrain["new_version"]
    assert any("CanaryStarted" in line for line in result.canary_steps), result.canary_steps
    assert result.requests_during_rollout > 50 and result.failed_requests == 0
