"""The bundled example: MovieLens ml-latest-small as one ``spec.data`` among any.

The only place in the serving package that knows the example's name and files: commands
and tests that need "some real data" without a manifest (``recserve train`` with no
``--data``, the test models, the benchmarks) read it through here, exactly as a manifest's
``spec.data`` would read any other catalog.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from recserve_serving.data import Dataset
from recserve_serving.loaded_data import LoadedData

DATA_ENV = "RECSERVE_DATA"
EXAMPLE_NAME = "movielens-small"


def example_dir() -> Path:
    """The MovieLens ml-latest-small copy shipped in the repository (``RECSERVE_DATA`` overrides)."""
    from recserve_serving.paths import bundled_data_dir

    env = os.environ.get(DATA_ENV)
    return Path(env) if env else bundled_data_dir() / EXAMPLE_NAME


def load_example_data() -> LoadedData:
    root = example_dir()
    movies = pd.read_csv(root / "movies.csv")
    ratings = pd.read_csv(root / "ratings.csv")
    digest = hashlib.sha256()
    for name in ("movies.csv", "ratings.csv"):
        digest.update((root / name).read_bytes())
    items = pd.DataFrame(
        {
            "item_id": movies.movieId.astype("int64"),
            "title": movies.title.astype(str).str.strip(),
            "text": movies.title.astype(str).str.strip() + " | " + movies.genres.astype(str).str.strip(),
            "categories": [
                [] if g == "(no genres listed)" else str(g).split("|") for g in movies.genres.astype(str)
            ],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ratings.userId.astype("int64"),
            "item_id": ratings.movieId.astype("int64"),
            "timestamp": ratings.timestamp.astype("int64"),
            "weight": ratings.rating.astype("float64"),
        }
    )
    return LoadedData(items, interactions, 4.0, digest.hexdigest())


def load_example(*, holdout_fraction: float = 0.2) -> Dataset:
    """The example as a ``Dataset``."""
    return Dataset(load_example_data(), holdout_fraction)
