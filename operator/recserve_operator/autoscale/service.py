"""One replica as the simulator serves it: processor sharing at a rate read from its capacity profile.

A profile says how many requests per second one replica completes with ``c`` requests in flight
(a closed loop of ``c`` clients). The simulator turns that into a server that shares its
throughput equally among the ``n`` requests it holds: with ``n`` in flight it completes
``throughput(n)`` requests per second, so a closed loop of ``c`` clients sees exactly the profiled
throughput and, by Little's law, the profiled mean latency. Throughput is interpolated linearly
between profiled levels, from 0 at no load, and stays at the last level beyond it (the profile
stops at saturation). Requests differ in size (work) around a mean of 1: lognormal with the spread
that reproduces the profile's p99/p50 at concurrency 1, so a lone request's tail matches too.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

Z99 = 2.3263478740408408
"""The standard normal's 99th percentile: p99/p50 of a lognormal is exp(Z99 × sigma)."""
SizeKind = Literal["lognormal", "exponential", "fixed"]


@dataclass(frozen=True)
class ServiceModel:
    levels: tuple[tuple[int, float], ...]  # (concurrency, requests per second), concurrency increasing
    size: SizeKind = "lognormal"
    sigma: float = 0.0  # of the lognormal size

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a service model needs at least one (concurrency, throughput) level")
        previous = 0
        for concurrency, throughput in self.levels:
            if concurrency <= previous:
                raise ValueError(f"concurrency levels must increase, got {concurrency} after {previous}")
            if not throughput > 0:
                raise ValueError(f"throughput at concurrency {concurrency} must be > 0, got {throughput}")
            previous = concurrency
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    @classmethod
    def from_spread(cls, levels: tuple[tuple[int, float], ...], p50: float, p99: float) -> ServiceModel:
        """Lognormal sizes whose p99/p50 is the lone request's ``p99 / p50``."""
        sigma = math.log(p99 / p50) / Z99 if p99 > p50 > 0 else 0.0
        return cls(levels, "lognormal" if sigma > 0 else "fixed", sigma)

    def throughput(self, in_flight: int) -> float:
        """Requests per second one replica completes while holding ``in_flight`` requests."""
        if in_flight <= 0:
            return 0.0
        low_c, low_x = 0, 0.0
        for concurrency, throughput in self.levels:
            if in_flight <= concurrency:
                return low_x + (throughput - low_x) * (in_flight - low_c) / (concurrency - low_c)
            low_c, low_x = concurrency, throughput
        return low_x

    def per_request_rates(self, max_in_flight: int) -> list[float]:
        """``[0, r(1), ..., r(max)]``: the work per second each of ``n`` requests in flight gets."""
        return [0.0] + [self.throughput(n) / n for n in range(1, max_in_flight + 1)]

    def sizes(self, count: int, seed: int) -> list[float]:
        """``count`` request sizes with mean 1, the same for the same seed.

        The stream is named apart from the trace's arrivals (``trace.Trace.arrivals``): drawn
        from one seeded stream, each size would be a multiple of the gap before it.
        """
        rng = random.Random(f"recserve-request-sizes-{seed}")
        if self.size == "fixed":
            return [1.0] * count
        if self.size == "exponential":
            return [rng.expovariate(1.0) for _ in range(count)]
        mu = -self.sigma * self.sigma / 2
        return [rng.lognormvariate(mu, self.sigma) for _ in range(count)]
