"""The generated CRD: in step with the models, structural, and carrying its CEL rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from recserve_operator.api import crd
from recserve_operator.api.types import RecommenderModelSpec
from recserve_operator.cli import main
from recserve_serving.schema import CamelModel

pytestmark = pytest.mark.unit

Node = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return yaml.safe_load(crd.CRD_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema(committed: dict[str, Any]) -> dict[str, Any]:
    return committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[Node]:
    """Every schema node, with a readable path."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from nodes(prop, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def rules(node: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


def test_committed_crd_matches_the_models() -> None:
    assert crd.drift() == "", "run `python -m recserve_operator.api.crd --write`"


def test_check_reports_drift(tmp_path: Path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.render().replace("maxLength: 40", "maxLength: 41"), encoding="utf-8")
    assert "maxLength: 41" in crd.drift(stale)
    assert crd.drift(tmp_path / "absent.yaml") != ""


def test_cli_check_passes_on_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd", "--check"]) == 0
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd.render()


def test_every_node_is_typed(schema: dict[str, Any]) -> None:
    for path, node in nodes(schema):
        typed = (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
        assert typed, f"{path or '<root>'} has no type"


@pytest.mark.parametrize(
    "keyword",
    ["$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title", "nullable", "discriminator"],
)
def test_no_non_structural_keywords(schema: dict[str, Any], keyword: str) -> None:
    offenders = [path for path, node in nodes(schema) if keyword in node]
    assert offenders == []


def test_objects_prune_instead_of_forbidding(schema: dict[str, Any]) -> None:
    for path, node in nodes(schema):
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}.{bound} must be a boolean"


def test_no_preserve_unknown_fields_needed(schema: dict[str, Any]) -> None:
    assert [p for p, n in nodes(schema) if n.get("x-kubernetes-preserve-unknown-fields")] == []


def test_resource_shape(committed: dict[str, Any]) -> None:
    assert committed["apiVersion"] == "apiextensions.k8s.io/v1"
    assert committed["metadata"]["name"] == "recommendermodels.recserve.dev"
    assert committed["spec"]["scope"] == "Namespaced"
    version = committed["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Stable": ".status.stable.version",
        "Canary": ".status.canary.weight",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Age": ".metadata.creationTimestamp",
    }


def test_bounds_and_enums(schema: dict[str, Any]) -> None:
    weight = at(schema, "spec.rollout.canary.steps.[].weight")
    assert (weight["type"], weight["minimum"], weight["maximum"]) == ("integer", 1, 100)
    assert at(schema, "spec.optimization.backend")["enum"] == ["auto", "onnxruntime", "torch", "tensorrt"]
    assert at(schema, "spec.task")["enum"] == ["ranking"]
    target = at(schema, "spec.serving.autoscaling.targetOngoingRequests")
    assert (target["minimum"], target["exclusiveMinimum"]) == (0, True)
    assert at(schema, "spec.checkpoint")["required"] == ["uri"]
    assert "pattern" in at(schema, "spec.checkpoint.uri")
    assert at(schema, "status.conditions")["x-kubernetes-list-map-keys"] == ["type"]


def test_defaults_in_spec_equal_the_models_defaults(schema: dict[str, Any]) -> None:
    spec = RecommenderModelSpec.model_validate({"checkpoint": {"uri": "models:/m/1"}})
    assert at(schema, "spec.serving")["default"] == spec.serving.to_dict()
    assert at(schema, "spec.optimization")["default"] == spec.optimization.to_dict()
    assert at(schema, "spec.serving.autoscaling.minReplicas")["default"] == 1
    assert at(schema, "spec.rollout.canary.stickyBy")["default"] == "user_id"


def test_status_carries_no_defaults(schema: dict[str, Any]) -> None:
    assert [p for p, n in nodes(at(schema, "status")) if "default" in n] == []


def test_cross_field_rules_are_present(schema: dict[str, Any]) -> None:
    assert "self.minReplicas <= self.maxReplicas" in rules(at(schema, "spec.serving.autoscaling"))
    steps = rules(at(schema, "spec.rollout.canary.steps"))
    assert any("isSorted()" in r and "exists_one" in r for r in steps)
    assert any("duration(self.pause)" in r for r in rules(at(schema, "spec.rollout.canary.steps.[]")))
    assert any("has(self.maxErrorRate)" in r for r in rules(at(schema, "spec.rollout.canary.analysis")))
    assert any("self.defaultK <= self.maxK" in r for r in rules(at(schema, "spec.serving.retrieval")))
    spec_rules = rules(at(schema, "spec"))
    assert "self.serving.batching.maxBatchSize <= self.optimization.maxBatchSize" in spec_rules
    assert any("self.rollout.canary.checkpoint.uri != self.checkpoint.uri" in r for r in spec_rules)
    assert "self.serving.parallelism.pipeline == 1 || self.optimization.backend == 'torch'" in spec_rules
    assert any("'int8'" in r and "self.serving.resources.gpus == 0.0" in r for r in spec_rules)
    assert rules(at(schema, "spec.serving.parallelism")) == ["self.tensor == 1"]
    recipe = rules(at(schema, "spec.optimization"))
    assert any("'fp16'" in r and "'onnxruntime'" in r for r in recipe)
    assert "self.precision != 'bf16' || self.backend == 'torch'" in recipe
    assert rules(at(schema, "spec.rollout.canary.optimization")) == recipe


def test_diversity_and_gate_minimums_carry_their_rules(schema: dict[str, Any]) -> None:
    retrieval = rules(at(schema, "spec.serving.retrieval"))
    assert (
        "!has(self.diversity) || !has(self.diversity.pool) || self.diversity.pool >= self.maxK" in retrieval
    )
    assert at(schema, "spec.serving.retrieval.diversity")["required"] == ["lambda"]
    gate = at(schema, "spec.optimization.qualityGate")
    assert any("exists_one" in r for r in rules(gate)), "one min per metric"
    assert any("'novelty'" in r for r in rules(at(schema, "spec.optimization.qualityGate.minimums.[]")))


def test_every_rule_has_a_message(schema: dict[str, Any]) -> None:
    for path, node in nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: {rule['rule']}"


def test_unions_are_refused() -> None:
    class Either(CamelModel):
        value: int | str

    source = Either.model_json_schema(by_alias=True)
    converter = crd._Converter({}, keep_defaults=True)
    with pytest.raises(crd.SchemaConversionError, match="union of 2 types"):
        converter.convert(source, "either")


def test_unknown_keywords_are_refused() -> None:
    converter = crd._Converter({}, keep_defaults=True)
    with pytest.raises(crd.SchemaConversionError, match="uniqueItems"):
        converter.convert({"type": "array", "uniqueItems": True, "items": {"type": "string"}}, "x")
