"""A user's data after loading and checking: the one shape every catalog is read into.

Whatever a platform's tables look like (CSV or Parquet, its own column names, integer or
string ids), ``spec.data`` maps them onto these two frames, and everything downstream
(training, the retrieval indexes, the router) reads only these. Ids stay as the user wrote
them (``item_id`` and ``user_id`` are int64 when every id in the column is an integer, else
str), so responses and feedback speak the user's own ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

ITEM_COLUMNS = ("item_id", "title", "text", "categories")
"""``items``: the id, a short display title (what user texts list), the ranker's item text
rendered from the spec's template, and a list of category strings (empty when the spec names
no category column)."""

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "weight")
"""``interactions``: who, which item, when (int64 Unix seconds) and how strongly (float64; 1.0
when the spec names no weight column)."""


@dataclass(frozen=True)
class LoadedData:
    """A checked catalog and interaction table, and the digest of everything that shaped them.

    ``positive_threshold``: an interaction with ``weight >= positive_threshold`` is a like
    (for ratings out of 5, 4.0; for implicit data, 0.0 so that every interaction counts).
    ``digest``: sha256 over the files' bytes and the mapping, so that an index or engine built
    from this data is keyed by it and rebuilt only when the data or its mapping changes.
    """

    items: pd.DataFrame
    interactions: pd.DataFrame
    positive_threshold: float
    digest: str
