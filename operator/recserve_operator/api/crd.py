"""Generate the RecommenderModel CRD from the pydantic models, so the two cannot disagree.

Pydantic emits JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3
schema: no ``$ref``, a ``type`` on every node, no unions, no ``additionalProperties: false``
beside ``properties`` (pruning drops unknown fields instead), boolean ``exclusiveMinimum``.
The conversion below is strict: a construct it cannot translate faithfully is an error,
not a silently looser schema.

    python -m recserve_operator.api.crd            # print
    python -m recserve_operator.api.crd --write    # update the committed file
    python -m recserve_operator.api.crd --check    # exit 1 if the committed file drifted
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from recserve_operator.api import types
from recserve_serving.spec_rules import CEL_KEY

CRD_PATH = Path(__file__).resolve().parents[3] / "manifests" / "crds" / f"{types.GROUP}_{types.PLURAL}.yaml"

HEADER = (
    "# Generated from recserve_operator.api.types by `python -m recserve_operator.api.crd --write`.\n"
    "# Do not edit: change the models and regenerate (a unit test fails on drift).\n"
)

_PASSTHROUGH = (
    "type",
    "description",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
)
_KEY_ORDER = (
    "type",
    "description",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    CEL_KEY,
)
_RULE_ORDER = ("rule", "message", "fieldPath")
_DROPPED = ("title",)
_PYTHON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Stable",
        "type": "string",
        "description": "Registry version of the stable checkpoint",
        "jsonPath": ".status.stable.version",
    },
    {
        "name": "Canary",
        "type": "integer",
        "description": "Percent of traffic on the canary",
        "jsonPath": ".status.canary.weight",
    },
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class SchemaConversionError(Exception):
    """The models use a construct that has no faithful structural-schema form."""


class _Converter:
    def __init__(self, defs: dict[str, Any], keep_defaults: bool) -> None:
        self.defs = defs
        self.keep_defaults = keep_defaults

    def convert(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        node = self._resolve(node, path)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _PASSTHROUGH:
                out[key] = copy.deepcopy(value)
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                out[bound] = value
                out[key] = True
            elif key == "default":
                if self.keep_defaults and value is not None:
                    out["default"] = _without_nulls(value)
            elif key == "properties":
                out[key] = {name: self.convert(prop, f"{path}.{name}") for name, prop in value.items()}
            elif key == "items":
                out[key] = self.convert(value, f"{path}[]")
            elif key == "additionalProperties":
                if isinstance(value, dict):
                    out[key] = self.convert(value, f"{path}{{}}")
                elif value is not False:
                    raise SchemaConversionError(f"{path}: additionalProperties {value!r} is not structural")
            elif key == CEL_KEY:
                out[key] = [{k: rule[k] for k in _RULE_ORDER if k in rule} for rule in value]
            elif key.startswith("x-kubernetes-"):
                out[key] = copy.deepcopy(value)
            elif key not in _DROPPED:
                raise SchemaConversionError(f"{path}: JSON Schema keyword {key!r} has no CRD translation")
        if "type" not in out:
            out["type"] = _enum_type(out.get("enum"), path)
        return {key: out[key] for key in sorted(out, key=_KEY_ORDER.index)}

    def _resolve(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        """Inline ``$ref`` and collapse ``X | None``; sibling keys (description, default) win."""
        node = dict(node)
        if "$ref" in node:
            target = self.defs[node.pop("$ref").rsplit("/", 1)[-1]]
            return self._resolve({**target, **node}, path)
        if "anyOf" in node:
            branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
            if len(branches) != 1:
                raise SchemaConversionError(f"{path}: a union of {len(branches)} types is not structural")
            return self._resolve({**branches[0], **node}, path)
        return node


def _enum_type(values: list[Any] | None, path: str) -> str:
    kinds = {_PYTHON_TYPES.get(type(v)) for v in values or []}
    if len(kinds) != 1 or None in kinds:
        raise SchemaConversionError(f"{path}: cannot infer one type for this node")
    return str(kinds.pop())


def _without_nulls(value: Any) -> Any:
    """The API server prunes nulls of non-nullable fields, so a default carries none.

    Object defaults stay whole rather than ``{}``: the API server checks each default against
    the CEL rules as written, without first applying the nested defaults.
    """
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _status_schema(defs: dict[str, Any], status_ref: dict[str, Any]) -> dict[str, Any]:
    return _Converter(defs, keep_defaults=False).convert(status_ref, "status")


def _add_foreign_rules(defs: dict[str, Any]) -> None:
    for model, rules in types.EXTRA_CEL_RULES.items():
        target = defs[model.__name__]
        target.setdefault(CEL_KEY, []).extend(rule.to_schema() for rule in rules)


def openapi_schema() -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of RecommenderModel."""
    source = types.RecommenderModel.model_json_schema(by_alias=True, mode="validation")
    defs = copy.deepcopy(source["$defs"])
    _add_foreign_rules(defs)
    props = source["properties"]
    return {
        "type": "object",
        "description": types.RecommenderModel.__doc__,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "description": types.NAME_DESCRIPTION,
                        "maxLength": types.MAX_NAME_LENGTH,
                        "pattern": types.NAME_PATTERN,
                    }
                },
            },
            "spec": _Converter(defs, keep_defaults=True).convert(props["spec"], "spec"),
            "status": _status_schema(defs, props["status"]),
        },
        "required": ["spec"],
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{types.PLURAL}.{types.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "recserve"},
        },
        "spec": {
            "group": types.GROUP,
            "names": {
                "kind": types.KIND,
                "listKind": f"{types.KIND}List",
                "plural": types.PLURAL,
                "singular": types.SINGULAR,
                "shortNames": list(types.SHORT_NAMES),
                "categories": ["recserve"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": types.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)


def drift(path: Path = CRD_PATH) -> str:
    """A unified diff from the committed file to the generated one; empty when in step."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            render().splitlines(keepends=True),
            fromfile=str(path),
            tofile="generated",
        )
    )


def write(path: Path = CRD_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {CRD_PATH.name} under manifests/crds")
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed CRD differs")


def run(args: argparse.Namespace) -> int:
    if args.write:
        write()
        print(f"wrote {CRD_PATH}")
        return 0
    if args.check:
        diff = drift()
        if diff:
            sys.stderr.write(diff)
            print(
                f"{CRD_PATH} is out of date: run `python -m recserve_operator.api.crd --write`",
                file=sys.stderr,
            )
            return 1
        return 0
    sys.stdout.write(render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recserve_operator.api.crd", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
