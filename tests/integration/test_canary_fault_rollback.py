"""On the embedded default, a canary that fails a fifth of its requests is rolled back within its
first step, and the users on stable never see an error.

The failures are real 503s from the canary's own replicas (``spec.rollout.canary.faultInjection``,
the chaos drill), so they travel the path a regression's would: the version header on every
answer, the per-version error count, the analysis window, the rollback.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any

import pytest
import yaml
from up_process import up_example

from recserve_operator.loadgen import BackgroundTraffic

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.scenario, pytest.mark.long]

STABLE_LABEL = "movielens-ranker/1"
ABORT_PERCENT = 20


def with_failing_canary(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["rollout"] = {
        "canary": {
            "checkpoint": {"uri": "models:/movielens-ranker/1"},
            "optimization": {**doc["spec"]["optimization"], "precision": "fp32"},
            "steps": [{"weight": 30, "pause": "20s"}, {"weight": 60, "pause": "20s"}],
            "analysis": {"maxErrorRate": 0.05, "maxScoreShift": 0.6, "minRequests": 20},
            "faultInjection": {"abortPercent": ABORT_PERCENT},
            # A canary that cannot be judged (never scheduled, no traffic) fails here in minutes.
            "progressDeadline": "4m",
        }
    }
    return doc


def test_a_canary_failing_a_fifth_of_requests_rolls_back_within_one_step(test_state, tmp_path) -> None:
    up, stable, manifest = up_example(test_state, tmp_path)
    traffic: BackgroundTraffic | None = None
    try:
        up.wait_ready()
        traffic = BackgroundTraffic(up.endpoint, concurrency=4, round_requests=80, round_seconds=8)
        manifest.write_text(yaml.safe_dump(with_failing_canary(stable)))
        up.wait_printed(r"CanaryRolledBack", 900)
        rounds = traffic.finish()
        traffic = None
    finally:
        if traffic is not None:
            traffic.finish()
        up.down()
    assert up.survivors() == []

    rolled_back = next(line for line in up.lines if "CanaryRolledBack" in line)
    assert "error rate" in rolled_back, rolled_back
    weights = [int(m.group(1)) for line in up.lines for m in [re.search(r"at (\d+)% \(step", line)] if m]
    assert 60 not in weights, f"the canary reached its second step: {weights}"

    answered: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for round_ in rounds:
        answered.update(round_.versions)
        failed.update(round_.version_errors)
    canaries = [label for label in answered if label.startswith(f"{STABLE_LABEL}+")]
    assert len(canaries) == 1, answered
    canary = canaries[0]
    assert answered[STABLE_LABEL] > 100 and failed[STABLE_LABEL] == 0, (answered, failed)
    assert sum(len(r.failures) for r in rounds) == 0, [r.failures[:3] for r in rounds]
    assert set(failed) <= {canary}, f"every 5xx must name the canary: {failed}"
    share = failed[canary] / answered[canary]
    # Each replica fails exactly every fifth call; two replicas' remainders move the share a little.
    assert 0.1 <= share <= 0.3, f"{failed[canary]} of {answered[canary]} canary answers failed"
    print(
        f"stable: {answered[STABLE_LABEL]} answers, 0 failed; canary {canary}: "
        f"{failed[canary]} of {answered[canary]} failed ({share:.0%}, drill {ABORT_PERCENT}%)"
    )
