"""Recipe consistency, student layer choice, pruning arithmetic and gate verdicts (pure logic)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recserve_serving.engine import build
from recserve_serving.engine.distill import student_layer_indices
from recserve_serving.engine.gate import GateReport, judge
from recserve_serving.engine.prune import kept
from recserve_serving.errors import RecipeError
from recserve_serving.recipe import OptimizationRecipe, QualityGate

pytestmark = pytest.mark.unit

REFERENCE = {"ndcg@10": 0.40, "auc": 0.80, "p99_ms_max_batch": 10.0}


def test_student_layers_are_evenly_spaced_and_end_with_the_last() -> None:
    assert student_layer_indices(6, 3) == [1, 3, 5]
    assert student_layer_indices(6, 2) == [2, 5]
    assert student_layer_indices(6, 1) == [5]
    assert student_layer_indices(6, 5) == [0, 1, 3, 4, 5]


@pytest.mark.parametrize("layers", [0, 6, 7])
def test_a_student_as_deep_as_the_teacher_is_refused(layers: int) -> None:
    with pytest.raises(RecipeError, match="between 1 and 5"):
        student_layer_indices(6, layers)


def test_pruning_keeps_at_least_one_unit() -> None:
    assert kept(12, 0.25) == 9
    assert kept(12, 0.9) == 2
    assert kept(1536, 0.5) == 768
    assert kept(1, 0.9) == 1


def test_recipes_that_contradict_themselves_are_rejected_by_the_schema() -> None:
    with pytest.raises(ValidationError, match="fp16 needs a GPU backend"):
        OptimizationRecipe(backend="onnxruntime", precision="fp16")
    with pytest.raises(ValidationError, match="static int8 quantization"):
        OptimizationRecipe.model_validate(
            {"backend": "torch", "precision": "int8", "quantization": {"mode": "static"}}
        )


@pytest.mark.skipif(build.tensorrt_available(), reason="this machine can build TensorRT engines")
def test_tensorrt_without_tensorrt_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="tensorrt package and a CUDA GPU"):
        build.check_recipe(OptimizationRecipe(backend="tensorrt", precision="int8"), "tensorrt")
    assert build.concrete_backend(OptimizationRecipe(backend="auto")) == "onnxruntime"


@pytest.mark.skipif(build.cuda_available(), reason="this machine has a GPU")
def test_fp16_torch_needs_a_gpu() -> None:
    with pytest.raises(RecipeError, match="needs a CUDA GPU"):
        build.check_recipe(OptimizationRecipe(backend="torch", precision="fp16"), "torch")


def test_gate_passes_within_the_allowed_drop() -> None:
    report = judge(QualityGate(max_drop=0.02), REFERENCE, {**REFERENCE, "ndcg@10": 0.385}, "tiny")
    assert report.passed
    assert report.drop == pytest.approx(0.015)
    assert "PASSED" in report.table()


def test_gate_fails_on_quality_and_on_latency_with_both_reasons() -> None:
    gate = QualityGate(metric="auc", max_drop=0.01, max_p99_latency_ms=5.0)
    report = judge(gate, REFERENCE, {**REFERENCE, "auc": 0.70}, "tiny")
    assert not report.passed
    assert report.failures == [
        "auc dropped 0.1000 > maxDrop 0.01",
        "p99 latency at maxBatchSize 10.0 ms > maxP99LatencyMs 5.0",
    ]
    assert "FAILED" in report.table()


def test_gate_fails_on_nan_scores() -> None:
    report = judge(QualityGate(), REFERENCE, {**REFERENCE, "ndcg@10": float("nan")}, "tiny")
    assert report.failures == ["ndcg@10 is not finite: the engine produces NaN or inf scores"]


def test_report_round_trips_through_json(tmp_path) -> None:
    report = judge(QualityGate(), REFERENCE, {**REFERENCE, "ndcg@10": 0.39}, "users=3")
    report.write(tmp_path / "report.json")
    again = GateReport.read(tmp_path / "report.json")
    assert again.to_dict() == report.to_dict()


def test_fgm_perturbs_embeddings_uphill_and_then_removes_itself() -> None:
    import torch
    from torch import nn

    from recserve_serving.train import _FGM

    torch.manual_seed(0)
    embeddings, head = nn.Embedding(10, 4), nn.Linear(4, 1)
    embeddings.weight.requires_grad_(False)  # training freezes them; FGM must still work
    tokens, target = torch.tensor([[1, 2, 3]]), torch.tensor([1.0])

    def loss() -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            head(embeddings(tokens).mean(1)).squeeze(-1), target
        )

    fgm = _FGM(embeddings, epsilon=0.5)
    clean = loss()
    clean.backward()
    adversarial = fgm.adversarial_loss(loss)
    assert adversarial is not None and float(adversarial) > float(clean)
    fgm.handle.remove()
    assert float(loss()) == pytest.approx(float(clean))
