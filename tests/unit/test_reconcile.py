"""The reconcile core against an in-memory Platform: the world is scripted, the logic is real."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
from recserve_serving.errors import AliasNotSet, CheckpointError, EngineError, QualityGateFailed, Unavailable

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "manifests/examples"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    """A scripted Platform: what resolves, what is built, whether serving is up, what metrics say."""

    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    building: set[str] = field(default_factory=set)
    failing: dict[tuple[str, str], Exception] = field(default_factory=dict)
    """(digest, precision) whose build raises this (a failed gate, a corrupt engine)."""
    ready: bool = True
    metrics: WindowMetrics | None = None
    registry_down: bool = False
    deployed: list[DeployPlan] = field(default_factory=list)
    builds: list[tuple[str, str]] = field(default_factory=list)
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    moves: list[tuple[str, str, str]] = field(default_factory=list)

    def resolve(self, uri):
        if self.registry_down:
            raise Unavailable("registry unreachable")
        if uri not in self.checkpoints and "@" in uri:
            raise AliasNotSet(f"{uri}: model has no such alias")
        if uri not in self.checkpoints:
            raise CheckpointError(f"{uri}: no such model")
        return self.checkpoints[uri]

    def ensure_engine(self, model, version, checkpoint, recipe):
        self.builds.append((version, checkpoint.digest))
        if checkpoint.digest in self.building:
            return EngineOutcome("Building", message="Job running")
        failure = self.failing.get((checkpoint.digest, recipe.precision))
        if failure is not None:
            raise failure
        key = f"k-{checkpoint.digest}-{recipe.precision}"
        status = EngineStatus(key=key, backend="onnxruntime", precision=recipe.precision)
        return EngineOutcome("Ready", engine_dir=f"/engines/{key}", status=status)

    def deploy(self, model, plan):
        self.deployed.append(plan)
        return DeployOutcome(
            self.ready, "http://svc:8000" if self.ready else None, "" if self.ready else "starting"
        )

    def canary_metrics(self, model, stable, canary, since, now):
        self.windows.append((since, now))
        return self.metrics

    def move_alias(self, name, alias, version):
        if self.registry_down:
            raise Unavailable("registry unreachable")
        self.moves.append((name, alias, version))
        self.checkpoints[f"models:/{name}@{alias}"] = self.checkpoints[f"models:/{name}/{version}"]


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


GOOD = WindowMetrics(requests=1000, errors=0, p99_latency_ms=10, score_shift=0.01)
BAD = WindowMetrics(requests=1000, errors=500, p99_latency_ms=10, score_shift=0.01)
QUIET = WindowMetrics(requests=0, errors=0, p99_latency_ms=None, score_shift=None)


def with_spec(model, **changes):
    spec = model.spec.model_validate({**model.spec.to_dict(), **changes})
    generation = (model.metadata.generation or 0) + 1
    metadata = model.metadata.model_copy(update={"generation": generation})
    return model.model_copy(update={"spec": spec, "metadata": metadata})


def canary_with(model, **changes):
    canary = {**model.spec.rollout.canary.to_dict(), **changes}
    return with_spec(model, rollout={"canary": canary})


def reasons(outcome):
    return [e.reason for e in outcome.events]


def condition(outcome, type_):
    return outcome.status.condition(type_)


def promoted(w):
    """A canary walked to promotion: (model, outcome, time of the last pass)."""
    w.metrics = GOOD
    model, now = canary_model(), T0
    outcome = None
    while outcome is None or outcome.status.canary.state != "Promoted":
        model, outcome = step(model, w, now)
        now += timedelta(minutes=1)
    return model, outcome, now


def rolled_back(w):
    w.metrics = BAD
    model, _ = step(canary_model(), w, T0)
    model, outcome = step(model, w, T0 + timedelta(seconds=5))
    assert outcome.status.canary.state == "RolledBack"
    return model, outcome


# A canary whose engine fails is the canary's failure, never stable's.


def test_a_canary_that_fails_its_quality_gate_leaves_stable_serving():
    w = world()
    report = "/state/engines/reports/k-d2.json"
    w.failing[("d2", "int8")] = QualityGateFailed(f"p99 12ms > 1ms (report: {report})", report=report)
    model, outcome = step(canary_model(), w, T0)
    assert outcome.stalled_reason is None and outcome.retry_reason is None
    assert w.deployed[-1].stable.label == "movielens-ranker/1" and w.deployed[-1].canary is None
    assert outcome.status.endpoint == "http://svc:8000" and conditions(outcome)["Ready"] == "True"
    canary = outcome.status.canary
    assert (canary.state, canary.weight, canary.reason, canary.report) == (
        "RolledBack",
        0,
        "QualityGateFailed",
        report,
    )
    healthy = condition(outcome, "CanaryHealthy")
    assert (healthy.status, healthy.reason) == (
        "False",
        "CanaryQualityGateFailed",
    ) and report in healthy.message
    assert outcome.status.phase == "Degraded" and outcome.status.stable.version == "1"
    assert (
        reasons(outcome) == ["EngineBuilt", "CanaryQualityGateFailed"] and report in outcome.events[1].message
    )
    builds = len(w.builds)
    _, again = step(model, w, T0 + timedelta(minutes=5))
    assert again.events == [] and again.status == outcome.status
    assert w.builds[builds:] == [("stable", "d1")], "a failed canary is not rebuilt on every pass"


def test_a_corrupt_canary_engine_leaves_stable_serving():
    w = world()
    w.failing[("d2", "int8")] = EngineError("engine /engines/k-d2 does not match its manifest; rebuild it")
    _, outcome = step(canary_model(), w, T0)
    assert outcome.stalled_reason is None and w.deployed[-1].canary is None
    assert w.deployed[-1].stable.label == "movielens-ranker/1"
    assert outcome.status.canary.reason == "EngineFailed"
    assert condition(outcome, "CanaryHealthy").reason == "CanaryEngineFailed"
    assert reasons(outcome) == ["EngineBuilt", "CanaryEngineFailed"]


def test_a_platform_failed_canary_build_is_a_canary_failure_not_a_stall():
    w = world()

    def failed_job(model, version, checkpoint, recipe):
        if version == "canary":
            return EngineOutcome(
                "Failed", message="build Job x: gate", failure="QualityGateFailed", report="/r"
            )
        return World.ensure_engine(w, model, version, checkpoint, recipe)

    w.ensure_engine = failed_job
    _, outcome = step(canary_model(), w, T0)
    assert outcome.stalled_reason is None and outcome.status.canary.report == "/r"
    assert w.deployed[-1].stable.label == "movielens-ranker/1"


def test_a_fixed_canary_manifest_is_a_new_canary_after_a_failed_gate():
    w = world()
    w.failing[("d2", "int8")] = QualityGateFailed("p99 12ms > 1ms", report="/r")
    model, _ = step(canary_model(), w, T0)
    fixed = canary_with(model, optimization={"backend": "onnxruntime", "precision": "fp32"})
    _, outcome = step(fixed, w, T0 + timedelta(minutes=1))
    assert outcome.status.canary.state == "Progressing" and outcome.status.canary.weight == 5
    assert reasons(outcome) == ["CanaryStarted"] and w.deployed[-1].canary is not None


def test_a_stable_engine_that_fails_its_gate_stalls_without_deploying():
    w = world()
    w.failing[("d1", "int8")] = QualityGateFailed("ndcg drop 0.2 > 0.01", report="/r")
    _, outcome = step(stable_model(), w, T0)
    assert outcome.stalled_reason and "ndcg drop" in outcome.stalled_reason and w.deployed == []


# A canary that never becomes healthy is rolled back at its progress deadline.


def test_a_canary_that_never_becomes_healthy_is_rolled_back_after_its_progress_deadline():
    w = world()
    w.metrics = QUIET  # its app never runs, so it never gets a request
    model = canary_with(canary_model(), progressDeadline="2m")
    now = T0
    for _ in range(5):  # 30s pause, then 2m without a verdict, in 30s passes
        model, outcome = step(model, w, now)
        assert outcome.status.canary.state in {"Progressing", "Paused"}
        now += timedelta(seconds=30)
    model, outcome = step(model, w, now + timedelta(seconds=1))  # 151s: 30s pause + 2m + 1s
    canary = outcome.status.canary
    assert (canary.state, canary.weight, canary.reason) == ("RolledBack", 0, "ProgressDeadlineExceeded")
    assert w.deployed[-1].canary is None and w.deployed[-1].stable.label == "movielens-ranker/1"
    assert condition(outcome, "CanaryHealthy").reason == "CanaryProgressDeadlineExceeded"
    assert reasons(outcome) == ["CanaryRolledBack"] and "progressDeadline 2m" in outcome.events[0].message
    assert outcome.status.phase == "Degraded"


# A decision, once made, holds for its checkpoint and recipe whatever happens to the build Job.


def test_a_promoted_canary_stays_promoted_when_its_build_job_is_gone():
    w = world()
    model, _, now = promoted(w)
    assert w.deployed[-1].stable.label == "movielens-ranker/2"
    w.building.add("d2")  # the Job's TTL removed it: the platform would build again
    model, again = step(model, w, now)
    assert again.status.canary.state == "Promoted" and again.events == []
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.deployed[-1].canary is None
    assert w.deployed[-1].stable.engine_dir == "/engines/k-d2-int8"
    assert again.status.stable.version == "2" and again.status.phase == "Ready"
    w.building.clear()
    _, settled = step(model, w, now + timedelta(minutes=5))
    assert settled.status == again.status and settled.events == []


def test_a_rolled_back_canary_is_not_retried_when_its_build_job_is_gone():
    w = world()
    model, outcome = rolled_back(w)
    w.metrics = GOOD
    for building in (True, False):  # the Job removed, then the Job run again
        if building:
            w.building.add("d2")
        else:
            w.building.clear()
        model, again = step(model, w, T0 + timedelta(hours=2))
        assert again.status.canary == outcome.status.canary and again.events == []
        assert w.deployed[-1].canary is None and w.deployed[-1].stable.label == "movielens-ranker/1"


def test_a_live_canary_keeps_its_weight_while_its_build_job_runs_again():
    w = world()
    w.metrics = GOOD
    model, _ = step(canary_model(), w, T0)
    model, outcome = step(model, w, T0 + timedelta(seconds=31))
    assert outcome.status.canary.weight == 25
    w.building.add("d2")
    _, again = step(model, w, T0 + timedelta(seconds=40))
    assert again.status.canary.weight == 25 and again.status.canary.state == "Progressing"
    assert w.deployed[-1].canary is not None and w.deployed[-1].traffic.canary_weight == 25


def test_removing_the_canary_after_promotion_keeps_the_promoted_version_serving():
    w = world()
    model, _, now = promoted(w)
    without = with_spec(model, rollout={})
    model, outcome = step(without, w, now)
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.deployed[-1].canary is None
    ready = condition(outcome, "Ready")
    assert (ready.status, ready.reason) == ("True", "PromotionNotInSpec")
    assert "models:/movielens-ranker/1" in ready.message and outcome.status.stable.version == "2"
    assert reasons(outcome) == ["PromotionNotInSpec"]
    model, again = step(model, w, now + timedelta(minutes=1))
    assert again.events == [] and w.deployed[-1].stable.label == "movielens-ranker/2"

    recorded = with_spec(model, checkpoint={"uri": "models:/movielens-ranker/2"})
    _, outcome = step(recorded, w, now + timedelta(minutes=2))
    assert outcome.status.canary is None and condition(outcome, "Ready").reason == "Serving"
    assert w.deployed[-1].stable.label == "movielens-ranker/2"


def test_naming_another_stable_after_a_promotion_replaces_it():
    w = world()
    w.checkpoints["models:/movielens-ranker/3"] = CheckpointInfo(
        "models:/movielens-ranker/3", "movielens-ranker", "3", "d3"
    )
    model, _, now = promoted(w)
    explicit = with_spec(model, checkpoint={"uri": "models:/movielens-ranker/3"}, rollout={})
    _, outcome = step(explicit, w, now)
    assert w.deployed[-1].stable.label == "movielens-ranker/3" and outcome.status.canary is None


# An operator restart mid-step: the step is judged on a full window after the restart.


def test_an_operator_restart_mid_step_judges_the_step_on_a_full_window():
    w = world()
    w.metrics = GOOD
    model, _ = step(canary_model(), w, T0)
    restart = T0 + timedelta(minutes=5)  # long after the 30s pause: the old baseline is gone
    w.metrics = replace(GOOD, window_start=restart)
    model, outcome = step(model, w, restart + timedelta(seconds=10))
    canary = outcome.status.canary
    assert (canary.weight, canary.step, canary.step_started_at) == (5, 0, restart)
    assert reasons(outcome) == ["CanaryWindowRestarted"]
    model, again = step(model, w, restart + timedelta(seconds=20))
    assert again.status.canary.weight == 5 and again.events == []
    _, full = step(model, w, restart + timedelta(seconds=31))
    assert full.status.canary.weight == 25 and reasons(full) == ["CanaryStepAdvanced"]


def test_a_new_step_takes_its_metrics_baseline_as_it_starts():
    w = world()
    w.metrics = GOOD
    model, _ = step(canary_model(), w, T0)
    assert w.windows == [(T0, T0)], "the first step's window opens with the canary"
    advanced = T0 + timedelta(seconds=31)
    step(model, w, advanced)
    assert w.windows[-1] == (advanced, advanced)


# A chaos drill (spec.rollout.canary.faultInjection) fails only the canary, and only as a canary.


def test_a_fault_drill_reaches_the_canary_alone_and_ends_with_promotion():
    w = world()
    drill = canary_with(canary_model(), faultInjection={"abortPercent": 20})
    w.metrics = GOOD
    model, now, outcome = drill, T0, None
    while outcome is None or outcome.status.canary.state != "Promoted":
        model, outcome = step(model, w, now)
        plan = w.deployed[-1]
        if plan.canary is not None:
            assert plan.canary.fault_injection is not None
            assert plan.canary.fault_injection.abort_percent == 20
        assert plan.stable.fault_injection is None
        now += timedelta(minutes=1)
    assert w.deployed[-1].stable.label == "movielens-ranker/2"
    assert w.deployed[-1].stable.fault_injection is None and w.deployed[-1].canary is None


# Registry aliases: a retrain moves @candidate, a promotion moves @champion, and a move of the
# stable alias itself never bypasses a canary unless spec opts out (rollout.strategy: Immediate).

CHAMPION = "models:/movielens-ranker@champion"
CANDIDATE = "models:/movielens-ranker@candidate"


def aliased_world(champion="1", candidate="2"):
    w = world()
    w.checkpoints["models:/movielens-ranker/3"] = CheckpointInfo(
        "models:/movielens-ranker/3", "movielens-ranker", "3", "d3"
    )
    w.checkpoints[CHAMPION] = replace(w.checkpoints[f"models:/movielens-ranker/{champion}"], uri=CHAMPION)
    w.checkpoints[CANDIDATE] = replace(w.checkpoints[f"models:/movielens-ranker/{candidate}"], uri=CANDIDATE)
    return w


def move(w, uri, version):
    w.checkpoints[uri] = replace(w.checkpoints[f"models:/movielens-ranker/{version}"], uri=uri)


def run_until(model, w, now, done, passes=20):
    outcome = None
    for _ in range(passes):
        model, outcome = step(model, w, now)
        now += timedelta(minutes=1)
        if done(outcome):
            return model, outcome, now
    raise AssertionError(f"not reached after {passes} passes: {outcome.status if outcome else None}")


def champion_model(strategy="Canary", canary=True):
    model = with_spec(stable_model(), checkpoint={"uri": CHAMPION})
    rollout = {"strategy": strategy}
    if canary:
        rollout["canary"] = {**canary_model().spec.rollout.canary.to_dict(), "checkpoint": {"uri": CANDIDATE}}
    return with_spec(model, rollout=rollout)


def test_a_moved_candidate_alias_is_canaried_and_its_promotion_moves_champion_not_spec():
    w = aliased_world(champion="1", candidate="1")
    w.metrics = GOOD
    model = champion_model()
    spec_before = model.spec
    model, outcome, now = run_until(model, w, T0, lambda o: o.status.phase == "Ready")
    move(w, CANDIDATE, "2")  # a retrain registered version 2 and moved @candidate
    model, outcome = step(model, w, now)
    assert outcome.status.canary.state == "Progressing" and outcome.status.canary.version == "2"
    assert "CanaryStarted" in reasons(outcome) and w.deployed[-1].stable.label == "movielens-ranker/1"
    model, outcome, now = run_until(model, w, now, lambda o: o.status.canary.state == "Promoted")
    assert w.moves == [("movielens-ranker", "champion", "2")] and "ChampionMoved" in reasons(outcome)
    champion = outcome.status.champion
    assert (champion.model, champion.alias, champion.version) == ("movielens-ranker", "champion", "2")
    assert model.spec == spec_before  # GitOps: spec is never written
    # The next passes see @champion at version 2: what already serves; nothing restarts or moves again.
    model, outcome = step(model, w, now)
    model, outcome = step(model, w, now + timedelta(minutes=1))
    assert outcome.status.phase == "Ready" and outcome.status.canary.state == "Promoted"
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.deployed[-1].canary is None
    assert w.moves == [("movielens-ranker", "champion", "2")] and "CanaryStarted" not in reasons(outcome)


def test_a_registry_that_cannot_move_champion_is_retried_on_the_next_pass():
    w = aliased_world(champion="1", candidate="2")
    w.metrics = GOOD
    model, outcome, now = run_until(
        champion_model(), w, T0, lambda o: o.status.canary.state == "Promoted" if o.status.canary else False
    )
    w.moves.clear()
    model = model.model_copy(update={"status": outcome.status.model_copy(update={"champion": None})})
    w.registry_down = True
    w.checkpoints[CHAMPION] = w.checkpoints["models:/movielens-ranker/1"]
    # resolving fails while the registry is down, so the pass waits; nothing is moved or lost
    _, waiting = step(model, w, now)
    assert waiting.retry_reason and w.moves == []
    w.registry_down = False
    _, outcome = step(model, w, now + timedelta(minutes=1))
    assert w.moves == [("movielens-ranker", "champion", "2")] and outcome.status.champion.version == "2"


def test_a_moved_stable_alias_is_canaried_with_default_steps_and_the_old_version_serves_meanwhile():
    w = aliased_world(champion="1")
    w.metrics = GOOD
    model, outcome, now = run_until(champion_model(canary=False), w, T0, lambda o: o.status.phase == "Ready")
    move(w, CHAMPION, "2")  # someone moved @champion in the registry by hand
    model, outcome = step(model, w, now)
    plan = w.deployed[-1]
    assert plan.stable.label == "movielens-ranker/1" and plan.canary.label == "movielens-ranker/2"
    assert plan.traffic.canary_weight == 10 and outcome.status.stable.version == "1"
    assert outcome.status.canary.checkpoint == CHAMPION and outcome.status.phase == "Progressing"
    model, outcome, now = run_until(model, w, now, lambda o: o.status.canary.state == "Promoted")
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.moves == [
        ("movielens-ranker", "champion", "2")
    ]
    model, outcome = step(model, w, now)
    assert outcome.status.phase == "Ready" and outcome.status.stable.version == "2"
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.deployed[-1].canary is None


def test_a_failing_stable_alias_move_rolls_back_and_the_old_version_keeps_serving():
    w = aliased_world(champion="1")
    w.metrics = GOOD
    model, _, now = run_until(champion_model(canary=False), w, T0, lambda o: o.status.phase == "Ready")
    w.metrics = BAD
    move(w, CHAMPION, "3")
    model, outcome, now = run_until(model, w, now, lambda o: o.status.canary.state == "RolledBack")
    for _ in range(2):
        model, outcome = step(model, w, now)
        now += timedelta(minutes=1)
        assert w.deployed[-1].stable.label == "movielens-ranker/1" and w.deployed[-1].canary is None
        assert outcome.status.phase == "Degraded" and outcome.status.stable.version == "1"
    assert w.moves == []


def test_strategy_immediate_and_spec_edits_switch_at_once():
    w = aliased_world(champion="1")
    model, _, now = run_until(
        champion_model("Immediate", canary=False), w, T0, lambda o: o.status.phase == "Ready"
    )
    move(w, CHAMPION, "2")
    _, outcome = step(model, w, now)
    assert w.deployed[-1].stable.label == "movielens-ranker/2" and w.deployed[-1].canary is None
    assert outcome.status.canary is None

    w = aliased_world(champion="1")
    model, _, now = run_until(champion_model(canary=False), w, T0, lambda o: o.status.phase == "Ready")
    edited = with_spec(model, checkpoint={"uri": "models:/movielens-ranker/3"})
    _, outcome = step(edited, w, now)
    assert w.deployed[-1].stable.label == "movielens-ranker/3" and outcome.status.canary is None


def test_a_candidate_alias_not_set_yet_is_no_canary_and_no_stall():
    w = aliased_world(champion="1")
    del w.checkpoints[CANDIDATE]
    model, outcome, now = run_until(champion_model(), w, T0, lambda o: o.status.phase == "Ready")
    healthy = condition(outcome, "CanaryHealthy")
    assert (healthy.status, healthy.reason) == ("True", "NoCanary") and "@candidate" in healthy.message
    move(w, CANDIDATE, "2")
    _, outcome = step(model, w, now)
    assert (
        outcome.status.canary.state == "Progressing" and w.deployed[-1].canary.label == "movielens-ranker/2"
    )
