"""The embedded platform's engine outcomes, with the builder scripted: no build, no Ray."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from recserve_operator.embedded.platform import EmbeddedPlatform
from recserve_operator.platform import CheckpointInfo
from recserve_serving.errors import EngineError, QualityGateFailed
from recserve_serving.recipe import OptimizationRecipe

pytestmark = pytest.mark.unit
CHECKPOINT = CheckpointInfo("models:/m/2", "m", "2", "d2")


def platform_failing_with(monkeypatch, tmp_path, error: Exception) -> tuple[EmbeddedPlatform, list[str]]:
    attempts: list[str] = []

    def build_engine(resolved, recipe, cache_root):
        attempts.append(recipe.precision)
        raise error

    monkeypatch.setitem(
        sys.modules, "recserve_serving.engine.build", SimpleNamespace(build_engine=build_engine)
    )
    platform = EmbeddedPlatform.__new__(
        EmbeddedPlatform
    )  # without its registry: MLflow takes seconds to import
    platform.state, platform.say, platform._engines = tmp_path, lambda line: None, {}
    monkeypatch.setattr(platform, "_resolve_local", lambda uri: SimpleNamespace(uri=uri))
    return platform, attempts


def test_a_canary_engine_that_fails_its_gate_is_a_failed_outcome_not_an_exception(monkeypatch, tmp_path):
    report = str(tmp_path / "engines/reports/k.json")
    error = QualityGateFailed(f"p99 12ms > 1ms (report: {report})", report=report)
    platform, attempts = platform_failing_with(monkeypatch, tmp_path, error)
    recipe = OptimizationRecipe()
    outcome = platform.ensure_engine(None, "canary", CHECKPOINT, recipe)  # type: ignore[arg-type]
    assert (outcome.state, outcome.failure, outcome.report) == ("Failed", "QualityGateFailed", report)
    again = platform.ensure_engine(None, "canary", CHECKPOINT, recipe)  # type: ignore[arg-type]
    assert again == outcome and len(attempts) == 1, "the same checkpoint and recipe fail the same way"


def test_a_corrupt_cached_engine_is_a_failed_outcome_not_an_exception(monkeypatch, tmp_path):
    error = EngineError("engine /x does not match its manifest (model.onnx); rebuild it")
    platform, _ = platform_failing_with(monkeypatch, tmp_path, error)
    outcome = platform.ensure_engine(None, "canary", CHECKPOINT, OptimizationRecipe())  # type: ignore[arg-type]
    assert (outcome.state, outcome.failure, outcome.report) == ("Failed", "EngineFailed", None)
    assert "does not match its manifest" in outcome.message
