"""The canary state machine, walked step by step through every scenario the operator meets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from recserve_operator.api.status import AnalysisResult, CanaryStatus
from recserve_operator.api.types import CanarySpec
from recserve_operator.planners.canary import CanaryIdentity, Controls, next_canary

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = CanarySpec.model_validate(
    {
        "checkpoint": {"uri": "models:/m/2"},
        "steps": [{"weight": 5, "pause": "1m"}, {"weight": 25, "pause": "1m"}, {"weight": 50, "pause": "1m"}],
        "analysis": {"maxErrorRate": 0.01, "minRequests": 10},
    }
)
CANARY = CanaryIdentity(checkpoint="models:/m/2", version="2", digest="d2")
PASS = AnalysisResult(verdict="Pass", requests=100, message="ok")
FAIL = AnalysisResult(verdict="Fail", requests=100, message="error rate 0.2 > 0.01")
QUIET = AnalysisResult(verdict="Inconclusive", requests=3, message="3 canary requests, needs 10")


@dataclass(frozen=True)
class Tick:
    """One reconcile pass: minutes since start, what analysis said, controls; then expectations."""

    minute: float
    analysis: AnalysisResult | None
    weight: int
    state: str
    event: str | None = None
    controls: Controls = field(default_factory=Controls)
    identity: CanaryIdentity = CANARY


SCENARIOS = {
    "pass": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(0.5, PASS, 5, "Progressing"),
        Tick(1, PASS, 25, "Progressing", "CanaryStepAdvanced"),
        Tick(2, PASS, 50, "Progressing", "CanaryStepAdvanced"),
        Tick(3, PASS, 100, "Promoted", "CanaryPromoted"),
        Tick(4, FAIL, 100, "Promoted"),
    ],
    "fail at step 2": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(1, PASS, 25, "Progressing", "CanaryStepAdvanced"),
        Tick(1.5, FAIL, 0, "RolledBack", "CanaryRolledBack"),
        Tick(5, PASS, 0, "RolledBack"),
    ],
    "no traffic": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(1, QUIET, 5, "Paused", "CanaryPaused"),
        Tick(2, QUIET, 5, "Paused"),
        Tick(3, None, 5, "Paused"),
        Tick(4, PASS, 25, "Progressing", "CanaryStepAdvanced"),
    ],
    "abort": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(1, PASS, 25, "Progressing", "CanaryStepAdvanced"),
        Tick(1.2, PASS, 0, "Aborted", "CanaryAborted", controls=Controls(abort=True)),
        Tick(3, PASS, 0, "Aborted"),
    ],
    "promote": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(0.2, None, 100, "Promoted", "CanaryPromoted", controls=Controls(promote=True)),
    ],
    "new generation in the middle": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(1, PASS, 25, "Progressing", "CanaryStepAdvanced"),
        Tick(1.5, PASS, 5, "Progressing", "CanaryStarted", identity=CanaryIdentity("models:/m/3", "3", "d3")),
        Tick(
            2.5,
            PASS,
            25,
            "Progressing",
            "CanaryStepAdvanced",
            identity=CanaryIdentity("models:/m/3", "3", "d3"),
        ),
    ],
    "alias moved to a new digest restarts": [
        Tick(0, None, 5, "Progressing", "CanaryStarted"),
        Tick(1, PASS, 25, "Progressing", "CanaryStepAdvanced"),
        Tick(
            1.1, PASS, 5, "Progressing", "CanaryStarted", identity=CanaryIdentity("models:/m/2", "2", "d2b")
        ),
    ],
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_canary_walk(name):
    status: CanaryStatus | None = None
    for tick in SCENARIOS[name]:
        now = T0 + timedelta(minutes=tick.minute)
        decision = next_canary(SPEC, tick.identity, status, tick.analysis, tick.controls, now)
        assert decision.status is not None
        assert (decision.weight, decision.status.state) == (tick.weight, tick.state), f"{name} at {tick}"
        assert (decision.event.reason if decision.event else None) == tick.event, f"{name} at {tick}"
        status = decision.status


def test_no_canary_in_spec_means_no_canary():
    assert next_canary(None, None, None, PASS, Controls(), T0).status is None


def test_restart_resumes_from_status_without_resetting_weight():
    status = None
    for minute, analysis in ((0, None), (1, PASS)):
        status = next_canary(
            SPEC, CANARY, status, analysis, Controls(), T0 + timedelta(minutes=minute)
        ).status
    assert status is not None and status.weight == 25
    revived = CanaryStatus.model_validate(status.to_dict())
    decision = next_canary(SPEC, CANARY, revived, PASS, Controls(), T0 + timedelta(minutes=1, seconds=10))
    assert decision.weight == 25 and decision.event is None
    assert decision.requeue_after == pytest.approx(50)


def test_missing_metrics_never_roll_back():
    status = next_canary(SPEC, CANARY, None, None, Controls(), T0).status
    for minute in range(1, 30):
        status = next_canary(SPEC, CANARY, status, None, Controls(), T0 + timedelta(minutes=minute)).status
        assert status is not None and status.weight == 5 and status.state in {"Progressing", "Paused"}


def test_same_checkpoint_with_a_new_recipe_is_a_new_canary():
    from recserve_operator.api.status import EngineStatus

    status = next_canary(SPEC, CANARY, None, None, Controls(), T0).status
    assert status is not None
    status = status.model_copy(
        update={"engine": EngineStatus(key="k-int8", backend="onnxruntime", precision="int8")}
    )
    status = next_canary(SPEC, CANARY, status, PASS, Controls(), T0 + timedelta(minutes=1)).status
    assert status is not None and status.weight == 25
    fp32 = CanaryIdentity(CANARY.checkpoint, CANARY.version, CANARY.digest, engine_key="k-fp32")
    decision = next_canary(SPEC, fp32, status, PASS, Controls(), T0 + timedelta(minutes=1, seconds=5))
    assert decision.weight == 5 and decision.event is not None and decision.event.reason == "CanaryStarted"
