"""The RecommenderModel models: defaults, bounds, cross-field rules and their field paths."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from recserve_operator.api.problems import problems_from_error
from recserve_operator.api.status import READY, Condition, RecommenderModelStatus
from recserve_operator.api.types import (
    CheckpointRef,
    RecommenderModel,
    RecommenderModelSpec,
    duration_seconds,
)
from recserve_operator.validate import check_document, load_model
from recserve_serving.serving_spec import ServingSpec, quantity_bytes
from recserve_serving.uri_paths import UNSAFE_PATH_CEL, path_problem

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "recserve.dev/v1alpha1",
        "kind": "RecommenderModel",
        "metadata": {"name": "m"},
        "spec": {"checkpoint": {"uri": "models:/m/1"}},
    }


def with_spec(**spec: Any) -> dict[str, Any]:
    doc = minimal()
    doc["spec"].update(spec)
    return doc


def paths(doc: dict[str, Any]) -> dict[str, str]:
    model, problems = check_document(doc)
    assert model is None, "expected the document to be invalid"
    return {p.path: p.message for p in problems}


def test_examples_load_with_their_intent() -> None:
    cpu = load_model(EXAMPLES / "movielens-ranker.yaml")
    assert cpu.metadata.name == "movielens-ranker"
    assert cpu.spec.checkpoint.uri == "models:/movielens-ranker/1"
    assert (cpu.spec.optimization.backend, cpu.spec.optimization.precision) == ("onnxruntime", "int8")
    assert (cpu.spec.serving.autoscaling.min_replicas, cpu.spec.serving.autoscaling.max_replicas) == (1, 2)
    assert cpu.spec.rollout.canary is None

    canary = load_model(EXAMPLES / "movielens-ranker-canary.yaml").spec.rollout.canary
    assert canary is not None
    assert canary.checkpoint.uri == "models:/movielens-ranker/2"
    assert [s.weight for s in canary.steps] == [5, 25, 50]
    assert canary.steps[0].pause_seconds == 30

    gpu = load_model(EXAMPLES / "movielens-ranker-gpu.yaml").spec
    assert (gpu.optimization.backend, gpu.optimization.precision) == ("torch", "fp16")
    assert gpu.serving.resources.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert gpu.serving.parallelism.shards == 2


def test_minimal_spec_gets_every_default() -> None:
    model, problems = check_document(minimal())
    assert problems == []
    assert model is not None
    spec = model.spec
    assert spec.task == "ranking"
    assert spec.optimization.backend == "auto"
    assert spec.serving == ServingSpec()
    assert spec.serving.autoscaling.target_ongoing_requests == 2.0
    assert spec.serving.retrieval.default_k == 10
    assert spec.rollout.canary is None
    assert model.status is None


def test_to_dict_round_trips_in_camel_case() -> None:
    model = load_model(EXAMPLES / "movielens-ranker-canary.yaml")
    data = model.to_dict()
    assert data["spec"]["serving"]["autoscaling"]["minReplicas"] == 1
    assert data["spec"]["rollout"]["canary"]["steps"][1] == {"weight": 25, "pause": "30s"}
    assert RecommenderModel.model_validate(data) == model


@pytest.mark.parametrize(
    "uri",
    [
        "models:/movielens-ranker/1",
        "models:/movielens-ranker@champion",
        "models:/a.b_c-d/123456789",
        "file:///srv/checkpoints/ranker",
        "pvc://models/ranker/v3",
        "pvc://models",
        "pvc://models/ranker/v3/",
        "file:///srv/ranker.v3/.cache",
    ],
)
def test_checkpoint_uris_accepted(uri: str) -> None:
    assert CheckpointRef(uri=uri).uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "models:/ranker",
        "models:/ranker/0",
        "models:/ranker/latest",
        "models:/ranker@",
        "file://relative/path",
        "pvc://Bad_Claim/x",
        "s3://b/x",
        "http://example.com/model",
        "",
    ],
)
def test_checkpoint_uris_refused(uri: str) -> None:
    found = paths(with_spec(checkpoint={"uri": uri}))
    assert "models:/NAME/VERSION" in found["spec.checkpoint.uri"]


def test_checkpoint_scheme() -> None:
    assert CheckpointRef(uri="models:/m@champion").scheme == "models"
    assert CheckpointRef(uri="pvc://claim/prefix").scheme == "pvc"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("pvc://claim/../../x", "'..' path segments"),
        ("pvc://claim/a/./b", "'.' or '..' path segments"),
        ("file:///srv/../etc", "'..' path segments"),
        ("pvc://claim/%2e%2e/x", "percent-encode"),
        ("pvc://claim/a%2Fb", "percent-encode"),
        ("pvc://claim//etc", "empty path segments"),
        ("file:////etc", "empty path segments"),
    ],
)
def test_a_checkpoint_path_that_escapes_its_claim_is_refused(uri: str, says: str) -> None:
    found = paths(with_spec(checkpoint={"uri": uri}))
    assert says in found["spec.checkpoint.uri"]


def test_s3_checkpoints_are_refused_with_what_is_supported() -> None:
    found = paths(with_spec(checkpoint={"uri": "s3://ml-artifacts/rankers/v3"}))
    message = found["spec.checkpoint.uri"]
    assert "s3:// checkpoints are not supported" in message
    assert "models:/NAME/VERSION" in message and "pvc://CLAIM/PATH" in message


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://claim/../../x",
        "pvc://claim/..",
        "pvc://claim/a/./b",
        "pvc://claim/%2e%2e/x",
        "pvc://claim//etc",
        "pvc://claim/a//",
        "file:///srv/../etc",
        "file:////etc",
        "pvc://claim/a/b",
        "pvc://claim/a/b/",
        "pvc://claim",
        "pvc://claim/.hidden/..x/x..",
        "file:///srv/ranker.v3",
        "models:/m/1",
    ],
)
def test_the_crd_rule_refuses_exactly_the_paths_validation_refuses(uri: str) -> None:
    """The CEL twin is RE2 ``matches``; Python's ``re.search`` agrees on these patterns."""
    patterns = re.findall(r"matches\('([^']*)'\)", UNSAFE_PATH_CEL)
    assert len(patterns) == 2
    assert any(re.search(p, uri) for p in patterns) == (path_problem(uri) is not None)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2m", 120), ("1h", 3600), ("1h30m", 5400)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "expected"), [("512Mi", 512 * 2**20), ("8Gi", 8 * 2**30), ("1.5G", 1_500_000_000)]
)
def test_memory_quantities(text: str, expected: int) -> None:
    assert quantity_bytes(text) == expected


