"""Ray Serve's default autoscaling decision (policy.decide), against cases worked out by hand.

Each case follows the rules in policy.py's docstring; tests/integration/test_autoscale_ray_parity.py
checks the same function against Ray's own code on random sequences.
"""

from __future__ import annotations

import pytest
from autoscale_fixtures import knobs

from recserve_operator.autoscale.policy import DelayState, damped, decide

pytestmark = pytest.mark.unit


def run(ticks: list[tuple[float, float, int]], k, target: int) -> list[int]:
    """Decide at each (time, total requests, running) tick, carrying the target and the state."""
    state = DelayState()
    out = []
    for now, total, running in ticks:
        decision = decide(total, running, target, k, state, now)
        target, state = decision.replicas, decision.state
        out.append(target)
    return out


def test_ten_ongoing_at_target_two_on_one_replica_becomes_five_after_the_upscale_delay():
    k = knobs(upscale_delay_s=30)
    ticks = [(t, 10.0, 1) for t in (0.0, 10.0, 29.9, 30.0)]
    assert run(ticks, k, target=1) == [1, 1, 1, 5]


def test_a_zero_upscale_delay_scales_on_the_first_tick():
    assert run([(0.0, 10.0, 1)], knobs(upscale_delay_s=0), target=1) == [5]


def test_a_tick_that_wishes_the_current_target_restarts_the_upscale_clock():
    k = knobs(upscale_delay_s=30)
    ticks = [(0.0, 10.0, 1), (20.0, 2.0, 1), (25.0, 10.0, 1), (50.0, 10.0, 1), (55.0, 10.0, 1)]
    assert run(ticks, k, target=1) == [1, 1, 1, 1, 5]


def test_a_change_of_direction_restarts_the_clock():
    k = knobs(upscale_delay_s=10, downscale_delay_s=10)
    # 4 running at target 4: wish up (12 ongoing -> 6), then down (2 -> 1), then down again.
    ticks = [(0.0, 12.0, 4), (5.0, 2.0, 4), (14.0, 2.0, 4), (15.0, 2.0, 4)]
    assert run(ticks, k, target=4) == [4, 4, 4, 1]


def test_downscale_waits_for_its_delay_and_stops_at_one():
    k = knobs(min_replicas=0, downscale_delay_s=600)
    ticks = [(0.0, 0.0, 3), (599.0, 0.0, 3), (600.0, 0.0, 3)]
    assert run(ticks, k, target=3) == [3, 3, 1]


def test_one_to_zero_uses_the_downscale_delay_when_min_replicas_is_zero():
    k = knobs(min_replicas=0, downscale_delay_s=60)
    assert run([(0.0, 0.0, 1), (60.0, 0.0, 1)], k, target=1) == [1, 0]


def test_min_and_max_clamp_the_decision():
    k = knobs(min_replicas=2, max_replicas=4, upscale_delay_s=0, downscale_delay_s=0)
    assert run([(0.0, 100.0, 2)], k, target=2) == [4]
    assert run([(0.0, 0.0, 4)], k, target=4) == [2]


def test_the_upscaling_factor_damps_the_step_from_the_running_count():
    k = knobs(upscaling_factor=0.5, upscale_delay_s=0)
    # 2 running, 16 ongoing at target 2: the wish is 8, damped to ceil(2 + 0.5 × 6) = 5.
    assert damped(8.0, 2, k) == 5
    assert run([(0.0, 16.0, 2)], k, target=2) == [5]


def test_the_downscaling_factor_damps_and_a_stuck_downscale_moves_by_one():
    assert damped(2.0, 8, knobs(downscaling_factor=0.5)) == 5  # ceil(8 - 0.5 × 6)
    # ceil(4 - 0.1 × 1) = 4 would never move; Ray then steps down by one.
    assert damped(3.0, 4, knobs(downscaling_factor=0.1)) == 3


def test_replicas_still_starting_hold_the_target():
    # Target 5 with 1 running and 4 starting: 10 ongoing wishes 5, which is the target: no change.
    assert run([(0.0, 10.0, 1), (700.0, 10.0, 1)], knobs(), target=5) == [5, 5]


def test_cold_start_goes_to_one_replica_at_once():
    k = knobs(min_replicas=0, upscale_delay_s=30)
    decision = decide(0.5, 0, 0, k, DelayState(), 0.0)
    assert decision.replicas == 1
    assert decide(0.0, 0, 0, k, DelayState(), 0.0).replicas == 0  # nothing seen, nothing started
