import numpy as np
import pytest

from recserve_serving.retrieval import ItemIndex

pytestmark = pytest.mark.unit


def index() -> ItemIndex:
    # Two clusters of items: ids 1-3 point along x, ids 4-6 along y.
    vectors = np.array([[1, 0.1], [1, 0.15], [1, 0.5], [0.1, 1], [0.15, 1], [0.5, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ItemIndex(np.arange(1, 7), vectors)


def test_search_returns_the_users_neighbourhood_without_seen_items():
    found = index().search(history=[1], exclude={1}, n=2)
    assert found == [2, 3]


def test_recent_history_weighs_more():
    idx = index()
    assert idx.search(history=[4, 1], exclude={1, 4}, n=1)[0] in {2, 3}
    assert idx.search(history=[1, 4], exclude={1, 4}, n=1)[0] in {5, 6}


def test_unknown_history_gives_no_vector():
    assert index().user_vector([99]) is None
    assert index().search([99], set(), 3) == []


def test_exclusions_never_leak_even_when_n_exceeds_catalog():
    found = index().search(history=[1], exclude={2, 3}, n=10)
    assert set(found) == {1, 4, 5, 6}
