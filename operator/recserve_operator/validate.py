"""Read RecommenderModel manifests and say precisely what is wrong with them.

Manifests are checked as the API server would see them: YAML becomes JSON first and is then
validated strictly, so ``minReplicas: "2"`` is refused here just as ``kubectl apply``
refuses it, instead of being quietly coerced. Every problem is collected, not just the
first, so one run shows all that needs fixing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from recserve_operator.api.problems import FieldProblem, problems_from_error
from recserve_operator.api.types import RecommenderModel
from recserve_serving.errors import InvalidRequest

STDIN = "-"


class ManifestError(InvalidRequest):
    """A manifest cannot be used; the message is the first problem and how many follow."""

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        more = len(problems) - 1
        suffix = f" (and {more} more; run `recserve validate` to list them)" if more else ""
        super().__init__(f"{problems[0]}{suffix}")


@dataclass(frozen=True)
class ManifestProblem:
    """A problem located by file, document (when a file holds several) and field path."""

    source: str
    problem: FieldProblem

    def __str__(self) -> str:
        if self.problem.path:
            return f"{self.source} {self.problem}"
        return f"{self.source}: {self.problem.message}"


@dataclass
class Report:
    models: list[RecommenderModel] = field(default_factory=list)
    problems: list[ManifestProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, which PyYAML would silently collapse to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"a YAML {type(value).__name__} has no JSON form")


def check_document(document: Any) -> tuple[RecommenderModel | None, list[FieldProblem]]:
    """Validate one parsed document as the API server receives it (JSON, strict types)."""
    if not isinstance(document, Mapping):
        return None, [FieldProblem("", f"document must be a mapping (got {type(document).__name__})")]
    try:
        text = json.dumps(document, default=_json_value)
    except (TypeError, ValueError) as error:
        return None, [FieldProblem("", f"not representable as JSON: {error}")]
    try:
        return RecommenderModel.model_validate_json(text, strict=True), []
    except ValidationError as error:
        return None, problems_from_error(error, RecommenderModel)


def _read(path: str) -> str:
    if path == STDIN:
        return sys.stdin.read()
    return Path(path).read_text(encoding="utf-8")


def _file_problem(path: str, message: str) -> ManifestProblem:
    return ManifestProblem(path, FieldProblem("", message))


def check_file(path: str, report: Report) -> None:
    label = "<stdin>" if path == STDIN else path
    try:
        text = _read(path)
    except FileNotFoundError:
        report.problems.append(_file_problem(label, "no such file"))
        return
    except IsADirectoryError:
        report.problems.append(_file_problem(label, "is a directory, not a manifest file"))
        return
    except UnicodeDecodeError:
        report.problems.append(_file_problem(label, "is not UTF-8 text"))
        return
    except OSError as error:
        report.problems.append(_file_problem(label, f"cannot be read: {error.strerror}"))
        return
    try:
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as error:
        report.problems.append(_file_problem(label, _yaml_message(error)))
        return
    if not documents:
        report.problems.append(_file_problem(label, "holds no YAML document"))
        return
    for number, document in enumerate(documents, start=1):
        source = f"{label}:doc {number}" if len(documents) > 1 else label
        model, problems = check_document(document)
        if model is not None:
            report.models.append(model)
        report.problems.extend(ManifestProblem(source, p) for p in problems)


def _yaml_message(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    return f"invalid YAML: {error}"


def validate_files(paths: Iterable[str]) -> Report:
    """All RecommenderModels found and all problems, in file and document order."""
    report = Report()
    for path in paths:
        check_file(str(path), report)
    return report


def load_models(path: str | Path) -> list[RecommenderModel]:
    """Every RecommenderModel in a manifest file; ``ManifestError`` if anything is wrong."""
    report = validate_files([str(path)])
    if report.problems:
        raise ManifestError(report.problems)
    return report.models


def load_model(path: str | Path) -> RecommenderModel:
    """The one RecommenderModel of a manifest file, as ``recserve up`` needs it."""
    models = load_models(path)
    if len(models) != 1:
        message = f"holds {len(models)} RecommenderModels; give a file with exactly one"
        raise ManifestError([_file_problem(str(path), message)])
    return models[0]