def test_max_ongoing_requests_fills_a_batch_when_unset() -> None:
    serving = ServingSpec.model_validate({"batching": {"maxBatchSize": 48}})
    assert serving.max_ongoing_requests == 48
    explicit = ServingSpec.model_validate({"autoscaling": {"maxOngoingRequests": 64}})
    assert explicit.max_ongoing_requests == 64


CANARY = {
    "checkpoint": {"uri": "models:/m/2"},
    "steps": [{"weight": 5, "pause": "1m"}, {"weight": 50, "pause": "1m"}],
    "analysis": {"maxErrorRate": 0.01},
}


def canary(**changes: Any) -> dict[str, Any]:
    return {"canary": {**copy.deepcopy(CANARY), **changes}}


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        (
            {"serving": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}},
            "spec.serving.autoscaling.minReplicas",
            "must be <= maxReplicas (got 5 > 3)",
        ),
        (
            {"serving": {"autoscaling": {"maxReplicas": 3, "initialReplicas": 4}}},
            "spec.serving.autoscaling.initialReplicas",
            "within minReplicas..maxReplicas (1..3, got 4)",
        ),
        (
            {"serving": {"autoscaling": {"targetOngoingRequests": 64, "maxOngoingRequests": 32}}},
            "spec.serving.autoscaling.targetOngoingRequests",
            "must be <= maxOngoingRequests",
        ),
        (
            {"serving": {"autoscaling": {"maxOngoingRequests": 8}}},
            "spec.serving.autoscaling.maxOngoingRequests",
            "must be >= batching.maxBatchSize (got 8 < 32)",
        ),
        (
            {"serving": {"resources": {"gpus": 1.5}}},
            "spec.serving.resources.gpus",
            "fraction <= 1 or a whole number",
        ),
        (
            {"serving": {"resources": {"gpuProduct": "NVIDIA-A100"}}},
            "spec.serving.resources.gpuProduct",
            "needs gpus > 0",
        ),
        (
            {"serving": {"parallelism": {"pipeline": 2}, "resources": {"gpus": 0.5}}},
            "spec.serving.parallelism",
            "need whole GPUs per shard",
        ),
        (
            {"serving": {"retrieval": {"defaultK": 50, "maxK": 20}}},
            "spec.serving.retrieval.defaultK",
            "must be <= maxK (got 50 > 20)",
        ),
        (
            {"serving": {"retrieval": {"candidates": 50}}},
            "spec.serving.retrieval.maxK",
            "must be <= candidates (got 100 > 50)",
        ),
        (
            {"optimization": {"maxBatchSize": 16}},
            "spec.serving.batching.maxBatchSize",
            "must be <= optimization.maxBatchSize",
        ),
        ({"optimization": {"backend": "tensorrt"}}, "spec.optimization.backend", "tensorrt runs on GPUs"),
        ({"optimization": {"precision": "fp16"}}, "spec.optimization.precision", "fp16 runs on GPUs"),
        (
            {"rollout": canary(steps=[{"weight": 50, "pause": "1m"}, {"weight": 25, "pause": "1m"}])},
            "spec.rollout.canary.steps[1].weight",
            "must be > steps[0].weight",
        ),
        (
            {"rollout": canary(steps=[{"weight": 5, "pause": "1m"}, {"weight": 5, "pause": "1m"}])},
            "spec.rollout.canary.steps[1].weight",
            "strictly increase (got 5 after 5)",
        ),
        (
            {"rollout": canary(steps=[{"weight": 101, "pause": "1m"}])},
            "spec.rollout.canary.steps[0].weight",
            "must be <= 100",
        ),
        (
            {"rollout": canary(steps=[{"weight": 0, "pause": "1m"}])},
            "spec.rollout.canary.steps[0].weight",
            "must be >= 1",
        ),
        ({"rollout": canary(steps=[])}, "spec.rollout.canary.steps", "at least 1 item"),
        (
            {"rollout": canary(steps=[{"weight": 5, "pause": "25h"}])},
            "spec.rollout.canary.steps[0].pause",
            "must be <= 24h",
        ),
        (
            {"rollout": canary(progressDeadline="25h")},
            "spec.rollout.canary.progressDeadline",
            "must be <= 24h",
        ),
        (
            {"rollout": canary(progressDeadline="soon")},
            "spec.rollout.canary.progressDeadline",
            "a duration such as 30s",
        ),
        (
            {"rollout": canary(steps=[{"weight": 5, "pause": "2 minutes"}])},
            "spec.rollout.canary.steps[0].pause",
            "a duration such as 30s",
        ),
        (
            {"rollout": canary(analysis={"minRequests": 10})},
            "spec.rollout.canary.analysis",
            "needs at least one of maxErrorRate",
        ),
        (
            {"rollout": canary(checkpoint={"uri": "models:/m/1"})},
            "spec.rollout.canary.checkpoint.uri",
            "must differ from spec.checkpoint.uri",
        ),
        (
            {"rollout": canary(optimization={"backend": "tensorrt"})},
            "spec.rollout.canary.optimization.backend",
            "tensorrt runs on GPUs",
        ),
        (
            {"rollout": canary(stickyBy="session")},
            "spec.rollout.canary.stickyBy",
            "must be one of 'user_id' or 'none' (got 'session')",
        ),
        ({"task": "retrieval"}, "spec.task", "must be 'ranking'"),
        (
            {"optimization": {"backend": "onnxruntime", "precision": "fp16"}},
            "spec.optimization",
            "fp16 needs a GPU backend",
        ),
    ],
)
def test_rule_violations_name_the_field(spec: dict[str, Any], path: str, fragment: str) -> None:
    found = paths(with_spec(**spec))
    assert path in found, found
    assert fragment in found[path]


