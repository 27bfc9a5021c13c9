"""The reconcile core against an in-memory Platform: the world is scripted, the logic is real."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recserve_operator.api.status import EngineStatus
from recserve_operator.planners.analysis import WindowMetrics
from recserve_operator.planners.canary import Controls
from recserve_operator.planners.serve_config import DeployPlan
from recserve_operator.platform import CheckpointInfo, DeployOutcome, EngineOutcome
from recserve_operator.reconcile import reconcile
from recserve_operator.validate import load_model
from recserve_serving.errors import CheckpointError, Unavailable

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests/examples"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    """A scripted Platform: what resolves, what is built, whether serving is up, what metrics say."""

    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    building: set[str] = field(default_factory=set)
    ready: bool = True
    metrics: WindowMetrics | None = None
    registry_down: bool = False
    deployed: list[DeployPlan] = field(default_factory=list)

    def resolve(self, uri):
        if self.registry_down:
            raise Unavailable("registry unreachable")
        if uri not in self.checkpoints:
            raise CheckpointError(f"{uri}: no such model")
        return self.checkpoints[uri]

    def ensure_engine(self, model, version, checkpoint, recipe):
        if checkpoint.digest in self.building:
            return EngineOutcome("Building", message="Job running")
        status = EngineStatus(key=f"k-{checkpoint.digest}", backend="onnxruntime", precision=recipe.precision)
        return EngineOutcome("Ready", engine_dir=f"/engines/{checkpoint.digest}", status=status)

    def deploy(self, model, plan):
        self.deployed.append(plan)
        return DeployOutcome(
            self.ready, "http://svc:8000" if self.ready else None, "" if self.ready else "starting"
        )

    def canary_metrics(self, model, stable, canary, since):
        return self.metrics


def world() -> World:
    return World(
        checkpoints={
            "models:/movielens-ranker/1": CheckpointInfo(
                "models:/movielens-ranker/1", "movielens-ranker", "1", "d1"
            ),
            "models:/movielens-ranker/2": CheckpointInfo(
                "models:/movielens-ranker/2", "movielens-ranker", "2", "d2"
            ),
        }
    )


def stable_model():
    m = load_model(EXAMPLES / "movielens-ranker.yaml")
    return m.model_copy(update={"metadata": m.metadata.model_copy(update={"generation": 3})})


def canary_model():
    m = load_model(EXAMPLES / "movielens-ranker-canary.yaml")
    return m.model_copy(update={"metadata": m.metadata.model_copy(update={"generation": 4})})


def conditions(outcome):
    return {c.type: c.status for c in outcome.status.conditions}


def step(model, w, now, controls=None):
    outcome = reconcile(model, w, now, controls)
    return model.model_copy(update={"status": outcome.status}), outcome


def test_unknown_checkpoint_stalls_with_an_event_and_deploys_nothing():
    w = World()
    _, outcome = step(stable_model(), w, T0)
    assert outcome.stalled_reason and "no such model" in outcome.stalled_reason
    assert conditions(outcome)["Stalled"] == "True" and outcome.status.phase == "Failed"
    assert [e.reason for e in outcome.events] == ["CheckpointNotFound"]
    assert w.deployed == []


def test_a_stall_is_announced_once_not_on_every_resync():
    w = World()
    model, first = step(stable_model(), w, T0)
    _, again = step(model, w, T0 + timedelta(seconds=10))
    assert [e.reason for e in first.events] == ["CheckpointNotFound"]
    assert again.events == [] and again.status == first.status
    assert conditions(again)["Stalled"] == "True"


def test_building_then_ready():
    w = world()
    w.building.add("d1")
    model, outcome = step(stable_model(), w, T0)
    assert outcome.status.phase == "Building" and conditions(outcome)["Reconciling"] == "True"
    assert conditions(outcome)["EngineReady"] == "False" and w.deployed == []
    w.building.clear()
    model, outcome = step(model, w, T0 + timedelta(seconds=10))
    assert outcome.status.phase == "Ready"
    assert conditions(outcome) == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "EngineReady": "True",
        "CanaryHealthy": "True",
    }
    assert outcome.status.observed_generation == 3
    assert outcome.status.stable is not None and outcome.status.stable.version == "1"
    assert outcome.status.endpoint == "http://svc:8000"


def test_a_second_pass_changes_nothing():
    w = world()
    model, first = step(stable_model(), w, T0)
    _, second = step(model, w, T0 + timedelta(minutes=5))
    assert second.status == first.status
    assert second.events == []


def test_registry_outage_retries_without_touching_serving():
    w = world()
    model, _ = step(stable_model(), w, T0)
    w.registry_down = True
    _, outcome = step(model, w, T0 + timedelta(seconds=30))
    assert outcome.retry_reason and "registry unreachable" in outcome.retry_reason
    assert outcome.stalled_reason is None and len(w.deployed) == 1


def test_canary_steps_to_promotion_through_deploy_plans():
    w = world()
    w.metrics = WindowMetrics(requests=1000, errors=0, p99_latency_ms=10, score_shift=0.01)
    model = canary_model()
    pause = model.spec.rollout.canary.steps[0].pause_seconds
    weights = []
    now = T0
    for _ in range(len(model.spec.rollout.canary.steps) + 1):
        model, outcome = step(model, w, now)
        weights.append(w.deployed[-1].traffic.canary_weight)
        now += timedelta(seconds=max(s.pause_seconds for s in model.spec.rollout.canary.steps) + pause)
    assert weights == [s.weight for s in model.spec.rollout.canary.steps] + [0]
    assert outcome.status.canary.state == "Promoted"
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.deployed[-1].canary is None
    assert outcome.status.stable.version == "2" and outcome.status.phase == "Ready"


def test_failing_canary_rolls_back_and_marks_degraded():
    w = world()
    w.metrics = WindowMetrics(requests=1000, errors=500, p99_latency_ms=10, score_shift=0.01)
    model, _ = step(canary_model(), w, T0)
    _, outcome = step(model, w, T0 + timedelta(seconds=5))
    assert outcome.status.canary.state == "RolledBack"
    assert w.deployed[-1].canary is None and w.deployed[-1].traffic.canary_weight == 0
    assert w.deployed[-1].stable.label == "movielens-ranker/1"
    assert outcome.status.phase == "Degraded"
    assert conditions(outcome)["CanaryHealthy"] == "False" and conditions(outcome)["Stalled"] == "True"
    assert [e.reason for e in outcome.events] == ["CanaryRolledBack"]


def test_abort_annotation_sends_traffic_back():
    w = world()
    model, _ = step(canary_model(), w, T0)
    _, outcome = step(model, w, T0 + timedelta(seconds=5), Controls(abort=True))
    assert outcome.status.canary.state == "Aborted" and w.deployed[-1].traffic.canary_weight == 0


def test_a_canary_of_the_same_checkpoint_gets_its_own_version_label():
    w = world()
    m = load_model(EXAMPLES / "movielens-ranker.yaml")
    canary = {
        "checkpoint": {"uri": "models:/movielens-ranker/1"},
        "optimization": {"backend": "onnxruntime", "precision": "fp32"},
        "steps": [{"weight": 10, "pause": "1m"}],
        "analysis": {"maxErrorRate": 0.01},
    }
    spec = m.spec.model_validate({**m.spec.to_dict(), "rollout": {"canary": canary}})
    model = m.model_copy(update={"spec": spec})
    step(model, w, T0)
    plan = w.deployed[-1]
    assert plan.canary is not None and plan.canary.label != plan.stable.label
    assert plan.canary.label.startswith("movielens-ranker/1+fp32-")


def test_registry_credentials_in_an_error_never_reach_status_or_events():
    w = world()
    w.checkpoints = {}
    leaky = World()
    leaky_error = "MLflow registry at https://alice:s3cret@mlflow:5000 unavailable: Read timed out"

    def unavailable(uri):
        raise Unavailable(leaky_error)

    def missing(uri):
        raise CheckpointError(f"{uri}: not in the registry at https://alice:s3cret@mlflow:5000")

    leaky.resolve = unavailable
    _, outcome = step(stable_model(), leaky, T0)
    ready = next(c for c in outcome.status.conditions if c.type == "Ready")
    assert ready.reason == "RegistryUnavailable" and outcome.retry_reason
    assert "https://***@mlflow:5000" in ready.message
    assert "s3cret" not in outcome.status.model_dump_json() + outcome.retry_reason
    w.resolve = missing
    model, outcome = step(stable_model(), w, T0)
    assert [e.reason for e in outcome.events] == ["CheckpointNotFound"]
    assert outcome.stalled_reason and "s3cret" not in outcome.stalled_reason + outcome.events[0].message
    assert "s3cret" not in outcome.status.model_dump_json()
    _, again = step(model, w, T0 + timedelta(seconds=60))
    assert again.events == []  # the redacted stall is recognised as already announced
