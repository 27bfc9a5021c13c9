"""The event-driven simulation: hand-worked scale timing, queueing theory, limits and cost."""

from __future__ import annotations

import math
import statistics

import pytest
from autoscale_fixtures import knobs

from recserve_operator.autoscale.figures import figures, quantile
from recserve_operator.autoscale.service import ServiceModel
from recserve_operator.autoscale.simulate import simulate
from recserve_operator.autoscale.trace import Trace

pytestmark = pytest.mark.unit

ONE_SECOND_EACH = ServiceModel(tuple((n, float(n)) for n in range(1, 101)), "fixed")
"""Every request takes exactly 1 s, however many a replica holds (like parallel servers)."""


def every(interval: float, start: float, end: float) -> list[float]:
    return [start + i * interval for i in range(math.ceil((end - start) / interval))]


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c (offered load a = λ/μ)."""
    top = offered**servers / math.factorial(servers) / (1 - offered / servers)
    return top / (sum(offered**k / math.factorial(k) for k in range(servers)) + top)


def test_ten_ongoing_at_target_two_scales_one_replica_to_five_after_the_upscale_delay():
    """10 requests/s of 1 s each hold 10 in flight. The handle samples at 0 and 6 s and pushes at
    10 s; the window opens at the replica's first sample (6 s), so the controller sees 10 and
    wishes 10 / 2 = 5 from the 10 s tick, and after the 5 s delay sets 5 at 15 s. The four new
    replicas run from 18 s (3 s start-up)."""
    arrivals = every(0.1, 0.05, 20.0)
    result = simulate(arrivals, knobs(upscale_delay_s=5, startup_s=3), ONE_SECOND_EACH, duration_s=20.0)
    assert len(result.events) == 1
    event = result.events[0]
    assert (event.before, event.after) == (1, 5)
    assert event.time == pytest.approx(15.0)
    assert event.total_requests == pytest.approx(10.0)
    assert result.timeline.running[17] == 1 and result.timeline.running[19] == 5
    # One replica for 15 s, then five (four of them starting) for the last 5 s.
    assert result.replica_seconds == pytest.approx(15 + 5 * 5)
    assert all(lat == pytest.approx(1.0) for lat in result.latency_s)


def test_new_replicas_counted_now_beside_a_stale_sample_overshoot():
    """Ray's handle reports a replica it has no sample of yet as its count at push time, next to
    the other replicas' last samples (router.py ``_get_metrics_report``), and the controller's
    window opens at the newest first sample. At the 20 s push the old replica still shows its
    18 s sample (10) while the four new ones show 2 each now: 18 seen for 10 in flight, so a
    short upscale delay adds replicas the load does not need."""
    arrivals = every(0.1, 0.05, 30.0)
    result = simulate(arrivals, knobs(upscale_delay_s=5, startup_s=3), ONE_SECOND_EACH, duration_s=30.0)
    assert [(e.before, e.after) for e in result.events] == [(1, 5), (5, 8)]
    assert result.events[1].time == pytest.approx(25.0)
    assert result.events[1].total_requests == pytest.approx(18.0)
    patient = simulate(arrivals, knobs(upscale_delay_s=30, startup_s=3), ONE_SECOND_EACH, duration_s=80.0)
    assert [(e.before, e.after) for e in patient.events] == [(1, 5)]


def test_load_that_stops_is_scaled_down_after_the_downscale_delay():
    arrivals = every(0.1, 0.05, 30.0)
    k = knobs(upscale_delay_s=5, downscale_delay_s=20, startup_s=3)
    result = simulate(arrivals, k, ONE_SECOND_EACH, duration_s=120.0)
    downs = result.downscales
    assert downs and downs[-1].after == 1 and result.timeline.replicas[-1] == 1
    # A wish to go down starts at the 30 s push at the earliest, and must hold for the 20 s delay.
    assert all(e.time >= 30 + 20 for e in downs)


@pytest.mark.parametrize("replicas, per_replica", [(1, 4), (2, 2)])
def test_constant_load_matches_erlang_c(replicas: int, per_replica: int):
    """Four servers of rate 1 (one replica holding 4, or two holding 2) at λ = 3: M/M/4 at
    ρ = 0.75, where Erlang C gives P(wait) = 0.509 and a mean wait of 0.509 s. The comparison
    uses the sample's own arrival rate and mean size, so that it tests the queue, not the
    random numbers."""
    service = ServiceModel(tuple((n, float(n)) for n in range(1, per_replica + 1)), "exponential")
    trace = Trace("constant", "rates", (0.0,), (3.0,), 20_000.0)
    arrivals = trace.arrivals(seed=1)
    k = knobs(
        min_replicas=replicas,
        max_replicas=replicas,
        max_ongoing_requests=per_replica,
        max_queued_requests=10**6,
    )
    result = simulate(arrivals, k, service, duration_s=trace.duration_s, seed=1)
    sizes = service.sizes(len(arrivals), seed=1)  # each request is served at rate 1: service time = size
    waits = [lat - size for lat, size in zip(result.latency_s, sizes, strict=True)]
    assert erlang_c(4, 3.0) == pytest.approx(0.5094, abs=1e-4)
    mean_size = statistics.fmean(sizes)
    offered = len(arrivals) / trace.duration_s * mean_size
    waited = erlang_c(4, offered)
    assert statistics.fmean(waits) == pytest.approx(waited * mean_size / (4 - offered), rel=0.1)
    assert sum(w > 1e-9 for w in waits) / len(waits) == pytest.approx(waited, rel=0.03)
    # Utilisation: busy server-seconds over capacity is λ/(cμ).
    assert sum(sizes) / (4 * trace.duration_s) == pytest.approx(0.75, rel=0.02)
    assert result.replica_seconds == pytest.approx(replicas * trace.duration_s)


def test_a_lone_request_has_the_profiled_latency_spread():
    service = ServiceModel.from_spread(((1, 4.0),), p50=240.0, p99=320.0)
    sizes = service.sizes(50_000, seed=1)
    assert statistics.fmean(sizes) == pytest.approx(1.0, rel=0.01)
    assert quantile(sizes, 0.99) / quantile(sizes, 0.5) == pytest.approx(320 / 240, rel=0.02)


def test_throughput_is_interpolated_and_flat_past_the_profile():
    service = ServiceModel(((1, 4.0), (2, 6.0), (4, 8.0)))
    assert [service.throughput(n) for n in (0, 1, 2, 3, 4, 10)] == [0.0, 4.0, 6.0, 7.0, 8.0, 8.0]


def test_a_full_queue_refuses_and_a_slow_request_times_out():
    burst = [0.01] * 20
    k = knobs(min_replicas=1, max_replicas=1, max_ongoing_requests=1, max_queued_requests=5)
    result = simulate(burst, k, ONE_SECOND_EACH, duration_s=1.0)
    assert (result.rejected, result.timed_out) == (14, 0)  # 1 in service, 5 waiting
    slow = ServiceModel(((1, 0.1),), "fixed")  # 10 s per request
    k = knobs(min_replicas=1, max_replicas=1, max_ongoing_requests=1, request_timeout_s=15.0)
    result = simulate([0.0, 0.0, 0.0], k, slow, duration_s=1.0)
    # The first answers at 10 s; the second starts then and finishes at 20 s, past the timeout;
    # the third leaves the queue at 15 s.
    assert result.latency_s[0] == pytest.approx(10.0)
    assert (result.rejected, result.timed_out) == (0, 2)
    shown = figures(result, slo_p99_ms=12_000)
    assert shown.answered == 1 and math.isinf(shown.p99_all_ms) and not shown.slo_met


def test_scale_from_zero_waits_for_the_handles_next_sample_and_push():
    """With no replica, the handle pushes at once, but its report holds only the samples it
    recorded (0 queued at 0 s), as in Ray; the queued request shows from the 6 s sample, at the
    10 s push, and the cold start then goes to one replica without a delay."""
    k = knobs(min_replicas=0, initial_replicas=0, startup_s=2.0)
    result = simulate([1.0], k, ONE_SECOND_EACH, duration_s=20.0)
    assert [(e.time, e.before, e.after) for e in result.events][:1] == [(pytest.approx(10.0), 0, 1)]
    assert result.latency_s[0] == pytest.approx(10.0 + 2.0 + 1.0 - 1.0)


def test_figures_price_and_violation_seconds():
    arrivals = every(0.1, 0.05, 20.0)
    result = simulate(arrivals, knobs(upscale_delay_s=5, startup_s=3), ONE_SECOND_EACH, duration_s=20.0)
    shown = figures(result, slo_p99_ms=900.0, price_per_replica_hour=3.6)
    assert shown.cost == pytest.approx(40 / 3600 * 3.6)
    assert shown.slo_violation_seconds == 20  # every second's requests take 1 s > 900 ms
    assert (shown.upscales, shown.downscales, shown.peak_replicas) == (1, 0, 5)


def test_bad_arrivals_are_refused():
    with pytest.raises(ValueError, match="sorted"):
        simulate([2.0, 1.0], knobs(), ONE_SECOND_EACH)
    with pytest.raises(ValueError, match=">= 0"):
        simulate([-1.0], knobs(), ONE_SECOND_EACH)
