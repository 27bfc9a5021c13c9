"""The bundled example: MovieLens ml-latest-small as one ``spec.data`` among any.

The only place in the serving package that knows the example's name and files. A
RecommenderModel without ``spec.data`` serves it, and commands and tests that need "some real
data" without a manifest (``recserve train`` with no ``--data``, the test models, the
benchmarks) read it through here, exactly as a manifest's ``spec.data`` reads any other catalog.
"""

from __future__ import annotations

from recserve_serving.data import Dataset, load_dataset
from recserve_serving.dataspec import CatalogSpec, DataSpec, InteractionsSpec

EXAMPLE_DATA = DataSpec(
    catalog=CatalogSpec(
        uri="bundled://movielens-small/movies.csv",
        id_column="movieId",
        title_column="title",
        text="{title} | {genres}",
        category_column="genres",
        category_separator="|",
    ),
    interactions=InteractionsSpec(
        uri="bundled://movielens-small/ratings.csv",
        user_column="userId",
        item_column="movieId",
        timestamp_column="timestamp",
        weight_column="rating",
        positive_threshold=4.0,
    ),
)
"""MovieLens ratings out of 5: four stars and up is a like."""


def load_example(*, holdout_fraction: float = 0.2) -> Dataset:
    """The example as a ``Dataset``."""
    return load_dataset(EXAMPLE_DATA, holdout_fraction=holdout_fraction)
