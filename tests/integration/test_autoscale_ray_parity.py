"""The simulator's decision rules and metric average against Ray Serve's own code, on random input.

``policy.decide`` and ``handle_metrics.aggregate`` are rewrites of Ray 2.60's default policy and
controller average. Here the pinned Ray's real functions (no cluster: ``_apply_autoscaling_config``
around ``replica_queue_length_autoscaling_policy``, and ``DeploymentAutoscalingState`` fed
``HandleMetricReport``s) answer the same random sequences, and every answer must agree. Integration
tier only because importing Ray takes seconds.
"""

from __future__ import annotations

import math
import random
from unittest import mock

import pytest

from recserve_operator.autoscale.handle_metrics import Report, aggregate
from recserve_operator.autoscale.knobs import Knobs
from recserve_operator.autoscale.policy import DelayState, decide

pytestmark = pytest.mark.integration


def _knobs(rng: random.Random) -> Knobs:
    low = rng.choice([0, 1, 2])
    return Knobs(
        min_replicas=low,
        max_replicas=low + rng.choice([1, 3, 8]),
        initial_replicas=None,
        target_ongoing_requests=rng.choice([0.5, 1.0, 2.0, 3.0, 8.0]),
        max_ongoing_requests=32,
        upscale_delay_s=rng.choice([0.0, 1.0, 5.0, 30.0]),
        downscale_delay_s=rng.choice([0.0, 2.0, 10.0, 60.0]),
        max_queued_requests=100,
        request_timeout_s=30.0,
        upscaling_factor=rng.choice([1.0, 0.5, 2.0]),
        downscaling_factor=rng.choice([1.0, 0.3]),
        downscale_to_zero_delay_s=rng.choice([None, 3.0]),
    )


@pytest.mark.parametrize("seed", range(20))
def test_decide_agrees_with_rays_default_policy(seed: int):
    from ray.serve import autoscaling_policy as ray_policy
    from ray.serve._private.common import DeploymentID
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    rng = random.Random(seed)
    k = _knobs(rng)
    config = AutoscalingConfig(
        min_replicas=k.min_replicas,
        max_replicas=k.max_replicas,
        target_ongoing_requests=k.target_ongoing_requests,
        upscale_delay_s=k.upscale_delay_s,
        downscale_delay_s=k.downscale_delay_s,
        upscaling_factor=k.upscaling_factor,
        downscaling_factor=k.downscaling_factor,
        downscale_to_zero_delay_s=k.downscale_to_zero_delay_s,
    )
    policy = ray_policy._apply_autoscaling_config(ray_policy.replica_queue_length_autoscaling_policy)
    deployment = DeploymentID(name="Ranker", app_name="m-0123456789")
    target = running = max(1, k.min_replicas)
    mine, theirs = DelayState(), {}
    now = 1000.0
    total = 2.0
    for _ in range(600):
        now += rng.choice([0.1, 0.1, 0.5, 3.0])
        total = max(0.0, total + rng.choice([-3.0, -1.0, -0.3, 0.0, 0.0, 0.4, 1.0, 4.0]))
        running = max(0, min(target, running + rng.choice([-1, 0, 0, 1, 1])))
        context = AutoscalingContext(
            deployment_id=deployment,
            deployment_name="Ranker",
            app_name="m-0123456789",
            current_num_replicas=running,
            target_num_replicas=target,
            running_replicas=[],
            total_num_requests=total,
            total_queued_requests=0.0,
            aggregated_metrics={},
            raw_metrics={},
            capacity_adjusted_min_replicas=k.min_replicas,
            capacity_adjusted_max_replicas=k.max_replicas,
            policy_state=dict(theirs),
            last_scale_up_time=None,
            last_scale_down_time=None,
            current_time=now,
            config=config,
        )
        with mock.patch.object(ray_policy.time, "time", return_value=now):
            raw, theirs = policy(context)
        expected = max(
            k.min_replicas, min(k.max_replicas, math.ceil(raw))
        )  # DeploymentAutoscalingState.apply_bounds
        decision = decide(total, running, target, k, mine, now)
        assert decision.replicas == expected, (now, total, running, target)
        mine, target = decision.state, decision.replicas


def _series(rng: random.Random, start: float, end: float) -> list[tuple[float, float]]:
    t = start + rng.uniform(0, 3)
    points = []
    while t < end:
        points.append((round(t, 2), float(rng.randint(0, 12))))
        t += rng.choice([0.5, 2.0, 6.0])
    return points


@pytest.mark.parametrize("seed", range(40))
def test_aggregate_agrees_with_rays_controller(seed: int):
    from ray.serve._private import autoscaling_state
    from ray.serve._private.autoscaling_state import DeploymentAutoscalingState
    from ray.serve._private.common import (
        RUNNING_REQUESTS_KEY,
        DeploymentHandleSource,
        DeploymentID,
        HandleMetricReport,
        ReplicaID,
        TimeStampedValue,
    )
    from ray.serve.config import AutoscalingConfig

    rng = random.Random(seed)
    deployment = DeploymentID(name="Ranker", app_name="m-0123456789")
    state = DeploymentAutoscalingState(deployment)
    state._config = AutoscalingConfig(min_replicas=1, max_replicas=8)
    replicas = {i: ReplicaID(f"r{i}", deployment) for i in range(rng.randint(1, 5))}
    running = [i for i in replicas if rng.random() < 0.8] or [0]
    state.update_running_replica_ids([replicas[i] for i in running])
    sent_at = 100.0
    queued = _series(rng, sent_at - 30, sent_at) or [(sent_at, 1.0)]
    per_replica = {
        i: _series(rng, sent_at - 30 + rng.uniform(0, 25), sent_at) or [(sent_at, 2.0)] for i in replicas
    }
    state.record_request_metrics_for_handle(
        HandleMetricReport(
            deployment_id=deployment,
            handle_id="router",
            actor_id="actor",
            handle_source=DeploymentHandleSource.REPLICA,
            queued_requests=[TimeStampedValue(t, v) for t, v in queued],
            metrics={
                RUNNING_REQUESTS_KEY: {
                    replicas[i].to_full_id_str(): [TimeStampedValue(t, v) for t, v in points]
                    for i, points in per_replica.items()
                }
            },
            timestamp=sent_at,
        )
    )
    view = aggregate(Report(sent_at, queued, per_replica), running)
    assert view is not None
    for now in (sent_at, sent_at + 0.1, sent_at + 4.0, sent_at + 9.9):
        with mock.patch.object(autoscaling_state.time, "time", return_value=now):
            expected = state.get_total_num_requests()
        assert view.mean(now) == pytest.approx(expected, rel=1e-9, abs=1e-9), now
