"""What the autoscaler sees: the handle's samples and pushes, and the controller's average."""

from __future__ import annotations

import pytest

from recserve_operator.autoscale.handle_metrics import HandleRecorder, Report, aggregate, merge

pytestmark = pytest.mark.unit


def test_the_controller_average_of_rays_own_example():
    """The worked example in Ray's ``get_total_num_requests`` docstring: 23.4 / 1.7 = 13.76."""
    report = Report(
        sent_at=1.5,
        queued=[(0.3, 2.0), (1.0, 3.0)],
        running={1: [(0.2, 5.0), (0.8, 7.0), (1.5, 6.0)], 2: [(0.1, 3.0), (0.9, 4.0), (1.4, 8.0)]},
    )
    view = aggregate(report, running=[1, 2])
    assert view is not None
    assert view.window_start == 0.3
    assert view.mean(2.0) == pytest.approx(23.4 / 1.7)


def test_a_replica_that_is_no_longer_running_does_not_count():
    report = Report(sent_at=10.0, queued=[(0.0, 0.0)], running={1: [(0.0, 4.0)], 2: [(0.0, 6.0)]})
    view = aggregate(report, running=[1])
    assert view is not None and view.mean(10.0) == pytest.approx(4.0)


def test_the_last_value_holds_until_now():
    report = Report(sent_at=6.0, queued=[(0.0, 2.0), (6.0, 4.0)], running={})
    view = aggregate(report, running=[])
    assert view is not None
    assert view.mean(10.0) == pytest.approx((2 * 6 + 4 * 4) / 10)
    # At the last sample's own time Ray counts it for 1 ms rather than dividing by zero.
    assert view.mean(6.0) == pytest.approx((2 * 6 + 4 * 0.001) / 6.001)


def test_merge_sums_the_last_values():
    assert merge([[(0.0, 1.0), (2.0, 3.0)], [(1.0, 10.0)]]) == [(0.0, 1.0), (1.0, 11.0), (2.0, 13.0)]


def test_the_handle_keeps_a_look_back_of_samples_and_sends_now_for_a_series_without_any():
    recorder = HandleRecorder(look_back_s=30.0)
    for t in (0.0, 6.0, 12.0, 18.0, 24.0, 30.0, 36.0):
        recorder.record(t, queued=1, in_flight={7: 2})
    report = recorder.push(40.0, queued=5, in_flight={7: 3, 8: 1})
    assert [t for t, _ in report.queued] == [12.0, 18.0, 24.0, 30.0, 36.0]
    assert [t for t, _ in report.running[7]] == [12.0, 18.0, 24.0, 30.0, 36.0]
    assert report.running[8] == [(40.0, 1.0)]  # a replica with no sample yet: its current count, now


def test_a_replica_the_handle_no_longer_tracks_ages_out():
    recorder = HandleRecorder(look_back_s=30.0)
    recorder.record(0.0, queued=0, in_flight={1: 1})
    recorder.record(40.0, queued=0, in_flight={})
    assert recorder.running == {}
