"""Column conversions of the data loader: ids, titles, item texts, categories, times, weights.

Each function takes one column as the file holds it and returns it in the shape
``loaded_data`` fixes, or raises a ``DataError`` that shows a sample of the bad values and
where they are (a CSV's line, a Parquet file's row), so the user can find them in their own
file. Ids keep the user's kind: integers stay int64, anything else is a stripped string.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from recserve_serving.errors import DataError

SAMPLE = 5
LATEST_SECONDS = 32_503_680_000
"""Year 3000 in Unix seconds: later values are milliseconds or microseconds, not seconds."""
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
"""An integer written the one way ``str(int)`` writes it, and small enough for int64."""


@dataclass(frozen=True)
class Table:
    """A file as read, and what its messages need: where it came from and which spec block named it."""

    frame: pd.DataFrame
    path: Path
    uri: str
    block: str
    format: Literal["csv", "parquet"]

    def where(self, position: int) -> str:
        """A row as the user finds it: a CSV's line (the header is line 1), a Parquet row from 1."""
        return f"line {position + 2}" if self.format == "csv" else f"row {position + 1}"

    def field(self, name: str, column: str) -> str:
        return f"{self.block}.{name} ({column!r} in {self.path.name})"


def _shown(value: Any) -> str:
    """A cell as the user wrote it: numpy scalars as plain numbers."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _first(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _blank(values: pd.Series) -> pd.Series:
    """Null, or text that is empty once stripped."""
    if values.dtype != object:
        return values.isna()
    empty = values.str.strip().eq("").fillna(False).astype(bool)
    return values.isna() | empty


def ids(table: Table, column: str, field: str) -> pd.Series:
    """A column of ids: int64 when the column is integer-typed (or, in a CSV, every value is an
    integer written plainly), else stripped strings. Nulls, empties, floats and booleans are refused."""
    values = table.frame[column]
    where = table.field(field, column)
    missing = _blank(values)
    if missing.any():
        raise DataError(
            f"{where}: {int(missing.sum())} of {len(values)} rows have no id (the first at "
            f"{table.where(_first(missing))}); every row needs one: fill them in or remove those rows"
        )
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_float_dtype(values):
        kind = "true/false" if pd.api.types.is_bool_dtype(values) else "floating-point"
        raise DataError(
            f"{where}: holds {kind} values (e.g. {_shown(values.iloc[0])} at {table.where(0)}); ids must be "
            "integers or strings: store the column as an integer or string type"
        )
    if pd.api.types.is_integer_dtype(values):
        return values.astype("int64").reset_index(drop=True)
    text = values.astype(str).str.strip().reset_index(drop=True)
    if table.format == "csv" and text.str.fullmatch(_CANONICAL_INT).all():
        return text.astype("int64")
    return text


def unique_ids(table: Table, item_ids: pd.Series, field: str) -> None:
    """The catalog names each item once: two rows with one id would be two texts for one item."""
    repeated = item_ids[item_ids.duplicated(keep=False)]
    if repeated.empty:
        return
    distinct = list(dict.fromkeys(repeated.tolist()))
    raise DataError(
        f"{table.block}.{field}: {len(distinct)} item ids appear more than once in {table.path.name} "
        f"({len(repeated)} rows), e.g. {distinct[:SAMPLE]} (first at {table.where(int(repeated.index[0]))}); "
        "each item must have exactly one catalog row: merge or remove the duplicates"
    )


def align_item_ids(
    table: Table, column: str, item_ids: pd.Series, catalog_ids: pd.Series, catalog: Table
) -> pd.Series:
    """The interactions' item ids in the catalog's kind, each one checked to be in the catalog.

    The catalog's kind wins. String ids that are integers written plainly become integers when
    the catalog's are (``"42"`` is item 42, ``"042"`` is not); integers become their decimal
    strings when the catalog's are strings. Any other mismatch is refused, and so is an id the
    catalog lacks: dropping those interactions would quietly change what is learnt.
    """
    where = table.field("itemColumn", column)
    catalog_int = pd.api.types.is_integer_dtype(catalog_ids)
    if catalog_int and not pd.api.types.is_integer_dtype(item_ids):
        plain = item_ids.str.fullmatch(_CANONICAL_INT)
        if not plain.all():
            bad = _first(~plain)
            raise DataError(
                f"{where}: holds strings such as {item_ids.iloc[bad]!r} ({table.where(bad)}), but the "
                f"catalog's ids ({catalog.block}.idColumn in {catalog.path.name}) are integers; the "
                "same item must have the same id in both files: fix the ids so that both files write "
                "each item's id the same way"
            )
        item_ids = item_ids.astype("int64")
    elif not catalog_int and pd.api.types.is_integer_dtype(item_ids):
        item_ids = item_ids.astype(str)
    unknown = ~item_ids.isin(catalog_ids)
    if unknown.any():
        count = int(unknown.sum())
        names = list(dict.fromkeys(item_ids[unknown].tolist()))
        raise DataError(
            f"{where}: {count} of {len(item_ids)} interactions ({count / len(item_ids):.2%}) name "
            f"{len(names)} items that are not in the catalog ({catalog.path.name}), e.g. {names[:SAMPLE]} "
            f"(first at {table.where(_first(unknown))}); add those items to the catalog or remove their "
            "interactions (they are refused, not dropped, so that nothing is lost silently)"
        )
    return item_ids


def _as_text(value: Any) -> str:
    """One cell as text: lists comma-joined, nulls empty, everything stripped."""
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(part for part in (_as_text(v) for v in value) if part)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()


def _texts(values: pd.Series) -> pd.Series:
    return values.map(_as_text).astype(object).reset_index(drop=True)


def titles(table: Table, column: str | None, item_ids: pd.Series) -> pd.Series:
    """Display titles: the title column, or the id as text; a blank title is refused."""
    if column is None:
        return item_ids.astype(str).astype(object)
    shown = _texts(table.frame[column])
    blank = shown == ""
    if blank.any():
        raise DataError(
            f"{table.field('titleColumn', column)}: {int(blank.sum())} items have no title, e.g. "
            f"{item_ids[blank].tolist()[:SAMPLE]} (first at {table.where(_first(blank))}); fill them in, "
            "or unset titleColumn to show ids"
        )
    return shown


def rendered_text(table: Table, template: str, item_ids: pd.Series) -> pd.Series:
    """Each item's text from the template; an item whose every named field is empty is refused,
    since a text of separators alone tells the ranker nothing about it."""
    text = pd.Series([""] * len(table.frame), dtype=object)
    filled = pd.Series(np.zeros(len(table.frame), dtype=bool))
    for literal, name, _, _ in string.Formatter().parse(template):
        text = text + literal
        if name:
            value = _texts(table.frame[name])
            text = text + value
            filled |= value != ""
    if not filled.all():
        empty = ~filled
        raise DataError(
            f"{table.block}.text: the template {template!r} renders no text for {int(empty.sum())} of "
            f"{len(text)} items (every column it names is empty for them), e.g. item ids "
            f"{item_ids[empty].tolist()[:SAMPLE]} (first at {table.where(_first(empty))}); fill those "
            "columns, or add a column every item has to the template"
        )
    return text.str.strip()


def categories(table: Table, column: str | None, separator: str | None) -> list[list[str]]:
    """Each item's categories: a list cell as is, a string split by ``separator`` (or whole); null
    or empty cells have none."""
    if column is None:
        return [[] for _ in range(len(table.frame))]
    split: Callable[[str], list[str]] = (lambda s: s.split(separator)) if separator else (lambda s: [s])

    def one(value: Any) -> list[str]:
        if isinstance(value, list | tuple | np.ndarray):
            parts = [_as_text(v) for v in value]
        else:
            text = _as_text(value)
            parts = [p.strip() for p in split(text)] if text else []
        return [p for p in parts if p]

    return [one(v) for v in table.frame[column].tolist()]


def timestamps(table: Table, column: str) -> np.ndarray:
    """Unix seconds (int64) from integer or float seconds, ISO-8601 text, or a timestamp type.

    ISO-8601 text without an offset is read as UTC; float seconds are floored.
    """
    values = table.frame[column].reset_index(drop=True)
    where = table.field("timestampColumn", column)
    missing = _blank(values)
    if missing.any():
        raise DataError(
            f"{where}: {int(missing.sum())} interactions have no timestamp (the first at "
            f"{table.where(_first(missing))}); every interaction needs one to order histories"
        )
    if pd.api.types.is_datetime64_any_dtype(values):
        return _seconds(pd.to_datetime(values, utc=True))
    if pd.api.types.is_bool_dtype(values):
        raise DataError(f"{where}: holds true/false values; expected Unix seconds or ISO-8601 times")
    if pd.api.types.is_numeric_dtype(values):
        return _from_seconds(table, where, values.astype("float64"))
    text = values.map(lambda v: v if isinstance(v, str) else str(v)).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return _from_seconds(table, where, numbers.astype("float64"))
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    if parsed.notna().all():
        return _seconds(parsed)
    neither = numbers.isna() & parsed.isna()
    if neither.any():
        first = _first(neither)
        raise DataError(
            f"{where}: {int(neither.sum())} timestamps cannot be read, e.g. {text.iloc[first]!r} at "
            f"{table.where(first)}; write Unix seconds (e.g. 1714564800) or ISO-8601 times "
            "(e.g. 2024-05-01T12:00:00Z), one kind for the whole column"
        )
    number, iso = _first(numbers.notna()), _first(numbers.isna())
    raise DataError(
        f"{where}: mixes Unix seconds ({text.iloc[number]!r} at {table.where(number)}) with ISO-8601 "
        f"times ({text.iloc[iso]!r} at {table.where(iso)}); write the whole column one way"
    )


def _from_seconds(table: Table, where: str, seconds: pd.Series) -> np.ndarray:
    infinite = ~np.isfinite(seconds.to_numpy())
    if infinite.any():
        first = _first(infinite)
        raise DataError(f"{where}: {_shown(seconds.iloc[first])} at {table.where(first)} is not a time")
    late = seconds.to_numpy() > LATEST_SECONDS
    if late.any():
        first = _first(late)
        raise DataError(
            f"{where}: {seconds.iloc[first]:.0f} at {table.where(first)} is after the year 3000 in Unix "
            "seconds: the column looks like milliseconds or microseconds; convert it to seconds"
        )
    return np.asarray(np.floor(seconds.to_numpy()), dtype=np.int64)


def _seconds(times: pd.Series) -> np.ndarray:
    epoch = pd.Timestamp(0, tz="UTC")
    return np.asarray((times - epoch) // pd.Timedelta(seconds=1), dtype=np.int64)


def weights(table: Table, column: str | None) -> np.ndarray:
    """float64 weights: the numeric column, or 1.0 each when the spec names none."""
    if column is None:
        return np.ones(len(table.frame), dtype="float64")
    values = table.frame[column].reset_index(drop=True)
    where = table.field("weightColumn", column)
    missing = _blank(values)
    if missing.any():
        raise DataError(
            f"{where}: {int(missing.sum())} interactions have no weight (the first at "
            f"{table.where(_first(missing))}); fill them in, or unset weightColumn to weigh every "
            "interaction 1.0"
        )
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
    else:
        numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
        bad = numbers.isna()
        if bad.any():
            first = _first(bad)
            raise DataError(
                f"{where}: is not numeric: {int(bad.sum())} values such as {_shown(values.iloc[first])} at "
                f"{table.where(first)}; weights must be numbers (a rating, or 1 view / 3 cart / 5 "
                "purchase): convert the column, or unset weightColumn"
            )
    infinite = ~np.isfinite(numbers.to_numpy())
    if infinite.any():
        first = _first(infinite)
        raise DataError(
            f"{where}: {_shown(numbers.iloc[first])} at {table.where(first)} is not a finite weight"
        )
    return np.asarray(numbers, dtype=np.float64)
