from datetime import UTC, datetime

import pytest

from recserve_operator.api.types import AnalysisSpec
from recserve_operator.planners.analysis import WindowMetrics, histogram_quantile, judge, ks_statistic

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
