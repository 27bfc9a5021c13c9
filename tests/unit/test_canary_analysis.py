from datetime import UTC, datetime, timedelta

import pytest

from recserve_operator.analysis.scrape import Sample, ScrapeProvider
from recserve_operator.api.types import AnalysisSpec
from recserve_operator.planners.analysis import WindowMetrics, histogram_quantile, judge, ks_statistic
from recserve_serving.serve.metrics import REQUESTS

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = AnalysisSpec(max_error_rate=0.01, max_p99_latency_ms=50, max_score_shift=0.2, min_requests=100)


@pytest.mark.parametrize(
    ("metrics", "verdict", "says"),
    [
        (WindowMetrics(99, 0, 10.0, 0.0), "Inconclusive", "99 canary requests"),
        (WindowMetrics(1000, 5, 10.0, 0.05), "Pass", "within limits"),
        (WindowMetrics(1000, 20, 10.0, 0.05), "Fail", "error rate 0.0200 > 0.01"),
        (WindowMetrics(1000, 0, 80.0, 0.05), "Fail", "p99 latency 80.0ms > 50"),
        (WindowMetrics(1000, 0, 10.0, 0.5), "Fail", "score shift 0.500 > 0.2"),
        (WindowMetrics(1000, 0, None, None), "Inconclusive", "score shift not measurable"),
    ],
)
def test_judge(metrics, verdict, says):
    result = judge(LIMITS, metrics, NOW)
    assert result.verdict == verdict
    assert says in result.message


def test_ks_of_identical_histograms_is_zero_and_of_disjoint_is_one():
    bounds = [0.0, 1.0, 2.0, float("inf")]
    assert ks_statistic(bounds, [0, 5, 10, 10], [0, 50, 100, 100]) == 0
    assert ks_statistic(bounds, [10, 10, 10, 10], [0, 0, 10, 10]) == 1
    assert ks_statistic(bounds, [0, 0, 0, 0], [0, 1, 2, 2]) is None


def test_histogram_quantile_interpolates_like_prometheus():
    bounds = [0.1, 0.2, 0.4, float("inf")]
    assert histogram_quantile(0.5, bounds, [0, 10, 10, 10]) == pytest.approx(0.15)
    assert histogram_quantile(0.99, bounds, [0, 0, 100, 100]) == pytest.approx(0.398)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 0]) is None


def _router(requests: float) -> Sample:
    labels = (("code", "200"), ("model", "m"), ("path", "/v1/recommend"), ("version", "m/2"))
    return Sample({(REQUESTS, labels): requests})


class _Router(ScrapeProvider):
    """The router's counters, scripted: no process, no network."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0.0

    def scrape(self, endpoint: str) -> Sample:
        return _router(self.requests)


def test_a_scrape_window_opened_as_its_step_starts_counts_every_request_of_the_step():
    router, start = _Router(), datetime(2026, 1, 1, tzinfo=UTC)
    router.requests = 5000  # before the step
    opened = router.canary_window("http://r", "m", "m/1", "m/2", start, start)
    assert (opened.requests, opened.window_start) == (0, start)
    router.requests = 5300
    later = router.canary_window("http://r", "m", "m/1", "m/2", start, start + timedelta(seconds=30))
    assert (later.requests, later.window_start) == (300, start)


def test_a_restarted_operator_reports_a_late_window_instead_of_judging_seconds_of_traffic():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    restart = start + timedelta(minutes=5)
    restarted = _Router()  # a new process: the baseline taken at the step's start is gone
    restarted.requests = 9000
    first = restarted.canary_window("http://r", "m", "m/1", "m/2", start, restart)
    assert (first.requests, first.window_start) == (0, restart)
    restarted.requests = 9100  # ten seconds of traffic: above minRequests, but not a full pause
    after = restarted.canary_window("http://r", "m", "m/1", "m/2", restart, restart + timedelta(seconds=10))
    assert (after.requests, after.window_start) == (100, restart)
    judged = judge(AnalysisSpec(max_error_rate=0.01, min_requests=50), after, restart)
    assert judged.verdict == "Pass", "so reconcile, not the verdict, must hold the step for a full pause"
