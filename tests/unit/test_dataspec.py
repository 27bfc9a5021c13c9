"""spec.data: what is refused before any file is read, with the field, the reason and the fix."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from pydantic import ValidationError

from recserve_operator.api import crd
from recserve_operator.api.problems import problems_from_error
from recserve_serving.dataspec import (
    S3_DATA_UNSUPPORTED,
    UNSAFE_DATA_PATH_CEL,
    CatalogSpec,
    DataSpec,
    InteractionsSpec,
    format_of,
    template_fields,
    uri_problem,
)
from recserve_serving.example_data import EXAMPLE_DATA
from recserve_serving.spec_rules import CEL_KEY

pytestmark = pytest.mark.unit

MOVIES: dict[str, Any] = EXAMPLE_DATA.model_dump(mode="json", by_alias=True, exclude_none=True)


def spec(**changes: Any) -> dict[str, Any]:
    """The example with ``block__field=value`` changes (None deletes the field)."""
    doc = copy.deepcopy(MOVIES)
    for key, value in changes.items():
        block, field = key.split("__")
        target = doc.setdefault(block, {})
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    return doc


def problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        DataSpec.model_validate(doc)
    return {p.path: p.message for p in problems_from_error(caught.value, DataSpec)}


def test_the_example_validates_with_its_defaults() -> None:
    data = DataSpec.model_validate(MOVIES)
    assert data.catalog.format == "auto"
    assert data.catalog.text_fields == ["title", "genres"]
    assert data.interactions.threshold == 4.0
    assert data.history.source == "request" and data.history.store is None
    assert data.offline_problems() == []
    assert DataSpec.model_validate(data.to_dict()) == data


def test_threshold_defaults_to_every_interaction_without_weights() -> None:
    data = DataSpec.model_validate(
        spec(interactions__weightColumn=None, interactions__positiveThreshold=None)
    )
    assert data.interactions.threshold == 0.0


def test_s3_is_refused_with_what_to_do_instead() -> None:
    found = problems(spec(catalog__uri="s3://bucket/items.csv"))
    assert found["catalog.uri"] == S3_DATA_UNSUPPORTED
    assert "cannot read from S3" in S3_DATA_UNSUPPORTED and "pvc://CLAIM/PATH" in S3_DATA_UNSUPPORTED


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///data/../etc/passwd.csv", "'..' path segments"),
        ("pvc://claim/a/%2e%2e/b.csv", "percent-encode"),
        ("bundled://movielens-small//movies.csv", "empty path segments"),
        ("bundled://movielens-small/../../etc/x.csv", "'..' path segments"),
        ("file:///data/", "must name a file, not a directory"),
    ],
)
def test_unsafe_paths_are_refused(uri: str, expected: str) -> None:
    found = problems(spec(interactions__uri=uri))
    assert expected in found["interactions.uri"]
    assert uri in found["interactions.uri"]


def test_the_uri_pattern_names_the_supported_forms() -> None:
    message = problems(spec(catalog__uri="https://example.com/items.csv"))["catalog.uri"]
    assert "file:///ABSOLUTE/PATH, pvc://CLAIM/PATH or bundled://DATASET/FILE" in message
    relative = problems(spec(catalog__uri="file://items.csv"))["catalog.uri"]
    assert "file:///ABSOLUTE/PATH" in relative
    assert "three slashes" in (uri_problem("file://items.csv") or "")


def test_cel_twin_of_the_path_rules_agrees() -> None:
    """The API server's rule (RE2, written for CEL) refuses exactly what ``uri_problem`` does."""
    patterns = re.findall(r"matches\('([^']*)'\)", UNSAFE_DATA_PATH_CEL)
    cases = [
        "file:///data/items.csv",
        "file:///data/../items.csv",
        "file:///data/./items.csv",
        "file:///data//items.csv",
        "pvc://claim/a/b.parquet",
        "pvc://claim//b.parquet",
        "pvc://claim/a/%2E%2E/b.parquet",
        "bundled://shop/items.parquet",
        "bundled://shop/../movies.csv",
        "bundled://shop//items.parquet",
    ]
    for uri in cases:
        cel_refuses = any(re.search(p, uri) for p in patterns)
        assert cel_refuses == (uri_problem(uri) is not None), uri


def test_format_follows_the_extension_or_must_be_set() -> None:
    assert format_of("file:///x/items.CSV", "auto") == "csv"
    assert format_of("file:///x/items.pq", "auto") == "parquet"
    assert format_of("file:///x/items.dat", "csv") == "csv"
    message = problems(spec(catalog__uri="file:///x/items.dat"))["catalog.format"]
    assert "'.dat'" in message and "set format: csv or format: parquet" in message
    no_suffix = problems(spec(interactions__uri="pvc://claim/events"))["interactions.format"]
    assert "without an extension" in no_suffix
    DataSpec.model_validate(spec(catalog__uri="file:///x/items.dat", catalog__format="csv"))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{title", "is not a valid template"),
        ("{} and {title}", "positional field"),
        ("{0}", "positional field"),
        ("{title.upper}", "attribute or index"),
        ("{tags[0]}", "attribute or index"),
        ("{title!r}", "conversion or format spec"),
        ("{price:.2f}", "conversion or format spec"),
        ("just words", "names no column"),
        ("{{literal}}", "names no column"),
    ],
)
def test_templates_must_be_plain_column_fields(template: str, expected: str) -> None:
    message = problems(spec(catalog__text=template))["catalog.text"]
    assert expected in message
    assert repr(template) in message


def test_template_fields_in_order() -> None:
    assert template_fields("{a} - {b} ({a})") == ["a", "b", "a"]
    assert template_fields("{{x}} {product name}") == ["product name"]


def test_separator_needs_a_category_column() -> None:
    message = problems(spec(catalog__categoryColumn=None))["catalog.categorySeparator"]
    assert "categoryColumn, which is unset" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_threshold_must_be_finite(value: float) -> None:
    found = problems(spec(interactions__positiveThreshold=value))
    assert found["interactions.positiveThreshold"].startswith(f"must be a finite number (got {value})")


def test_offline_problems_report_non_finite_thresholds_with_their_path() -> None:
    built = DataSpec.model_construct(
        catalog=CatalogSpec.model_construct(**DataSpec.model_validate(MOVIES).catalog.__dict__),
        interactions=InteractionsSpec.model_construct(
            **{**DataSpec.model_validate(MOVIES).interactions.__dict__, "positive_threshold": float("nan")}
        ),
        history=DataSpec.model_validate(MOVIES).history,
    )
    (found,) = built.offline_problems()
    assert found.loc == ("interactions", "positiveThreshold")
    assert "finite" in found.message


def test_weights_need_a_threshold() -> None:
    message = problems(spec(interactions__positiveThreshold=None))["interactions.positiveThreshold"]
    assert "required with weightColumn ('rating')" in message and "4.0" in message


def test_threshold_above_one_without_weights_is_refused() -> None:
    found = problems(spec(interactions__weightColumn=None, interactions__positiveThreshold=3))
    assert "none would be a like" in found["interactions.positiveThreshold"]


def test_store_only_with_source_store() -> None:
    found = problems({**MOVIES, "history": {"store": {"kind": "sqlite"}}})
    assert "only read with source: store" in found["history.store"]
    found = problems({**MOVIES, "history": {"source": "store"}})
    assert "required with source: store" in found["history.store"]
    assert "kind: redis, connectionString" in found["history.store"]


def test_redis_may_leave_its_server_to_the_operator_and_sqlite_takes_none() -> None:
    default = DataSpec.model_validate({**MOVIES, "history": {"source": "store", "store": {"kind": "redis"}}})
    assert default.history.store is not None and default.history.store.connection_string is None
    found = problems(
        {**MOVIES, "history": {"source": "store", "store": {"kind": "sqlite", "connectionString": "h:1"}}}
    )
    assert "only for redis" in found["history.store.connectionString"]
    found = problems(
        {**MOVIES, "history": {"source": "store", "store": {"kind": "redis", "connectionString": "redis"}}}
    )
    assert "host:port" in found["history.store.connectionString"]
    ok = DataSpec.model_validate(
        {
            **MOVIES,
            "history": {"source": "store", "store": {"kind": "redis", "connectionString": "redis.svc:6379"}},
        }
    )
    assert ok.history.store is not None and ok.history.store.connection_string == "redis.svc:6379"


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    found = problems(spec(catalog__idColum="movieId"))
    assert "did you mean idColumn" in found["catalog.idColum"]


def test_the_schema_is_structural_and_carries_its_rules() -> None:
    """DataSpec can go into the CRD as is: no unions, every rule with a message."""
    source = DataSpec.model_json_schema(by_alias=True, mode="validation")
    defs = source.pop("$defs")
    converted = crd._Converter(defs, keep_defaults=True).convert(source, "data")
    catalog_rules = [r["rule"] for r in converted["properties"]["catalog"][CEL_KEY]]
    assert "!self.uri.startsWith('s3://')" in catalog_rules
    history = converted["properties"]["history"]
    assert history["default"] == {"source": "request"}
    assert any("has(self.connectionString)" in r["rule"] for r in history["properties"]["store"][CEL_KEY])
    assert converted["required"] == ["catalog", "interactions"]
