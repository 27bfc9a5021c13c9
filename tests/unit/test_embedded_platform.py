"""The embedded platform's engine outcomes, with the builder scripted: no build, no Ray."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from recserve_operator.embedded.platform import EmbeddedPlatform
from recserve_operator.embedded.runner import ray_cpus
from recserve_operator.platform import CheckpointInfo
from recserve_operator.validate import load_model
from recserve_serving.errors import EngineError, QualityGateFailed
from recserve_serving.example_data import EXAMPLE_DATA
from recserve_serving.recipe import OptimizationRecipe

pytestmark = pytest.mark.unit
CHECKPOINT = CheckpointInfo("models:/m/2", "m", "2", "d2")
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"


def platform_failing_with(monkeypatch, tmp_path, error: Exception) -> tuple[EmbeddedPlatform, list[str]]:
    attempts: list[str] = []

    def build_best(resolved, recipe, cache_root, workload, data):
        attempts.append(recipe.precision)
        raise error

    monkeypatch.setitem(
        sys.modules,
        "recserve_serving.engine.search_build",
        SimpleNamespace(build_best=build_best, search_of=lambda built: None),
    )
    platform = EmbeddedPlatform.__new__(
        EmbeddedPlatform
    )  # without its registry: MLflow takes seconds to import
    platform.state, platform.say, platform._engines = tmp_path, lambda line: None, {}
    platform._datasets = {EXAMPLE_DATA.model_dump_json(): SimpleNamespace(digest="example")}
    monkeypatch.setattr(platform, "_resolve_local", lambda uri: SimpleNamespace(uri=uri))
    return platform, attempts


def test_a_canary_engine_that_fails_its_gate_is_a_failed_outcome_not_an_exception(monkeypatch, tmp_path):
    report = str(tmp_path / "engines/reports/k.json")
    error = QualityGateFailed(f"p99 12ms > 1ms (report: {report})", report=report)
    platform, attempts = platform_failing_with(monkeypatch, tmp_path, error)
    recipe = OptimizationRecipe()
    outcome = platform.ensure_engine(load_model(EXAMPLE), "canary", CHECKPOINT, recipe)
    assert (outcome.state, outcome.failure, outcome.report) == ("Failed", "QualityGateFailed", report)
    again = platform.ensure_engine(load_model(EXAMPLE), "canary", CHECKPOINT, recipe)
    assert again == outcome and len(attempts) == 1, "the same checkpoint and recipe fail the same way"


def test_a_corrupt_cached_engine_is_a_failed_outcome_not_an_exception(monkeypatch, tmp_path):
    error = EngineError("engine /x does not match its manifest (model.onnx); rebuild it")
    platform, _ = platform_failing_with(monkeypatch, tmp_path, error)
    outcome = platform.ensure_engine(load_model(EXAMPLE), "canary", CHECKPOINT, OptimizationRecipe())
    assert (outcome.state, outcome.failure, outcome.report) == ("Failed", "EngineFailed", None)
    assert "does not match its manifest" in outcome.message


def test_ray_has_room_for_a_canary_added_after_up_started():
    """A manifest without a canary still gets CPUs for one (the router, then stable and a canary
    at their max replicas), since a GitOps edit can add the canary to a running `up`."""
    stable_only = load_model(EXAMPLE)
    assert stable_only.spec.rollout.canary is None
    serving = stable_only.spec.serving
    assert ray_cpus(stable_only) >= 1 + 2 * serving.resources.cpus * serving.autoscaling.max_replicas
