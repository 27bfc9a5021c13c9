"""Open Inference Protocol (v2) for pairwise scoring.

Inputs are either ids (``user_id`` and ``movie_id``, INT64/INT32, shape [n]) resolved
through the catalog, or raw texts (``user_text`` and ``item_text``, BYTES, shape [n]).
The output is ``score`` (FP32, shape [n]). Request and response types are kserve's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kserve.protocol.rest.v2_datamodels import InferenceRequest, RequestInput

from recserve_serving.errors import InvalidRequest
from recserve_serving.serve.catalog import Catalog

_INT_TYPES = {"INT64", "INT32"}


@dataclass(frozen=True)
class Pairs:
    user_texts: list[str]
    item_texts: list[str]
    sticky_user: int | None


def _tensor(inputs: dict[str, RequestInput], name: str, datatypes: set[str]) -> list[Any]:
    tensor = inputs[name]
    if tensor.datatype not in datatypes:
        raise InvalidRequest(
            f"input {name!r}: datatype must be one of {sorted(datatypes)}, got {tensor.datatype}"
        )
    if len(tensor.shape) != 1:
        raise InvalidRequest(f"input {name!r}: shape must be [n], got {tensor.shape}")
    data = list(tensor.data)
    if len(data) != tensor.shape[0]:
        raise InvalidRequest(f"input {name!r}: shape {tensor.shape} but {len(data)} values")
    return data


def _check_lengths(users: list[Any], items: list[Any], max_pairs: int) -> None:
    if len(users) != len(items):
        raise InvalidRequest(f"inputs have different lengths: {len(users)} users, {len(items)} items")
    if not users:
        raise InvalidRequest("inputs are empty")
    if len(users) > max_pairs:
        raise InvalidRequest(f"at most {max_pairs} pairs per request, got {len(users)}")


def infer_pairs(request: InferenceRequest, catalog: Catalog, max_pairs: int) -> Pairs:
    inputs = {tensor.name: tensor for tensor in request.inputs}
    if {"user_text", "item_text"} <= inputs.keys():
        user_texts = [str(u) for u in _tensor(inputs, "user_text", {"BYTES"})]
        item_texts = [str(i) for i in _tensor(inputs, "item_text", {"BYTES"})]
        _check_lengths(user_texts, item_texts, max_pairs)
        return Pairs(user_texts, item_texts, sticky_user=None)
    if not {"user_id", "movie_id"} <= inputs.keys():
        raise InvalidRequest(
            f"inputs must be user_id+movie_id (INT64) or user_text+item_text (BYTES), got {sorted(inputs)}"
        )
    users = [int(u) for u in _tensor(inputs, "user_id", _INT_TYPES)]
    movies = [int(m) for m in _tensor(inputs, "movie_id", _INT_TYPES)]
    _check_lengths(users, movies, max_pairs)
    catalog.check_items(movies, "movie_id")
    texts = {u: catalog.user_text(u, None) for u in set(users)}
    return Pairs(
        [texts[u] for u in users],
        [catalog.item_text(m) for m in movies],
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
            {"name": "movie_id", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }
