"""Where a router's catalog comes from: its model's data (``spec.data``) and its users'
histories, read from the data set itself or from the online store."""

from __future__ import annotations

from pathlib import Path

from recserve_serving.data import load_dataset
from recserve_serving.errors import RecserveError
from recserve_serving.serve.catalog import Catalog
from recserve_serving.serve.config import RouterConfig


def open_catalog(config: RouterConfig) -> Catalog:
    if config.data is None:
        raise RecserveError(f"router {config.model_name}: its config names no data (spec.data) to serve")
    dataset = load_dataset(config.data)
    return Catalog.open(dataset, Path(config.index_dir))
