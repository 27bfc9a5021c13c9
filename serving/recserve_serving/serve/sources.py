"""Where a router's catalog comes from: its data and its users' histories."""

from __future__ import annotations

from recserve_serving.example_data import load_example
from recserve_serving.serve.catalog import Catalog
from recserve_serving.serve.config import RouterConfig


def open_catalog(config: RouterConfig) -> Catalog:
    return Catalog.open(load_example(), config.index_dir)