def test_a_canary_of_the_same_checkpoint_with_its_own_recipe_is_allowed() -> None:
    model, problems = check_document(
        with_spec(rollout=canary(checkpoint={"uri": "models:/m/1"}, optimization={"precision": "fp32"}))
    )
    assert problems == []
    assert model is not None
    assert model.spec.canary_recipe is not None
    assert model.spec.canary_recipe.precision == "fp32"


def test_types_are_strict_as_in_the_api_server() -> None:
    found = paths(with_spec(serving={"autoscaling": {"minReplicas": "2"}}))
    assert found["spec.serving.autoscaling.minReplicas"] == "must be an integer (got '2')"


def test_unknown_fields_suggest_the_closest_name() -> None:
    found = paths(with_spec(serving={"autoscaling": {"minReplica": 2}}))
    message = found["spec.serving.autoscaling.minReplica"]
    assert message.startswith("unknown field; did you mean minReplicas? allowed: minReplicas, maxReplicas")


def test_metadata_name_is_a_short_dns_label() -> None:
    doc = minimal()
    doc["metadata"]["name"] = "x" * 41
    assert "at most 40 characters" in paths(doc)["metadata.name"]
    doc["metadata"] = {}
    assert paths(doc)["metadata.name"] == "required (or generateName)"


def test_status_round_trip_and_condition_lookup() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = RecommenderModelStatus(
        observed_generation=3,
        phase="Progressing",
        conditions=[Condition(type=READY, status="True", reason="Serving", last_transition_time=now)],
    )
    data = status.to_dict()
    assert data["conditions"][0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    again = RecommenderModelStatus.model_validate(data)
    assert again == status
    ready = again.condition(READY)
    assert ready is not None
    assert ready.status == "True"
    assert again.condition("Stalled") is None


def test_condition_types_are_unique() -> None:
    now = datetime.now(UTC)
    ready = {"type": READY, "status": "True", "reason": "Serving", "lastTransitionTime": now}
    with pytest.raises(ValidationError) as caught:
        RecommenderModelStatus.model_validate({"conditions": [ready, ready]})
    problems = problems_from_error(caught.value, RecommenderModelStatus)
    assert problems[0].path == "conditions"
    assert "appears twice" in problems[0].message


def test_spec_is_frozen() -> None:
    spec = RecommenderModelSpec(checkpoint=CheckpointRef(uri="models:/m/1"))
    with pytest.raises(ValidationError):
        spec.task = "ranking"


@pytest.mark.parametrize(
    ("placement", "path", "words"),
    [
        (
            {"tolerations": [{"key": "pool", "operator": "Exists", "value": "x"}]},
            "tolerations[0].value",
            "takes no value",
        ),
        ({"tolerations": [{"value": "x"}]}, "tolerations[0].key", "needs a key"),
        (
            {"tolerations": [{"key": "pool", "tolerationSeconds": 5}]},
            "tolerations[0].tolerationSeconds",
            "NoExecute only (effect is unset)",
        ),
        ({"nodeSelector": {"not a key": "x"}}, "", "not a Kubernetes label key"),
        ({"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}, "", "spec.serving.resources.gpuProduct"),
        ({"nodeSelector": {"pool": "-bad-"}}, "nodeSelector.pool", "label value"),
    ],
)
def test_placement_refuses_what_kubernetes_would(placement: dict[str, Any], path: str, words: str) -> None:
    found = paths(with_spec(placement=placement))
    (where, message), *_ = found.items()
    assert where.startswith(f"spec.placement.{path}".rstrip(".")), found
    assert words in message, found


def test_placement_keeps_kubernetes_spelling_in_pod_specs() -> None:
    doc = with_spec(
        placement={"tolerations": [{"key": "pool", "operator": "Exists", "effect": "NoSchedule"}]}
    )
    model, problems = check_document(doc)
    assert model is not None, problems
    assert [t.manifest() for t in model.spec.placement.tolerations] == [
        {"key": "pool", "operator": "Exists", "effect": "NoSchedule"}
    ]
