"""Which tables hold a platform's catalog and interactions, and how their columns map onto ours.

This is the ``spec.data`` block of a RecommenderModel: bring-your-own data means naming the
files and their columns here rather than reshaping the data to look like a demo set.
``tabular.load_data`` reads what it names into ``LoadedData``. Everything that can be checked
without reading a file (URI schemes and paths, the text template's syntax, the threshold, the
history store settings) is checked here, so that ``recserve validate`` and the API server
refuse a broken mapping before any build starts; the rest (columns, types, ids) needs the data
and is checked by the loader.
"""

from __future__ import annotations

import math
import string
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from recserve_serving.schema import CamelModel
from recserve_serving.spec_rules import CelRule, Loc, Problem, cel_rules, hinted_pattern, raise_if_any
from recserve_serving.uri_paths import path_problem

SUPPORTED_DATA = "file:///ABSOLUTE/PATH, pvc://CLAIM/PATH or bundled://DATASET/FILE"
S3_DATA_UNSUPPORTED = (
    f"s3:// data is not supported: recserve cannot read from S3; use {SUPPORTED_DATA} "
    "(copy the file to a claim, or bake it into the image)"
)
DATA_URI_PATTERN = hinted_pattern(
    r"^(file:///\S+"
    r"|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/\S+"
    r"|bundled://[A-Za-z0-9._-]+/\S+"
    r"|s3://\S+)$",
    SUPPORTED_DATA,
)
UNSAFE_DATA_PATH_CEL = (
    "self.uri.matches('^(file|pvc|bundled)://.*(%2[eEfF]|/[.][.]?(/|$))')"
    " || self.uri.matches('^((pvc|bundled)://[^/]*|file://)(/.*)?//')"
)
"""CEL twin of ``uri_problem``'s path checks: true for a data URI the API server must refuse."""

FORMAT_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""What ``format: auto`` reads a file as, by its extension (case-insensitive)."""

TableFormat = Literal["auto", "csv", "parquet"]
COLUMN_PATTERN = hinted_pattern(r"^\S(.*\S)?$", "a column name without leading or trailing spaces")
REDIS_PATTERN = hinted_pattern(
    r"^[A-Za-z0-9.-]+:[0-9]{1,5}(,\S+)?$",
    "host:port, optionally followed by Feast's ,key=value options (e.g. redis.recserve:6379,ssl=true)",
)


def _column(description: str) -> Any:
    return Field(default=..., min_length=1, max_length=256, pattern=COLUMN_PATTERN, description=description)


def _optional_column(description: str) -> Any:
    return Field(default=None, min_length=1, max_length=256, pattern=COLUMN_PATTERN, description=description)


def uri_problem(uri: str) -> str | None:
    """Why a data URI cannot name a readable file, or None; the loader resolves what passes."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme == "s3":
        return S3_DATA_UNSUPPORTED
    if scheme not in {"file", "pvc", "bundled"}:
        return f"must be {SUPPORTED_DATA} (got {uri!r})"
    if scheme == "file" and not uri.startswith("file:///"):
        return f"a file:// URI must hold an absolute path, file:///ABSOLUTE/PATH with three slashes (got {uri!r})"
    # bundled://DATASET/FILE has the shape of pvc://CLAIM/PATH, so the same containment rules apply.
    checked = "pvc://" + uri.split("://", 1)[1] if scheme == "bundled" else uri
    problem = path_problem(checked)
    if problem:
        return f"{problem} (got {uri!r})"
    if uri.endswith("/"):
        return f"must name a file, not a directory (got {uri!r})"
    return None


def format_of(uri: str, declared: TableFormat) -> Literal["csv", "parquet"] | None:
    """The format a file is read as: the declared one, or by extension for ``auto`` (None when
    the extension says nothing)."""
    if declared != "auto":
        return declared
    found = FORMAT_EXTENSIONS.get(PurePosixPath(uri.split("://", 1)[-1]).suffix.lower())
    return "csv" if found == "csv" else "parquet" if found == "parquet" else None


def template_fields(template: str) -> list[str]:
    """The column names a text template reads, in order; ValueError says what is not allowed.

    Only plain ``{column}`` fields are allowed: an attribute, index, conversion or format spec
    would make the template a small program over the user's data, and positional ``{}`` names
    no column.
    """
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise ValueError(
            f"is not a valid template ({error}); write a literal brace as {{{{ or }}}}"
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError("has a positional field ({} or {0}); name a catalog column, e.g. {title}")
        if any(mark in name for mark in ".[]"):
            raise ValueError(f"field {{{name}}} reads an attribute or index; name a catalog column plainly")
        if conversion or spec:
            raise ValueError(
                f"field {{{name}}} has a conversion or format spec; write {{{name.strip()}}} only"
            )
        fields.append(name)
    if not fields:
        raise ValueError("names no column; include at least one catalog column, e.g. {title}")
    return fields


TABLE_URI_RULES = (
    CelRule("!self.uri.startsWith('s3://')", S3_DATA_UNSUPPORTED, ".uri"),
    CelRule(
        f"!({UNSAFE_DATA_PATH_CEL})",
        "a file://, pvc:// or bundled:// path must not contain '.', '..' or empty segments, "
        "nor a percent-encoded '.' or '/'",
        ".uri",
    ),
)
"""The CEL twins of ``uri_problem`` that every table's ``uri`` carries."""


def _table_uri(what: str) -> Any:
    return Field(
        default=...,
        max_length=1024,
        pattern=DATA_URI_PATTERN,
        description=f"The {what} file: file:///ABSOLUTE/PATH, pvc://CLAIM/PATH or bundled://DATASET/FILE "
        "(a data set shipped in the images). s3:// is refused: not supported.",
    )


def _table_format() -> Any:
    return Field(
        default="auto",
        description="csv or parquet; auto reads .csv as CSV and .parquet or .pq as Parquet.",
    )


class CatalogSpec(CamelModel):
    """The item table: one row per item, its id, a display title and the ranker's item text."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *TABLE_URI_RULES,
            CelRule(
                "!has(self.categorySeparator) || has(self.categoryColumn)",
                "categorySeparator needs categoryColumn",
                ".categorySeparator",
            ),
        )
    )

    uri: str = _table_uri("catalog")
    format: TableFormat = _table_format()
    id_column: str = _column("The column of item ids (integers or strings, unique, never empty).")
    title_column: str | None = _optional_column(
        "The column of short display titles (what user texts list); the id as text when unset."
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="The ranker's item text, a template of plain {column} fields over catalog columns, "
        "e.g. '{title} | {genres}'; list columns render comma-joined, empty values as nothing. The "
        "title when unset.",
    )
    category_column: str | None = _optional_column(
        "A column of categories: a list column, or strings split by categorySeparator. Empty or "
        "null values mean no categories. No categories when unset."
    )
    category_separator: str | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Splits a string categoryColumn into several categories, e.g. '|'; each whole "
        "value is one category when unset.",
    )

    @model_validator(mode="after")
    def _offline(self) -> CatalogSpec:
        raise_if_any(self.offline_problems())
        return self

    def offline_problems(self) -> list[Problem]:
        return _table_problems(self.uri, self.format) + self._mapping_problems()

    def _mapping_problems(self) -> list[Problem]:
        problems = []
        if self.text is not None:
            try:
                template_fields(self.text)
            except ValueError as error:
                problems.append(Problem(("text",), f"{error} (got {self.text!r})"))
        if self.category_separator is not None and self.category_column is None:
            problems.append(
                Problem(
                    ("categorySeparator",),
                    "splits categoryColumn, which is unset: name the column of categories, or drop the separator",
                )
            )
        return problems

    @property
    def text_fields(self) -> list[str]:
        """The columns the item text reads (the title's when no template is set)."""
        return template_fields(self.text) if self.text is not None else []


class InteractionsSpec(CamelModel):
    """The event table: one row per user-item interaction, when it happened and how strong it was."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *TABLE_URI_RULES,
            CelRule(
                "!has(self.weightColumn) || has(self.positiveThreshold)",
                "weightColumn needs positiveThreshold: the weight at or above which an interaction is a like",
                ".positiveThreshold",
            ),
            CelRule(
                "has(self.weightColumn) || !has(self.positiveThreshold) || self.positiveThreshold <= 1.0",
                "without weightColumn every weight is 1.0, so positiveThreshold must be <= 1.0",
                ".positiveThreshold",
            ),
        )
    )

    uri: str = _table_uri("interactions")
    format: TableFormat = _table_format()
    user_column: str = _column("The column of user ids (integers or strings).")
    item_column: str = _column("The column of item ids; every one must be in the catalog.")
    timestamp_column: str = _column(
        "When each interaction happened: Unix seconds (integer or float), ISO-8601 strings, or a "
        "Parquet timestamp. Orders each user's history and the held-out split."
    )
    weight_column: str | None = _optional_column(
        "How strong each interaction is (numeric: a rating, or 1 view / 3 cart / 5 purchase); "
        "every interaction weighs 1.0 when unset."
    )
    positive_threshold: float | None = Field(
        default=None,
        description="An interaction with weight >= this is a like. Required with weightColumn "
        "(e.g. 4.0 for ratings out of 5); 0.0 when unset without one, so every interaction counts.",
    )

    @model_validator(mode="after")
    def _offline(self) -> InteractionsSpec:
        raise_if_any(self.offline_problems())
        return self

    def offline_problems(self) -> list[Problem]:
        problems = _table_problems(self.uri, self.format)
        threshold = self.positive_threshold
        if threshold is not None and not math.isfinite(threshold):
            problems.append(
                Problem(
                    ("positiveThreshold",),
                    f"must be a finite number (got {threshold}): the weight at or above which an "
                    "interaction is a like, e.g. 4.0",
                )
            )
        elif self.weight_column is not None and threshold is None:
            problems.append(
                Problem(
                    ("positiveThreshold",),
                    f"is required with weightColumn ({self.weight_column!r}): set the weight at or above "
                    "which an interaction is a like, e.g. 4.0 for ratings out of 5 or 3 for cart-or-purchase",
                )
            )
        elif self.weight_column is None and threshold is not None and threshold > 1.0:
            problems.append(
                Problem(
                    ("positiveThreshold",),
                    f"is {threshold:g}, but without weightColumn every interaction weighs 1.0, so none "
                    "would be a like: set weightColumn, or a threshold <= 1.0",
                )
            )
        return problems

    @property
    def threshold(self) -> float:
        """The resolved like threshold (0.0 when unset: every interaction counts)."""
        return 0.0 if self.positive_threshold is None else self.positive_threshold


class HistoryStoreSpec(CamelModel):
    """The Feast online store that holds each user's recent interactions."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.kind != 'sqlite' || !has(self.connectionString)",
                "a sqlite store takes no connectionString: it lives in recserve's state directory",
                ".connectionString",
            ),
        )
    )

    kind: Literal["sqlite", "redis"] = Field(
        default=...,
        description="sqlite: a local file, for one machine and tests; redis: a shared server, for a cluster.",
    )
    connection_string: str | None = Field(
        default=None,
        max_length=512,
        pattern=REDIS_PATTERN,
        description="Where the redis server listens, host:port[,option=value...] (Feast's "
        "connection_string); only for redis. Absent with redis: the operator's default Redis (chart "
        "value config.historyRedis).",
    )

    @model_validator(mode="after")
    def _settings(self) -> HistoryStoreSpec:
        raise_if_any(self.offline_problems())
        return self

    def offline_problems(self) -> list[Problem]:
        problems = []
        if self.kind == "sqlite" and self.connection_string is not None:
            problems.append(
                Problem(
                    ("connectionString",),
                    "is only for redis: a sqlite store lives in recserve's state directory; drop it, "
                    "or set kind: redis",
                )
            )
        return problems


class HistorySpec(CamelModel):
    """Where a user's history comes from when a request asks for recommendations."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.source == 'store' || !has(self.store)",
                "store is only read with source: store",
                ".store",
            ),
            CelRule("self.source != 'store' || has(self.store)", "source: store needs a store", ".store"),
        )
    )

    source: Literal["request", "store"] = Field(
        default="request",
        description="request: each request carries the user's history; store: the router reads it from "
        "an online store (Feast) by user id.",
    )
    store: HistoryStoreSpec | None = Field(
        default=None, description="The online store; required with source: store, refused otherwise."
    )

    @model_validator(mode="after")
    def _store_matches_source(self) -> HistorySpec:
        raise_if_any(self.offline_problems())
        return self

    def offline_problems(self) -> list[Problem]:
        problems = []
        if self.source == "request" and self.store is not None:
            problems.append(
                Problem(
                    ("store",),
                    "is only read with source: store (source is request, so histories come in the "
                    "requests): set source: store, or drop the store",
                )
            )
        if self.source == "store" and self.store is None:
            problems.append(
                Problem(
                    ("store",),
                    "is required with source: store: add store: {kind: sqlite} for one machine, or "
                    "{kind: redis, connectionString: HOST:PORT} for a cluster (or {kind: redis} for the "
                    "operator's default Redis)",
                )
            )
        if self.store is not None:
            problems.extend(Problem(("store", *p.loc), p.message) for p in self.store.offline_problems())
        return problems


class DataSpec(CamelModel):
    """A platform's own catalog and interactions, and where users' histories come from."""

    catalog: CatalogSpec = Field(description="The item table and how its columns map onto items.")
    interactions: InteractionsSpec = Field(
        description="The event table and how its columns map onto interactions."
    )
    history: HistorySpec = Field(
        default=HistorySpec(), description="Where a request's user history comes from."
    )

    def offline_problems(self) -> list[Problem]:
        """Every problem that can be found without reading the data, with paths below ``data``.

        The models refuse these on validation already; this lists them for a spec built with
        ``model_construct`` or read without validation (and is what the validators call).
        """
        blocks: list[tuple[str, list[Problem]]] = [
            ("catalog", self.catalog.offline_problems()),
            ("interactions", self.interactions.offline_problems()),
            ("history", self.history.offline_problems()),
        ]
        return [Problem((name, *p.loc), p.message) for name, found in blocks for p in found]


def _table_problems(uri: str, declared: TableFormat) -> list[Problem]:
    problems = []
    where: Loc = ("uri",)
    problem = uri_problem(uri)
    if problem:
        problems.append(Problem(where, problem))
    elif format_of(uri, declared) is None:
        suffix = PurePosixPath(uri.split("://", 1)[-1]).suffix
        named = f"the extension {suffix!r}" if suffix else "a name without an extension"
        problems.append(
            Problem(
                ("format",),
                f"is auto, but {named} says nothing about the file's format: set format: csv or "
                f"format: parquet (auto knows {', '.join(sorted(FORMAT_EXTENSIONS))})",
            )
        )
    return problems
