"""Shared machinery for cross-field rules that hold in two places at once.

A constraint on a spec must hold both in pydantic (``recserve validate``, the webhook, the
local ``up``) and in the API server (the CRD's CEL rules), and it must name the field the
user wrote, not the object that holds it. The helpers here keep each rule's two forms next
to each other and carry the field path out of a model validator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One violated rule: where (camelCase path below the validated object) and what is allowed."""

    loc: Loc
    message: str


class SpecProblems(ValueError):
    """Raised by model validators so that each problem keeps its own field path.

    Pydantic reports a model validator's error at the model's location; the problems carried
    here are relative to that location, and the formatter appends them.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(_join(p) for p in self.problems))


def _join(problem: Problem) -> str:
    path = ".".join(str(part) for part in problem.loc)
    return f"{path}: {problem.message}" if path else problem.message


def raise_if_any(problems: Iterable[Problem]) -> None:
    """Raise all collected problems together, so the user fixes them in one round."""
    found = list(problems)
    if found:
        raise SpecProblems(found)


@dataclass(frozen=True)
class CelRule:
    """An ``x-kubernetes-validations`` entry; ``field_path`` points the API server's error at a field."""

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


CEL_KEY = "x-kubernetes-validations"


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """The ``json_schema_extra`` that carries CEL rules into the generated CRD."""
    return {CEL_KEY: [rule.to_schema() for rule in rules]}


_PATTERN_HINTS: dict[str, str] = {}


def hinted_pattern(pattern: str, hint: str) -> str:
    """Register what a regex means in words, so an error shows the hint instead of the regex."""
    _PATTERN_HINTS[pattern] = hint
    return pattern


def pattern_hint(pattern: str) -> str | None:
    return _PATTERN_HINTS.get(pattern)


def whole_if_above_one(value: float, loc: Loc) -> Problem | None:
    """Ray accepts fractional resources only below one unit; above that they must be whole."""
    if value > 1 and not float(value).is_integer():
        return Problem(loc, f"must be a fraction <= 1 or a whole number (got {value})")
    return None
