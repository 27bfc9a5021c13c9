"""Recipe consistency, student layer choice, pruning arithmetic and gate verdicts (pure logic)."""

from __future__ import annotations

import json

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
    gate = QualityGate.model_validate({"minimums": [{"metric": "diversity", "min": 0.5}]})
    report = judge(gate, REFERENCE, {**REFERENCE, "ndcg@10": 0.39, "diversity": 0.6}, "users=3")
    report.write(tmp_path / "report.json")
    again = GateReport.read(tmp_path / "report.json")
    assert again.to_dict() == report.to_dict()
    assert again.minimums == {"diversity": 0.5}


def test_a_report_written_before_minimums_reads_as_having_none(tmp_path) -> None:
    path = tmp_path / "report.json"
    report = judge(QualityGate(), REFERENCE, REFERENCE, "users=3")
    old = report.to_dict()
    del old["minimums"]
    path.write_text(json.dumps(old))
    assert GateReport.read(path).minimums == {}


DIVERSE = {**REFERENCE, "diversity": 0.55, "coverage": 0.3}


def diversity_gate(minimum: float) -> QualityGate:
    return QualityGate.model_validate(
        {"metric": "ndcg@10", "maxDrop": 0.02, "minimums": [{"metric": "diversity", "min": minimum}]}
    )


def test_gate_fails_when_diversity_is_below_its_minimum_even_if_ndcg_holds() -> None:
    report = judge(diversity_gate(0.6), DIVERSE, DIVERSE, "tiny")
    assert report.failures == ["diversity 0.5500 < minimum 0.6 (qualityGate.minimums)"]
    assert "minimum diversity >= 0.6: engine 0.5500, FAILED" in report.table()


def test_gate_passes_when_ndcg_drop_and_diversity_minimum_both_hold() -> None:
    report = judge(diversity_gate(0.5), DIVERSE, {**DIVERSE, "ndcg@10": 0.39}, "tiny")
    assert report.passed, report.failures
    assert "minimum diversity >= 0.5: engine 0.5500, ok" in report.table()


def test_a_minimum_the_evaluation_did_not_produce_fails_rather_than_passes() -> None:
    gate = QualityGate.model_validate({"minimums": [{"metric": "novelty", "min": 3}]})
    report = judge(gate, REFERENCE, REFERENCE, "tiny")
    assert report.failures == ["novelty is missing from the engine's metrics, so minimum 3 cannot be checked"]


def test_coverage_can_be_the_drop_metric() -> None:
    report = judge(QualityGate(metric="coverage", max_drop=0.05), DIVERSE, {**DIVERSE, "coverage": 0.2}, "t")
    assert report.failures == ["coverage dropped 0.1000 > maxDrop 0.05"]


def test_minimums_are_checked_by_the_schema() -> None:
    with pytest.raises(ValidationError, match=r"min of diversity must be within 0\.\.1"):
        QualityGate.model_validate({"minimums": [{"metric": "diversity", "min": 2}]})
    with pytest.raises(ValidationError, match="diversity listed more than once"):
        QualityGate.model_validate(
            {"minimums": [{"metric": "diversity", "min": 0.2}, {"metric": "diversity", "min": 0.3}]}
        )
    with pytest.raises(ValidationError, match="metric"):
        QualityGate.model_validate({"minimums": [{"metric": "serendipity", "min": 0.2}]})
    assert QualityGate.model_validate({"minimums": [{"metric": "novelty", "min": 9.5}]}).to_dict()[
        "minimums"
    ] == [{"metric": "novelty", "min": 9.5}]


def test_an_unset_minimums_leaves_the_recipe_key_unchanged() -> None:
    assert "minimums" not in OptimizationRecipe().to_dict(), "existing engines keep their cache keys"


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


def test_served_ndcg_needs_the_users_it_is_scored_on() -> None:
    from pydantic import ValidationError

    from recserve_serving.recipe import QualityGate

    with pytest.raises(ValidationError, match="served_ndcg@10 needs servedUsers"):
        QualityGate.model_validate({"metric": "served_ndcg@10"})
    with pytest.raises(ValidationError, match="served_ndcg@10 needs servedUsers"):
        QualityGate.model_validate({"minimums": [{"metric": "served_ndcg@10", "min": 0.05}]})
    gate = QualityGate.model_validate({"metric": "served_ndcg@10", "servedUsers": 60})
    assert gate.served_users == 60 and "servedUsers" not in QualityGate().to_dict()
