"""bench/autoscale_validate.py's comparison: what it counts as real replica-seconds and upscales."""

from __future__ import annotations

import math

import pytest
from autoscale_fixtures import knobs

from bench.autoscale_bench.compare import compare as compare_rows
from bench.autoscale_bench.compare import first_upscale, p99_ms, p99_per_second, replica_seconds, table
from bench.autoscale_bench.observe import Sample, decisions_of, ranker_deployment, sample_of
from recserve_operator.autoscale.figures import figures
from recserve_operator.autoscale.service import ServiceModel
from recserve_operator.autoscale.simulate import simulate
from recserve_operator.loadgen import Replayed

pytestmark = pytest.mark.unit
SAMPLES = [Sample(0.0, 1, 1, 1), Sample(10.0, 3, 1, 3), Sample(20.0, 3, 3, 3), Sample(40.0, 1, 1, 1)]


def test_replica_seconds_hold_each_sample_until_the_next():
    assert replica_seconds(SAMPLES, 0.0, 50.0) == pytest.approx(1 * 10 + 3 * 10 + 3 * 20 + 1 * 10)
    assert replica_seconds(SAMPLES, 5.0, 15.0) == pytest.approx(1 * 5 + 3 * 5)


def test_first_upscale_is_the_first_rise_of_the_target():
    assert first_upscale(SAMPLES, 0.0) == 10.0
    assert first_upscale(SAMPLES, 15.0) is None


def test_rows_judge_the_issue_tolerances():
    service = ServiceModel(tuple((n, float(n)) for n in range(1, 101)), "fixed")
    arrivals = [0.05 + 0.1 * i for i in range(200)]
    result = simulate(arrivals, knobs(upscale_delay_s=5, startup_s=3), service, duration_s=20.0)
    real = [Sample(0.0, 1, 1, 1), Sample(14.0, 5, 1, 5), Sample(17.5, 5, 5, 5)]
    rows = compare_rows("A", real, 0.0, 20.0, [1.0] * 200, result, figures(result), 10.0)
    assert [(r.what, r.within) for r in rows] == [
        ("replica-seconds", True),  # 14 + 5 × 6 = 44 against 40 simulated
        ("p99 ms (all requests)", True),
        ("first upscale s", True),  # 14 s against 15 s
    ]
    assert math.isinf(p99_ms([1.0] * 98 + [math.inf] * 2))
    assert table(rows)[0].startswith("| setting | figure |")


def test_the_serve_rest_answer_is_read_for_the_models_ranker():
    answer = {
        "applications": {
            "m": {"deployments": {"Router": {}}},
            "m-0123456789": {
                "deployments": {
                    "Ranker": {
                        "target_num_replicas": 2,
                        "replicas": [{"state": "RUNNING"}, {"state": "STARTING"}],
                        "autoscaling_detail": {
                            "decisions": [
                                {"timestamp_s": 5.0, "prev_num_replicas": 1, "curr_num_replicas": 2}
                            ]
                        },
                    }
                }
            },
        }
    }
    deployment = ranker_deployment(answer, "m")
    assert deployment is not None
    assert sample_of(deployment, 3.0) == Sample(3.0, 2, 1, 2)
    assert decisions_of(deployment) == [(5.0, 1, 2)]
    assert ranker_deployment(answer, "other") is None


def test_real_p99_per_second_counts_failures_as_slowest():
    replayed = [
        Replayed(0.2, 0.1, 200),
        Replayed(0.7, 0.3, 200),
        Replayed(1.5, 0.2, 503),
        Replayed(9.0, 1.0, 200),
    ]
    assert p99_per_second(replayed, 5.0, 1.0) == [(0.0, pytest.approx(298.0)), (1.0, math.inf)]
