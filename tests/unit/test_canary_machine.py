"""The canary state machine, walked step by step through every scenario the operator meets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from recserve_operator.api.status import AnalysisResult, CanaryStatus, EngineStatus
from recserve_operator.api.types import CanarySpec
from recserve_operator.planners.canary import (
    CanaryIdentity,
    Controls,
    EngineFailure,
    engine_failed,
    next_canary,
    restart_window,
)

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


def test_missing_metrics_never_roll_back_before_the_progress_deadline():
    status = next_canary(SPEC, CANARY, None, None, Controls(), T0).status
    for minute in range(1, 11):  # the 1m pause, then 10m (the default deadline) waiting for a verdict
        status = next_canary(SPEC, CANARY, status, None, Controls(), T0 + timedelta(minutes=minute)).status
        assert status is not None and status.weight == 5 and status.state in {"Progressing", "Paused"}


def test_a_canary_that_never_gets_traffic_is_rolled_back_at_its_progress_deadline():
    spec = SPEC.model_copy(update={"progress_deadline": "5m"})
    status = next_canary(spec, CANARY, None, None, Controls(), T0).status
    held = next_canary(spec, CANARY, status, QUIET, Controls(), T0 + timedelta(minutes=5, seconds=59))
    assert held.status is not None and held.status.state == "Paused"
    assert held.requeue_after is not None and held.requeue_after <= 30
    status = held.status
    decision = next_canary(spec, CANARY, status, QUIET, Controls(), T0 + timedelta(minutes=6))
    assert decision.status is not None and (decision.weight, decision.status.state) == (0, "RolledBack")
    assert decision.status.reason == "ProgressDeadlineExceeded"
    assert decision.event is not None and decision.event.reason == "CanaryRolledBack"
    assert "progressDeadline 5m" in decision.event.message and "3 canary requests" in decision.event.message
    later = next_canary(spec, CANARY, decision.status, PASS, Controls(), T0 + timedelta(minutes=30))
    assert later.status == decision.status and later.event is None


def test_the_progress_deadline_counts_from_the_current_steps_pause():
    spec = SPEC.model_copy(update={"progress_deadline": "5m"})
    status = next_canary(spec, CANARY, None, None, Controls(), T0).status
    status = next_canary(spec, CANARY, status, QUIET, Controls(), T0 + timedelta(minutes=5)).status
    status = next_canary(spec, CANARY, status, PASS, Controls(), T0 + timedelta(minutes=5, seconds=30)).status
    assert status is not None and (status.weight, status.state) == (25, "Progressing")
    decision = next_canary(spec, CANARY, status, QUIET, Controls(), T0 + timedelta(minutes=11))
    assert decision.status is not None and decision.status.state == "Paused"


def test_a_decision_holds_while_the_engine_is_being_rebuilt():
    status = next_canary(SPEC, CANARY, None, None, Controls(), T0).status
    assert status is not None
    built = status.model_copy(
        update={"engine": EngineStatus(key="k-int8", backend="onnxruntime", precision="int8"), "recipe": "r1"}
    )
    failed = next_canary(SPEC, CANARY, built, FAIL, Controls(), T0 + timedelta(seconds=10)).status
    assert failed is not None and failed.state == "RolledBack" and failed.reason == "AnalysisFailed"
    rebuilding = CanaryIdentity(
        CANARY.checkpoint, CANARY.version, CANARY.digest, engine_key=None, recipe="r1"
    )
    again = next_canary(SPEC, rebuilding, failed, PASS, Controls(), T0 + timedelta(hours=2))
    assert again.status == failed and again.event is None


def test_a_new_recipe_is_a_new_canary_before_its_engine_exists():
    status = next_canary(SPEC, replace(CANARY, recipe="r1"), None, None, Controls(), T0).status
    assert status is not None and status.recipe == "r1"
    status = next_canary(
        SPEC, replace(CANARY, recipe="r1"), status, FAIL, Controls(), T0 + timedelta(minutes=1)
    ).status
    assert status is not None and status.state == "RolledBack"
    decision = next_canary(
        SPEC, replace(CANARY, recipe="r2"), status, None, Controls(), T0 + timedelta(minutes=2)
    )
    assert decision.status is not None and decision.status.state == "Progressing"
    assert decision.event is not None and decision.event.reason == "CanaryStarted"


def test_a_canary_engine_that_fails_its_gate_is_rolled_back_once_with_its_report():
    identity = replace(CANARY, recipe="r1")
    failure = EngineFailure("QualityGateFailed", "p99 12ms > 1ms", report="/engines/reports/k.json")
    decision = engine_failed(identity, None, failure, T0)
    assert decision.status is not None and (decision.weight, decision.status.state) == (0, "RolledBack")
    assert (
        decision.status.reason == "QualityGateFailed" and decision.status.report == "/engines/reports/k.json"
    )
    assert decision.event is not None and decision.event.reason == "CanaryQualityGateFailed"
    assert (
        "/engines/reports/k.json" in decision.event.message
        and "stable keeps serving" in decision.event.message
    )
    again = engine_failed(identity, decision.status, failure, T0 + timedelta(minutes=1))
    assert again.status == decision.status and again.event is None
    fixed = engine_failed(replace(CANARY, recipe="r2"), decision.status, failure, T0 + timedelta(minutes=2))
    assert fixed.event is not None, "another recipe is another canary, judged afresh"


def test_a_window_restarted_after_a_lost_baseline_is_judged_on_a_full_pause():
    status = next_canary(SPEC, CANARY, None, None, Controls(), T0).status
    assert status is not None
    restart = T0 + timedelta(minutes=3)  # the operator came back long after the 1m pause ended
    restarted, event = restart_window(status, restart)
    assert restarted.step_started_at == restart and event is not None
    assert event.reason == "CanaryWindowRestarted"
    decision = next_canary(SPEC, CANARY, restarted, PASS, Controls(), restart + timedelta(seconds=10))
    assert (decision.weight, decision.status.state if decision.status else None) == (5, "Progressing")
    assert restart_window(restarted, restart) == (restarted, None)
    assert restart_window(restarted, T0) == (restarted, None)


def test_same_checkpoint_with_a_new_recipe_is_a_new_canary():
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
