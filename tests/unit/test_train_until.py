"""``recserve train --until``: a model trained as of a past moment, which a retrain brings up to date."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from recserve_operator.commands.train import timestamp
from recserve_serving.data import interactions_until
from recserve_serving.errors import DataError
from recserve_serving.loaded_data import LoadedData

pytestmark = pytest.mark.unit


def test_until_takes_unix_seconds_or_an_iso_date() -> None:
    assert timestamp("1536000000") == 1_536_000_000
    assert timestamp("2018-09-03") == 1_535_932_800  # midnight UTC
    assert timestamp("2018-09-03T02:00:00+02:00") == 1_535_932_800
    with pytest.raises(argparse.ArgumentTypeError, match="neither Unix seconds nor an ISO date"):
        timestamp("last tuesday")


def test_interactions_after_until_are_dropped_and_the_digest_says_so() -> None:
    items = pd.DataFrame({"item_id": [1, 2], "title": ["a", "b"], "text": ["a", "b"], "categories": [[], []]})
    interactions = pd.DataFrame(
        {
            "user_id": np.array([1, 1, 2], dtype=np.int64),
            "item_id": np.array([1, 2, 1], dtype=np.int64),
            "timestamp": np.array([10, 20, 30], dtype=np.int64),
            "weight": np.array([5.0, 5.0, 5.0]),
        }
    )
    loaded = LoadedData(items, interactions, 4.0, "base")
    cut = interactions_until(loaded, 20)
    assert cut.interactions.timestamp.tolist() == [10, 20]
    assert cut.digest != loaded.digest and interactions_until(loaded, 20).digest == cut.digest
    with pytest.raises(DataError, match=r"no interactions at or before 5 .*starts at 10"):
        interactions_until(loaded, 5)
