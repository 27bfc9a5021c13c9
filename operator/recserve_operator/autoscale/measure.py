"""Measure one ranker replica's capacity over HTTP: ``recserve autoscale profile``.

The real request mix goes through the real path (HTTP, the router's retrieval, the handle, the
ranker's batching and engine), from ``loadgen`` closed loops at concurrency 1, 2, 4, ... until
throughput stops growing (``profile.sweep``). What the simulator calls one replica is therefore
the ranker replica plus the router's share of each request.

It must be one replica: the Serve REST API (the Ray dashboard) is asked before and after every
level how many RUNNING replicas the model's ranker application has, and a profile of more than
one is refused. The same answer gives the engine (its directory is named by its key) and the
serving settings the profile is tied to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from recserve_operator.autoscale.profile import (
    CapacityProfile,
    ProfileConditions,
    ProfileError,
    ProfileHardware,
    ProfileLevel,
    sweep,
)
from recserve_operator.loadgen import generate, percentile_ms
from recserve_serving.errors import Unavailable
from recserve_serving.serve.config import RANKER_DEPLOYMENT, owned_by

REQUEST_MIX = "POST /v1/recommend {user_id: random MovieLens user, k: 10}"


@dataclass(frozen=True)
class RankerUnderTest:
    """The model's one ranker application as the Serve REST API reports it."""

    app: str
    running: int
    engine_dir: str
    conditions: ProfileConditions
    cpus: float
    gpus: float


def serve_applications(serve_api: str) -> dict[str, Any]:
    url = serve_api.rstrip("/") + "/api/serve/applications/"
    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
        return dict(response.json())
    except (httpx.HTTPError, ValueError) as error:
        raise Unavailable(f"the Serve REST API at {url} did not answer: {error}") from error


def _deployment(app: dict[str, Any], name: str) -> dict[str, Any]:
    return dict((app.get("deployments") or {}).get(name) or {})


def ranker_under_test(applications: dict[str, Any], model: str) -> RankerUnderTest:
    """The ranker application of ``model`` in a ``GET /api/serve/applications/`` answer."""
    apps = applications.get("applications") or {}
    router = apps.get(model)
    rankers = {name: app for name, app in apps.items() if name != model and owned_by(name, model)}
    if router is None or not rankers:
        raise ProfileError(
            f"model {model} is not deployed on this Ray cluster (applications: {', '.join(sorted(apps)) or 'none'})"
        )
    if len(rankers) != 1:
        raise ProfileError(
            f"{model} serves {len(rankers)} versions ({', '.join(sorted(rankers))}); profile it with no canary, "
            "so every request reaches the one replica measured"
        )
    name, app = next(iter(rankers.items()))
    deployment = _deployment(app, RANKER_DEPLOYMENT)
    running = sum(1 for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING")
    config = deployment.get("deployment_config") or {}
    args = (app.get("deployed_app_config") or {}).get("args") or {}
    router_args = (router.get("deployed_app_config") or {}).get("args") or {}
    batching = args.get("batching") or {}
    options = config.get("ray_actor_options") or {}
    conditions = ProfileConditions(
        max_batch_size=int(batching.get("maxBatchSize", 32)),
        batch_wait_timeout_ms=float(batching.get("batchWaitTimeoutMs", 5.0)),
        candidates=int((router_args.get("retrieval") or {}).get("candidates", 200)),
        max_ongoing_requests=int(config.get("max_ongoing_requests") or 1),
        request=REQUEST_MIX,
    )
    return RankerUnderTest(
        app=name,
        running=running,
        engine_dir=str(args.get("engineDir") or ""),
        conditions=conditions,
        cpus=float(options.get("num_cpus") or 1.0),
        gpus=float(options.get("num_gpus") or 0.0),
    )


def require_one_replica(ranker: RankerUnderTest, model: str) -> None:
    if ranker.running != 1:
        raise ProfileError(
            f"{ranker.app} runs {ranker.running} replicas; a profile measures exactly one: serve {model} with "
            "spec.serving.autoscaling minReplicas 1 and maxReplicas 1 while profiling, then profile again"
        )


def measure_level(
    endpoint: str, concurrency: int, *, seconds: float, warmup_s: float, seed: int
) -> ProfileLevel:
    """One closed loop of ``concurrency`` clients for ``seconds``, after ``warmup_s`` unmeasured."""
    if warmup_s > 0:
        generate(endpoint, concurrency=concurrency, requests=10**9, seconds=warmup_s, seed=seed + 7919)
    result = generate(endpoint, concurrency=concurrency, requests=10**9, seconds=seconds, seed=seed)
    if not result.ok_latencies:
        raise ProfileError(
            f"no request answered at concurrency {concurrency} in {seconds:g} s "
            f"({result.requests} sent); first error: {result.first_error or 'none'}"
        )
    return ProfileLevel(
        concurrency=concurrency,
        throughput_rps=len(result.ok_latencies) / result.elapsed,
        p50_ms=percentile_ms(result.ok_latencies, 50),
        p99_ms=percentile_ms(result.ok_latencies, 99),
        requests=len(result.ok_latencies),
        errors=result.errors,
    )


def engine_hardware(engine_dir: str) -> str | None:
    """The hardware id in the engine's manifest, when its directory is readable from here."""
    from recserve_serving.engine.manifest import EngineManifest

    try:
        return EngineManifest.read(Path(engine_dir)).hardware
    except (OSError, ValueError):
        return None


def profile_replica(
    model: str,
    endpoint: str,
    serve_api: str,
    *,
    hardware: str | None,
    seconds: float,
    warmup_s: float,
    max_concurrency: int,
    host_cpus: int | None,
    on_level: Callable[[ProfileLevel], None] | None = None,
) -> CapacityProfile:
    """Sweep one ranker replica of ``model``; refused unless exactly one replica serves it throughout.

    The sweep stops at the replica's ``max_ongoing_requests`` at the latest: serve the model with
    ``maxOngoingRequests`` at least ``max_concurrency`` so that it can reach saturation.
    """
    ranker = ranker_under_test(serve_applications(serve_api), model)
    require_one_replica(ranker, model)
    engine_key = Path(ranker.engine_dir).name
    if not engine_key:
        raise ProfileError(f"{ranker.app} names no engine directory in its args; is it a recserve ranker?")
    hardware_id = hardware or engine_hardware(ranker.engine_dir)
    if hardware_id is None:
        raise ProfileError(
            f"the engine {ranker.engine_dir} is not readable from here, so its hardware is unknown; "
            "pass --hardware (e.g. cpu-x86_64-avx2 or cuda-sm90)"
        )

    def measure(concurrency: int) -> ProfileLevel:
        level = measure_level(endpoint, concurrency, seconds=seconds, warmup_s=warmup_s, seed=concurrency)
        after = ranker_under_test(serve_applications(serve_api), model)
        if after.app != ranker.app:
            raise ProfileError(f"{model}'s ranker changed from {ranker.app} to {after.app} while profiling")
        require_one_replica(after, model)
        if on_level is not None:
            on_level(level)
        return level

    # Past maxOngoingRequests the extra requests wait in the router, not in the replica.
    levels, saturated = sweep(
        measure, max_concurrency=min(max_concurrency, ranker.conditions.max_ongoing_requests)
    )
    return CapacityProfile(
        model=model,
        engine_key=engine_key,
        hardware=ProfileHardware(
            id=hardware_id, replica_cpus=ranker.cpus, replica_gpus=ranker.gpus, host_cpus=host_cpus
        ),
        conditions=ranker.conditions,
        measured_at=datetime.now(UTC),
        saturated=saturated,
        levels=levels,
    )
