import random

import pytest

from recserve_serving.serve.routing import choose_version, user_bucket

pytestmark = pytest.mark.unit

USERS = range(1, 2001)


def canary_users(weight: float) -> set[int]:
    return {u for u in USERS if choose_version(u, weight) == "canary"}


def test_bucket_is_stable_across_calls():
    assert [user_bucket(u) for u in USERS] == [user_bucket(u) for u in USERS]


@pytest.mark.parametrize("weight", [5, 25, 50, 75])
def test_split_matches_weight_within_three_points(weight):
    share = len(canary_users(weight)) / len(USERS) * 100
    assert abs(share - weight) <= 3


def test_assignment_is_monotone_in_weight():
    previous: set[int] = set()
    for weight in (0, 1, 5, 25, 50, 99, 100):
        current = canary_users(weight)
        assert previous <= current, f"users left the canary when the weight rose to {weight}"
        previous = current
    assert previous == set(USERS)


def test_edges():
    assert canary_users(0) == set()
    assert canary_users(100) == set(USERS)


def test_anonymous_requests_split_by_weight():
    rng = random.Random(7)
    picks = [choose_version(None, 30, rng) for _ in range(5000)]
    assert abs(picks.count("canary") / len(picks) - 0.30) < 0.03
