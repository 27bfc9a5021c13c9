"""Open Inference Protocol (v2) for pairwise scoring.

Inputs are either ids (``user_id`` and ``item_id``, INT64/INT32, shape [n]) resolved
through the catalog, or raw texts (``user_text`` and ``item_text``, BYTES, shape [n]).
The output is ``score`` (FP32, shape [n]). Request and response types are kserve's; they
accept any JSON in ``data``, so the values are checked here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kserve.protocol.rest.v2_datamodels import InferenceRequest, RequestInput

from recserve_serving.errors import InvalidRequest
from recserve_serving.serve.catalog import Catalog

_INT_RANGES = {"INT64": (-(2**63), 2**63 - 1), "INT32": (-(2**31), 2**31 - 1)}
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class Pairs:
    user_texts: list[str]
    item_texts: list[str]
    sticky_user: int | str | None


def show_value(value: Any) -> str:
    """A value as the client wrote it (JSON), short and safe to echo whatever it contains."""
    try:
        shown = json.dumps(value)
    except ValueError:
        shown = repr(value)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 1] + "…"


def inputs_by_name(request: InferenceRequest) -> dict[str, RequestInput]:
    names = [tensor.name for tensor in request.inputs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidRequest(
            f"input {', '.join(map(show_value, repeated))} given more than once; send each input once"
        )
    return {tensor.name: tensor for tensor in request.inputs}


def _tensor(inputs: dict[str, RequestInput], name: str, datatypes: set[str]) -> list[Any]:
    tensor = inputs[name]
    if tensor.datatype not in datatypes:
        raise InvalidRequest(
            f"input {name!r}: datatype must be one of {sorted(datatypes)}, got {show_value(tensor.datatype)}"
        )
    if len(tensor.shape) != 1:
        raise InvalidRequest(f"input {name!r}: shape must be [n], got {tensor.shape}")
    data = list(tensor.data)
    if len(data) != tensor.shape[0]:
        raise InvalidRequest(f"input {name!r}: shape {tensor.shape} but {len(data)} values")
    return data


def integer_data(inputs: dict[str, RequestInput], name: str) -> list[int]:
    """The values of an INT64/INT32 input, which must be JSON integers within the type's range:
    coercing strings, booleans or fractions would score an item the client did not name."""
    data = _tensor(inputs, name, set(_INT_RANGES))
    datatype = inputs[name].datatype
    low, high = _INT_RANGES[datatype]
    for position, value in enumerate(data):
        if type(value) is not int:
            raise InvalidRequest(
                f"input {name!r}: data[{position}] is {show_value(value)}, not an integer; "
                f"{datatype} data must be JSON integers such as 42, without quotes or decimals"
            )
        if not low <= value <= high:
            raise InvalidRequest(f"input {name!r}: data[{position}] is {value}, outside the {datatype} range")
    return data


def id_data(inputs: dict[str, RequestInput], name: str) -> list[int | str]:
    """User or item ids: INT64/INT32 integers (``integer_data``'s rules), or BYTES strings for
    catalogs whose ids are strings."""
    if name in inputs and inputs[name].datatype == "BYTES":
        data = _tensor(inputs, name, {"BYTES"})
        return [check_text(f"input {name!r}: data[{i}]", value, 256) for i, value in enumerate(data)]
    return list(integer_data(inputs, name))


def check_text(name: str, value: Any, max_chars: int | None = None) -> str:
    """A client's text: a string the tokenizer can encode (UTF-8, so no lone surrogate) and,
    when bounded, at most ``max_chars`` long, so that one text cannot hold a replica for seconds."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} is {show_value(value)}, not a string; BYTES data must be JSON strings")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidRequest(
            f"{name} is {len(value)} characters, over the limit of {max_chars} "
            "(spec.serving.limits.maxTextChars); shorten the text or raise the limit"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidRequest(
            f"{name} is not valid Unicode text ({error.reason} at character {error.start}: "
            f"{show_value(value[error.start : error.end])}); send UTF-8 text"
        ) from None
    return value


def _texts(inputs: dict[str, RequestInput], name: str, max_chars: int) -> list[str]:
    data = _tensor(inputs, name, {"BYTES"})
    return [check_text(f"input {name!r}: data[{i}]", value, max_chars) for i, value in enumerate(data)]


def _check_lengths(users: list[Any], items: list[Any], max_pairs: int) -> None:
    if len(users) != len(items):
        raise InvalidRequest(f"inputs have different lengths: {len(users)} users, {len(items)} items")
    if not users:
        raise InvalidRequest("inputs are empty")
    if len(users) > max_pairs:
        raise InvalidRequest(f"at most {max_pairs} pairs per request, got {len(users)}")


def infer_pairs(request: InferenceRequest, catalog: Catalog, max_pairs: int, max_text_chars: int) -> Pairs:
    """The pairs to score, or ``InvalidRequest`` naming the input and what is wrong with it.

    Everything is checked here, in the router, so that a bad request is refused on its own and
    never reaches a ranker's batch, where its failure would fail the requests batched with it.
    """
    inputs = inputs_by_name(request)
    if request.id is not None:
        check_text("id", request.id)
    if {"user_text", "item_text"} <= inputs.keys():
        user_texts = _texts(inputs, "user_text", max_text_chars)
        item_texts = _texts(inputs, "item_text", max_text_chars)
        _check_lengths(user_texts, item_texts, max_pairs)
        return Pairs(user_texts, item_texts, sticky_user=None)
    if not {"user_id", "item_id"} <= inputs.keys():
        raise InvalidRequest(
            "inputs must be user_id+item_id (INT64, or BYTES for string ids) or user_text+item_text (BYTES), "
            f"got {', '.join(map(show_value, sorted(inputs))) or 'none'}"
        )
    users = id_data(inputs, "user_id")
    items = id_data(inputs, "item_id")
    _check_lengths(users, items, max_pairs)
    codes = catalog.codes(items, "item_id")
    texts = {u: catalog.user_text(u, None) for u in set(users)}
    return Pairs(
        [texts[u] for u in users],
        [catalog.item_text(m) for m in codes],
        sticky_user=users[0] if len(set(users)) == 1 else None,
    )


def infer_response(model: str, version: str, request_id: str | None, scores: list[float]) -> dict[str, Any]:
    return {
        "model_name": model,
        "model_version": version,
        "id": request_id or "",
        "outputs": [{"name": "score", "shape": [len(scores)], "datatype": "FP32", "data": scores}],
    }


def model_metadata(model: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": model,
        "versions": versions,
        "platform": "recserve-cross-encoder",
        "inputs": [
            {"name": "user_id", "datatype": "INT64", "shape": [-1]},
            {"name": "item_id", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }
