"""Read the catalog and interaction tables that ``spec.data`` names into ``LoadedData``.

Whatever a platform exports (CSV or Parquet, its own column names, integer or string ids) is
read whole, checked, and mapped onto the two fixed frames of ``loaded_data``. Bad data is
refused with a ``DataError`` that names the file, the spec field and the fix, never repaired
silently: an interaction dropped for naming an unknown item, or a timestamp guessed, would
change what the model learns without anyone noticing. Column-level conversions live in
``tabular_columns``; this module finds, reads and digests the files and assembles the result.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import pandas as pd

from recserve_serving.dataspec import CatalogSpec, DataSpec, InteractionsSpec, format_of, uri_problem
from recserve_serving.errors import DataError
from recserve_serving.loaded_data import INTERACTION_COLUMNS, ITEM_COLUMNS, LoadedData
from recserve_serving.paths import bundled_data_dir
from recserve_serving.tabular_columns import (
    Table,
    align_item_ids,
    categories,
    ids,
    rendered_text,
    timestamps,
    titles,
    unique_ids,
    weights,
)
from recserve_serving.uri_paths import pvc_path

DIGEST_VERSION = 1
"""Bumped when the loader's output for the same files and mapping changes, so digests move too."""
_CHUNK = 1 << 20


def resolve_uri(uri: str, field: str) -> Path:
    """The local file a data URI names; DataError when it is unsafe or not there."""
    problem = uri_problem(uri)
    if problem:
        raise DataError(f"{field}: {problem}")
    scheme = uri.split("://", 1)[0]
    if scheme == "pvc":
        path = pvc_path(uri, DataError)
    elif scheme == "bundled":
        root = bundled_data_dir().resolve()
        path = (root / unquote(uri.split("://", 1)[1])).resolve()
        if not path.is_relative_to(root):
            raise DataError(f"{field}: {uri} resolves to {path}, outside the bundled data {root}")
    else:
        path = Path(unquote(urlparse(uri).path))
    if not path.is_file():
        raise DataError(f"{field}: {uri} names {path}, which {_absence(path)}; {_fix_for(scheme)}")
    return path


def _absence(path: Path) -> str:
    return "is a directory, not a file" if path.is_dir() else "does not exist"


def _fix_for(scheme: str) -> str:
    if scheme == "bundled":
        root = bundled_data_dir()
        shipped = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return f"bundled data sets under {root}: {', '.join(shipped) or 'none'}"
    if scheme == "pvc":
        return "copy the file onto the claim at that path, or fix the URI"
    return "fix the path (it is read on the machine that loads the data), or copy the file there"


def read_table(path: Path, table_format: Literal["csv", "parquet"], uri: str, block: str) -> Table:
    """One whole file as a frame with stripped column names.

    CSV is read as text (only empty fields are null), so that ids keep their leading zeros and
    titles such as "NA" stay titles; ``tabular_columns`` converts what must be numeric.
    ``utf-8-sig`` drops the byte-order mark spreadsheet exports start with.
    """
    try:
        if table_format == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
        else:
            import pyarrow.parquet as pq

            frame = pq.read_table(path).to_pandas()
    except Exception as error:  # pandas and pyarrow raise many kinds for a file they cannot parse
        raise DataError(
            f"{block}.uri: cannot read {path} (from {uri}) as {table_format}: "
            f"{type(error).__name__}: {_first_line(error)}; check that the file is whole, or set "
            f"{block}.format to the format it is in"
        ) from None
    stripped = [str(c).strip() for c in frame.columns]
    repeated = sorted({c for c in stripped if stripped.count(c) > 1})
    if repeated:
        raise DataError(
            f"{block}.uri: {path} has repeated column names {repeated} (after stripping spaces); "
            "rename them so each column is named once"
        )
    frame.columns = pd.Index(stripped)
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(object)
    return Table(frame, path, uri, block, table_format)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no detail"


def require_columns(table: Table, named: dict[str, str]) -> None:
    """Every column the spec names (spec field → column) must be in the table; one error names
    them all, the columns found, and a close match when there is one."""
    found = list(table.frame.columns)
    missing = [(field, column) for field, column in named.items() if column not in found]
    if not missing:
        return
    lines = []
    for field, column in missing:
        close = difflib.get_close_matches(column, found, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"{table.block}.{field} names column {column!r}, which {table.path.name} lacks{hint}")
    raise DataError(
        "; ".join(lines) + f". Columns found in {table.path} (from {table.uri}): {found}. "
        "Fix the spec's column names, or the file's header"
    )


