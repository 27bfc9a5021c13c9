"""optimization.search in the operator: spec validation, the build Job, and the status it reports."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from recserve_operator.api.status import EngineStatus
from recserve_operator.commands.build import write_result
from recserve_operator.planners.build_job import build_request, plan_build_job
from recserve_operator.settings import OperatorSettings
from recserve_operator.validate import load_model
from recserve_serving.engine.search import SearchReport, Trial
from recserve_serving.recipe import OptimizationRecipe

pytestmark = pytest.mark.unit
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests/examples/movielens-ranker.yaml"
SETTINGS = OperatorSettings(serving_image="reg/serving:1", builder_image="reg/builder:1")


def searching(search: dict[str, object], **serving: object):
    model = load_model(EXAMPLE)
    raw = model.to_dict()
    raw["spec"]["optimization"] = {**raw["spec"]["optimization"], "search": search}
    raw["spec"]["serving"] = {**raw["spec"]["serving"], **serving}
    return type(model).model_validate(raw)


def test_every_candidate_is_judged_against_the_serving_resources_and_batches():
    with pytest.raises(ValidationError) as caught:
        searching(
            {
                "candidates": [
                    {"precision": "int8"},
                    {"precision": "fp16", "backend": "torch"},
                    {"maxBatchSize": 1},
                ]
            }
        )
    message = str(caught.value)
    assert "optimization.search.candidates.1.precision: fp16 runs on GPUs" in message
    assert "must be <= optimization.search.candidates.2.maxBatchSize" in message


def test_a_searching_build_job_benchmarks_the_replicas_shape_and_is_another_job():
    model = searching({"preset": "cpu"})
    recipe = model.spec.optimization
    request = build_request(model, "stable", "models:/m/1", "d1", recipe, SETTINGS)
    serving = model.spec.serving
    assert request.search_workload == (serving.retrieval.candidates, serving.resources.engine_threads)
    args = plan_build_job(model, request, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["args"]
    workload = args.index("--pairs")
    assert args[workload : workload + 4] == [
        "--pairs",
        str(serving.retrieval.candidates),
        "--threads",
        str(serving.resources.engine_threads),
    ]
    plain = build_request(model, "stable", "models:/m/1", "d1", OptimizationRecipe(), SETTINGS)
    assert (
        plain.search_workload is None
        and "--pairs"
        not in plan_build_job(model, plain, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    wider = searching({"preset": "cpu"}, retrieval={"candidates": 400, "maxK": 100})
    assert build_request(wider, "stable", "models:/m/1", "d1", recipe, SETTINGS).key != request.key


def test_the_search_reaches_status_through_the_termination_message(tmp_path):
    trials = [
        Trial("fp32", passed=True, quality=0.41, drop=0.0, pairs_per_s=812.4),
        Trial(
            "int8 distill=3 prune=0.25/0.25", passed=False, reason="ndcg@10 dropped " + "x" * 300, drop=0.05
        ),
        *[
            Trial(f"int8 seq={n}", passed=True, quality=0.4, drop=0.01, pairs_per_s=900.0 + n)
            for n in range(6)
        ],
    ]
    search = SearchReport.decide("k", "sha256:ab", "ndcg@10", "pairs=200", trials)
    manifest = SimpleNamespace(
        key="k" * 64, backend="onnxruntime", precision="int8", metrics={"size_bytes": 1.0}
    )
    path = tmp_path / "termination-log"
    write_result(path, SimpleNamespace(path=tmp_path / "e", manifest=manifest, search=search))
    assert len(path.read_bytes()) < 4096, "Kubernetes truncates termination messages at 4 KiB"
    status = EngineStatus.model_validate(json.loads(path.read_text())["engine"])
    assert status.search is not None and len(status.search) == 8
    assert status.search[0].pairs_per_s == 812 and status.search[7].chosen
    assert not status.search[1].passed and status.search[1].pairs_per_s is None
