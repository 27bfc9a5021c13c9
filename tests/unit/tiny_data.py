"""A real data set small enough to reason about: four shop items, two users (string ids)."""

from __future__ import annotations

import pandas as pd

from recserve_serving.data import Dataset
from recserve_serving.loaded_data import LoadedData


def tiny() -> Dataset:
    items = pd.DataFrame(
        {
            "item_id": ["sku-a", "sku-b", "sku-c", "sku-d"],
            "title": ["A", "B", "C", "D"],
            "text": ["a", "b", "c", "d"],
            "categories": [["x"], ["x"], ["y"], []],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["sku-a", "sku-b", "sku-b", "sku-c"],
            "timestamp": [1, 2, 3, 4],
            "weight": [5.0, 1.0, 5.0, 5.0],
        }
    )
    return Dataset(LoadedData(items, interactions, 3.0, "f" * 64), holdout_fraction=0.5)
