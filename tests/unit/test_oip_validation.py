"""Open Inference Protocol inputs: every malformed value is a 400 that names the input and the
problem, checked in the router before anything reaches a ranker's batch."""

from __future__ import annotations

import json

import pytest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from serving_fakes import FakeCatalog

from recserve_serving.errors import InvalidRequest
from recserve_serving.serve.oip import infer_pairs

pytestmark = pytest.mark.unit

MAX_PAIRS = 64
MAX_TEXT = 100


def parse(raw: str) -> InferenceRequest:
    """A request as FastAPI parses it: from JSON text, so 1e400 and lone surrogates survive."""
    return InferenceRequest.model_validate(json.loads(raw))


def ids_request(user_values: str, movie_values: str = "[1]", user_type: str = "INT64") -> str:
    return (
        '{"inputs": ['
        f'{{"name": "user_id", "datatype": "{user_type}", "shape": [1], "data": {user_values}}},'
        f'{{"name": "item_id", "datatype": "INT64", "shape": [1], "data": {movie_values}}}]}}'
    )


def texts_request(user_text: str, item_text: str = '"a movie"') -> str:
    return (
        '{"inputs": ['
        f'{{"name": "user_text", "datatype": "BYTES", "shape": [1], "data": [{user_text}]}},'
        f'{{"name": "item_text", "datatype": "BYTES", "shape": [1], "data": [{item_text}]}}]}}'
    )


def refuse(raw: str) -> str:
    with pytest.raises(InvalidRequest) as caught:
        infer_pairs(parse(raw), FakeCatalog(), MAX_PAIRS, MAX_TEXT)
    message = str(caught.value)
    message.encode("utf-8")  # the answer itself must be sendable
    return message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('"abc"', '"abc"'),
        ("null", "null"),
        ("[1]", "[1]"),
        ("1e400", "Infinity"),
        ("true", "true"),
        ('"5"', '"5"'),
        ("1.7", "1.7"),
        ("1.0", "1.0"),
    ],
)
def test_non_integer_int64_value_is_refused_naming_input_and_value(value, shown):
    message = refuse(ids_request(f"[{value}]"))
    assert "'user_id'" in message and "data[0]" in message and shown in message
    assert "not an integer" in message


@pytest.mark.parametrize(("datatype", "value"), [("INT64", 2**63), ("INT32", 2**31), ("INT32", -(2**31) - 1)])
def test_integer_outside_its_datatype_range_is_refused(datatype, value):
    message = refuse(ids_request(f"[{value}]", user_type=datatype))
    assert "'user_id'" in message and f"outside the {datatype} range" in message


def test_duplicate_input_names_are_refused_not_last_one_wins():
    raw = json.loads(ids_request("[1]"))
    raw["inputs"].append({"name": "user_id", "datatype": "INT64", "shape": [1], "data": [2]})
    message = refuse(json.dumps(raw))
    assert '"user_id"' in message and "more than once" in message


def test_lone_surrogate_in_bytes_input_is_refused_naming_input():
    message = refuse(texts_request('"x\\ud800"'))
    assert "'user_text'" in message and "data[0]" in message and "not valid Unicode" in message
    assert "\\ud800" in message


def test_lone_surrogate_in_request_id_is_refused():
    raw = json.loads(ids_request("[1]"))
    message = refuse(json.dumps(raw)[:-1] + ', "id": "\\udfff"}')
    assert message.startswith("id ") and "not valid Unicode" in message


@pytest.mark.parametrize("value", ["null", "42", '["a"]'])
def test_non_string_bytes_value_is_refused(value):
    message = refuse(texts_request('"fine"', value))
    assert "'item_text'" in message and "not a string" in message


def test_text_over_the_length_limit_is_refused_naming_the_limit():
    message = refuse(texts_request(json.dumps("x" * (MAX_TEXT + 1))))
    assert "'user_text'" in message and f"over the limit of {MAX_TEXT}" in message
    assert "maxTextChars" in message


def test_valid_requests_still_pass():
    pairs = infer_pairs(parse(ids_request("[3]", "[7]")), FakeCatalog(), MAX_PAIRS, MAX_TEXT)
    assert (pairs.user_texts, pairs.item_texts, pairs.sticky_user) == (["user 3"], ["movie 7"], 3)
    pairs = infer_pairs(parse(texts_request('"héllo ✓"')), FakeCatalog(), MAX_PAIRS, MAX_TEXT)
    assert pairs.user_texts == ["héllo ✓"]
