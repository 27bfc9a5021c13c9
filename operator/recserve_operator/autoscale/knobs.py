"""The settings a simulation runs with: the spec's autoscaling knobs plus Ray's fixed constants.

The spec exposes what an SRE tunes (``spec.serving.autoscaling``, ``limits``); Ray adds the
intervals and factors it does not expose. Their values are Ray 2.60's defaults, read from its
source, so that a simulation of an unchanged spec is a simulation of what Ray really runs:

- ``CONTROL_LOOP_INTERVAL_S`` 0.1 (``ray/serve/_private/constants.py``): one decision per tick;
- ``metrics_interval_s`` 10 and ``look_back_period_s`` 30 (``ray/serve/config.py``,
  ``AutoscalingConfig``): how often a handle pushes its samples, and how far back they reach;
- ``RAY_SERVE_AUTOSCALING_METRIC_RECORD_INTERVAL_FACTOR`` 0.2: a handle records a sample every
  ``min(look_back × 0.2, metrics_interval)`` seconds (6 s by default);
- ``smoothing_factor`` 1.0: both scaling factors when unset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recserve_serving.serving_spec import ServingSpec

CONTROL_LOOP_INTERVAL_S = 0.1
METRICS_INTERVAL_S = 10.0
LOOK_BACK_PERIOD_S = 30.0
RECORD_INTERVAL_FACTOR = 0.2
DEFAULT_STARTUP_SECONDS = 15.0
"""Replica start-up (scheduling, process start, engine load) when neither the profile nor the
caller says: roughly what a MiniLM ONNX replica takes on two shared cores. Give a measured
figure with ``--startup-seconds`` where you have one."""


@dataclass(frozen=True)
class Knobs:
    """Everything that decides how many replicas run and how requests wait for them."""

    min_replicas: int
    max_replicas: int
    initial_replicas: int | None
    target_ongoing_requests: float
    max_ongoing_requests: int
    upscale_delay_s: float
    downscale_delay_s: float
    max_queued_requests: int
    request_timeout_s: float
    startup_s: float = DEFAULT_STARTUP_SECONDS
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0
    downscale_to_zero_delay_s: float | None = None
    look_back_period_s: float = LOOK_BACK_PERIOD_S
    metrics_interval_s: float = METRICS_INTERVAL_S
    control_interval_s: float = CONTROL_LOOP_INTERVAL_S

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}"
            )
        if (
            self.initial_replicas is not None
            and not self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(f"initial_replicas {self.initial_replicas} is outside min..max")
        positive = {
            "target_ongoing_requests": self.target_ongoing_requests,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "request_timeout_s": self.request_timeout_s,
            "upscaling_factor": self.upscaling_factor,
            "downscaling_factor": self.downscaling_factor,
            "look_back_period_s": self.look_back_period_s,
            "metrics_interval_s": self.metrics_interval_s,
            "control_interval_s": self.control_interval_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (
            ("upscale_delay_s", self.upscale_delay_s),
            ("downscale_delay_s", self.downscale_delay_s),
            ("startup_s", self.startup_s),
        ):
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @property
    def start_replicas(self) -> int:
        """What Ray starts a deployment with: ``initial_replicas``, else ``min_replicas``."""
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas

    @property
    def record_interval_s(self) -> float:
        return min(self.look_back_period_s * RECORD_INTERVAL_FACTOR, self.metrics_interval_s)


def knobs_from_spec(serving: ServingSpec, *, startup_s: float = DEFAULT_STARTUP_SECONDS) -> Knobs:
    """The knobs ``serving`` renders to (``serve.config._ray_autoscaling`` and the ranker's caps)."""
    autoscaling = serving.autoscaling
    return Knobs(
        min_replicas=autoscaling.min_replicas,
        max_replicas=autoscaling.max_replicas,
        initial_replicas=autoscaling.initial_replicas,
        target_ongoing_requests=autoscaling.target_ongoing_requests,
        max_ongoing_requests=serving.max_ongoing_requests,
        upscale_delay_s=autoscaling.upscale_delay_seconds,
        downscale_delay_s=autoscaling.downscale_delay_seconds,
        max_queued_requests=serving.limits.max_queued_requests,
        request_timeout_s=serving.limits.request_timeout_seconds,
        startup_s=startup_s,
    )
