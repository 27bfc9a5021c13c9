"""Turn pydantic validation errors into ``path: what is allowed`` lines a user can act on.

Pydantic's own messages name Python types and report cross-field errors at the enclosing
object; users think in the camelCase keys they wrote and want the allowed range. The same
lines serve ``recserve validate``, the admission webhook and ``recserve up``.
"""

from __future__ import annotations

import difflib
import types as pytypes
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from recserve_serving.spec_rules import Loc, SpecProblems, pattern_hint


@dataclass(frozen=True)
class FieldProblem:
    """One problem at a camelCase path such as ``spec.rollout.canary.steps[1].weight``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def problems_from_error(error: ValidationError, root: type[BaseModel]) -> list[FieldProblem]:
    found: list[FieldProblem] = []
    for detail in error.errors(include_url=False):
        found.extend(_problems_of(detail, root))
    return found


def _problems_of(detail: ErrorDetails, root: type[BaseModel]) -> list[FieldProblem]:
    loc: Loc = tuple(detail["loc"])
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, SpecProblems):
        return [FieldProblem(format_loc(loc + p.loc), p.message) for p in cause.problems]
    if isinstance(cause, Exception):
        return [FieldProblem(format_loc(loc), str(cause))]
    return [FieldProblem(format_loc(loc), _message(detail, root))]


def shown(value: Any) -> str:
    """A value as the user wrote it in YAML, or its kind when it is a whole structure."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string (quote it in YAML)",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "datetime_type": "an RFC 3339 date-time",
    "datetime_parsing": "an RFC 3339 date-time",
    "datetime_from_date_parsing": "an RFC 3339 date-time",
}


def _message(detail: ErrorDetails, root: type[BaseModel]) -> str:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    got = shown(detail.get("input"))
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return _unknown_field(detail["loc"], root)
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return f"must be {symbol} {ctx[key]} (got {got})"
    if kind == "literal_error":
        expected = str(ctx["expected"])
        return (
            f"must be {expected} (got {got})"
            if " or " not in expected
            else f"must be one of {expected} (got {got})"
        )
    if kind == "string_pattern_mismatch":
        pattern = str(ctx["pattern"])
        return f"must be {pattern_hint(pattern) or 'a match of ' + pattern} (got {got})"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters (got {len(str(detail['input']))})"
    if kind == "string_too_short":
        return f"must be at least {ctx['min_length']} characters"
    if kind == "too_short":
        return f"must have at least {ctx['min_length']} items (got {ctx.get('actual_length')})"
    if kind == "too_long":
        return f"must have at most {ctx['max_length']} items (got {ctx.get('actual_length')})"
    if kind in _TYPES:
        return f"must be {_TYPES[kind]} (got {got})"
    return f"{detail['msg']} (got {got})"


def _unknown_field(loc: Loc, root: type[BaseModel]) -> str:
    allowed = _allowed_keys(root, tuple(loc[:-1]))
    if not allowed:
        return "unknown field"
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown field; {hint}allowed: {', '.join(allowed)}"


def _allowed_keys(root: type[BaseModel], loc: Loc) -> list[str]:
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) and get_origin(current) is list:
            current = get_args(current)[0]
        elif _is_model(current):
            field = next(
                (f for name, f in current.model_fields.items() if (f.alias or name) == part),
                None,
            )
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if not _is_model(current):
        return []
    return [field.alias or name for name, field in current.model_fields.items()]


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, BaseModel)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` to ``X``; optional fields are the only unions in the API."""
    if get_origin(annotation) in (Union, pytypes.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation
