"""A replica's capacity profile: what one ranker replica sustains at each concurrency.

Written by ``recserve autoscale profile`` and read by ``simulate`` and ``recommend``. It is tied
to what it measured: the engine key (checkpoint, recipe, backend version and hardware, so a
rebuilt or re-optimized engine needs a new profile), the hardware, and the serving settings
that change a replica's capacity (CPUs, batching, candidates per request). A spec that serves a
different engine or shape is refused, because the simulation would answer for another replica.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime

from pydantic import Field, ValidationError, model_validator

from recserve_operator.autoscale.service import ServiceModel
from recserve_serving.errors import InvalidRequest
from recserve_serving.schema import CamelModel
from recserve_serving.serving_spec import ServingSpec

PROFILE_KIND = "CapacityProfile"


class ProfileError(InvalidRequest):
    """A profile that cannot be used for this spec or SLO, with what to do instead."""


class ProfileLevel(CamelModel):
    """One closed-loop measurement: ``concurrency`` clients sending back to back."""

    concurrency: int = Field(ge=1)
    throughput_rps: float = Field(gt=0, description="Answered requests per second.")
    p50_ms: float = Field(gt=0)
    p99_ms: float = Field(gt=0)
    requests: int = Field(ge=1, description="Requests answered at this level.")
    errors: int = Field(default=0, ge=0, description="5xx answers and transport failures.")


class ProfileHardware(CamelModel):
    id: str = Field(min_length=1, description="The engine cache's hardware id, e.g. cpu-x86_64-avx2.")
    replica_cpus: float = Field(gt=0)
    replica_gpus: float = Field(default=0.0, ge=0)
    host_cpus: int | None = Field(default=None, ge=1, description="Logical CPUs of the measuring host.")


class ProfileConditions(CamelModel):
    """The serving settings the replica ran with; each changes what one replica sustains."""

    max_batch_size: int = Field(ge=1)
    batch_wait_timeout_ms: float = Field(ge=0)
    candidates: int = Field(ge=1, description="spec.serving.retrieval.candidates: pairs ranked per request.")
    max_ongoing_requests: int = Field(ge=1)
    request: str = Field(min_length=1, description="The request mix, e.g. POST /v1/recommend k=10.")


class CapacityProfile(CamelModel):
    kind: str = Field(default=PROFILE_KIND, pattern=f"^{PROFILE_KIND}$")
    model: str = Field(min_length=1)
    engine_key: str = Field(min_length=1)
    hardware: ProfileHardware
    conditions: ProfileConditions
    measured_at: datetime
    saturated: bool = Field(description="Whether throughput stopped growing before the last level.")
    replica_startup_seconds: float | None = Field(default=None, ge=0)
    levels: list[ProfileLevel] = Field(min_length=1)

    @model_validator(mode="after")
    def _levels_in_order(self) -> CapacityProfile:
        if self.levels[0].concurrency != 1:
            raise ValueError(
                f"levels must start at concurrency 1 (the lone request's latency), got {self.levels[0].concurrency}"
            )
        for before, level in itertools.pairwise(self.levels):
            if level.concurrency <= before.concurrency:
                raise ValueError(
                    f"levels must have increasing concurrency ({before.concurrency} then {level.concurrency})"
                )
        for level in self.levels:
            if level.p99_ms < level.p50_ms:
                raise ValueError(
                    f"level {level.concurrency}: p99Ms {level.p99_ms} is below p50Ms {level.p50_ms}"
                )
        return self

    @property
    def single_request(self) -> ProfileLevel:
        return self.levels[0]

    def service_model(self) -> ServiceModel:
        lone = self.single_request
        return ServiceModel.from_spread(
            tuple((x.concurrency, x.throughput_rps) for x in self.levels), lone.p50_ms, lone.p99_ms
        )


def parse_profile(text: str, source: str) -> CapacityProfile:
    try:
        return CapacityProfile.model_validate_json(text)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise ProfileError(f"{source}: not a capacity profile: {problems}") from None


def check_profile_fits(
    profile: CapacityProfile, serving: ServingSpec, engine_key: str | None, source: str
) -> None:
    """Refuse a profile of another engine, or of a replica shaped differently from ``serving``.

    ``engine_key`` is the engine the spec serves when known (its status, or a running
    ``recserve up``); None skips that check, and the caller says so.
    """
    if engine_key is not None and engine_key != profile.engine_key:
        raise ProfileError(
            f"{source} measured engine {profile.engine_key[:12]} but the spec serves engine {engine_key[:12]}; "
            f"profile the engine in service: `recserve autoscale profile {profile.model}`"
        )
    wanted = {
        "resources.cpus": (serving.resources.cpus, profile.hardware.replica_cpus),
        "resources.gpus": (serving.resources.gpus, profile.hardware.replica_gpus),
        "batching.maxBatchSize": (serving.batching.max_batch_size, profile.conditions.max_batch_size),
        "batching.batchWaitTimeoutMs": (
            serving.batching.batch_wait_timeout_ms,
            profile.conditions.batch_wait_timeout_ms,
        ),
        "retrieval.candidates": (serving.retrieval.candidates, profile.conditions.candidates),
    }
    differ = [
        f"{name} {spec:g} (profile: {measured:g})"
        for name, (spec, measured) in wanted.items()
        if spec != measured
    ]
    if differ:
        raise ProfileError(
            f"{source} measured a replica shaped differently from spec.serving: {', '.join(differ)}; "
            "these change what one replica sustains, so profile a replica served with this spec"
        )


def check_slo_possible(profile: CapacityProfile, slo_p99_ms: float) -> None:
    """An SLO below a lone request's p99 cannot be met by any number of replicas."""
    lone = profile.single_request
    if slo_p99_ms < lone.p99_ms:
        raise ProfileError(
            f"a p99 of {slo_p99_ms:g} ms is impossible: one request alone on a replica already takes "
            f"p99 {lone.p99_ms:.0f} ms (p50 {lone.p50_ms:.0f} ms) in the profile, and more replicas only "
            "remove queueing; a faster engine (spec.optimization) or fewer retrieval.candidates can lower it"
        )


MIN_GROWTH = 0.05
"""A level that adds less than 5% throughput over the best before it is the plateau: saturation."""
MAX_ERROR_RATE = 0.01


def sweep(
    measure: Callable[[int], ProfileLevel], *, max_concurrency: int, min_growth: float = MIN_GROWTH
) -> tuple[list[ProfileLevel], bool]:
    """Measure concurrency 1, 2, 4, ... until throughput stops growing, errors appear, or
    ``max_concurrency``; returns the levels and whether saturation was reached.

    The plateau level is kept: it tells the simulator the replica gains nothing past it.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    levels: list[ProfileLevel] = []
    concurrency = 1
    while concurrency <= max_concurrency:
        level = measure(concurrency)
        best_before = max((x.throughput_rps for x in levels), default=0.0)
        levels.append(level)
        if level.errors > MAX_ERROR_RATE * (level.requests + level.errors):
            return levels, True
        if best_before and level.throughput_rps < best_before * (1 + min_growth):
            return levels, True
        concurrency *= 2
    return levels, False