def _catalog_columns(spec: CatalogSpec) -> dict[str, str]:
    named = {"idColumn": spec.id_column}
    if spec.title_column is not None:
        named["titleColumn"] = spec.title_column
    if spec.category_column is not None:
        named["categoryColumn"] = spec.category_column
    for field in spec.text_fields:
        named.setdefault(f"text {{{field}}}", field)
    return named


def _interaction_columns(spec: InteractionsSpec) -> dict[str, str]:
    named = {
        "userColumn": spec.user_column,
        "itemColumn": spec.item_column,
        "timestampColumn": spec.timestamp_column,
    }
    if spec.weight_column is not None:
        named["weightColumn"] = spec.weight_column
    return named


def _open(uri: str, declared: Literal["auto", "csv", "parquet"], block: str) -> Table:
    path = resolve_uri(uri, f"{block}.uri")
    table_format = format_of(uri, declared)
    if table_format is None:
        raise DataError(f"{block}.format: auto cannot tell the format of {uri}; set format: csv or parquet")
    return read_table(path, table_format, uri, block)


def load_catalog(spec: CatalogSpec) -> tuple[pd.DataFrame, Table]:
    """The ``items`` frame (ITEM_COLUMNS) and the table it came from."""
    table = _open(spec.uri, spec.format, "data.catalog")
    if table.frame.empty:
        raise DataError(
            f"data.catalog.uri: {table.path} (from {spec.uri}) has no rows; the catalog needs at least one item"
        )
    require_columns(table, _catalog_columns(spec))
    item_ids = ids(table, spec.id_column, "idColumn")
    unique_ids(table, item_ids, "idColumn")
    shown = titles(table, spec.title_column, item_ids)
    text = (
        rendered_text(table, spec.text, item_ids) if spec.text is not None else pd.Series(shown, dtype=object)
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids.to_numpy(),
            "title": shown.to_numpy(),
            "text": text.to_numpy(),
            "categories": categories(table, spec.category_column, spec.category_separator),
        },
        columns=list(ITEM_COLUMNS),
    )
    return items, table


def load_interactions(
    spec: InteractionsSpec, items: pd.DataFrame, catalog: Table
) -> tuple[pd.DataFrame, Table]:
    """The ``interactions`` frame (INTERACTION_COLUMNS), every item id checked against ``items``,
    and the table it came from."""
    table = _open(spec.uri, spec.format, "data.interactions")
    if table.frame.empty:
        raise DataError(
            f"data.interactions.uri: {table.path} (from {spec.uri}) has no rows; "
            "training needs interactions to learn from"
        )
    require_columns(table, _interaction_columns(spec))
    users = ids(table, spec.user_column, "userColumn")
    item_ids = align_item_ids(
        table, spec.item_column, ids(table, spec.item_column, "itemColumn"), items["item_id"], catalog
    )
    frame = pd.DataFrame(
        {
            "user_id": users.to_numpy(),
            "item_id": item_ids.to_numpy(),
            "timestamp": timestamps(table, spec.timestamp_column),
            "weight": weights(table, spec.weight_column),
        },
        columns=list(INTERACTION_COLUMNS),
    )
    return frame, table


def data_digest(spec: DataSpec, catalog: Path, interactions: Path) -> str:
    """sha256 over the mapping that shapes the data and the bytes of both files.

    The URIs and the history block are left out: the same bytes read the same way give the
    same data wherever they are stored, and where histories come from at serving time does
    not change what is trained on. ``format`` enters resolved, so auto and its explicit
    equivalent agree.
    """
    mapping = {
        "version": DIGEST_VERSION,
        "catalog": {
            **spec.catalog.model_dump(mode="json", by_alias=True, exclude={"uri"}),
            "format": format_of(spec.catalog.uri, spec.catalog.format),
        },
        "interactions": {
            **spec.interactions.model_dump(mode="json", by_alias=True, exclude={"uri"}),
            "format": format_of(spec.interactions.uri, spec.interactions.format),
            "positiveThreshold": spec.interactions.threshold,
        },
    }
    digest = hashlib.sha256(json.dumps(mapping, sort_keys=True, separators=(",", ":")).encode())
    for name, path in (("catalog", catalog), ("interactions", interactions)):
        digest.update(f"\n{name} {path.stat().st_size}\n".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def load_data(spec: DataSpec) -> LoadedData:
    """Read, check and map both tables; DataError on the first thing that is wrong with them."""
    items, catalog = load_catalog(spec.catalog)
    interactions, events = load_interactions(spec.interactions, items, catalog)
    digest = data_digest(spec, catalog.path, events.path)
    return LoadedData(
        items=items,
        interactions=interactions,
        positive_threshold=spec.interactions.threshold,
        digest=digest,
    )
