"""Small, hand-sized inputs for the autoscaling unit tests: knobs, service models, profiles.

The profiles here are test inputs with round numbers, not measurements; real profiles come from
``recserve autoscale profile``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from recserve_operator.autoscale.knobs import Knobs


def knobs(**changes: Any) -> Knobs:
    base = Knobs(
        min_replicas=1,
        max_replicas=8,
        initial_replicas=None,
        target_ongoing_requests=2.0,
        max_ongoing_requests=100,
        upscale_delay_s=30.0,
        downscale_delay_s=600.0,
        max_queued_requests=1000,
        request_timeout_s=60.0,
        startup_s=3.0,
    )
    return replace(base, **changes)


def profile_doc(**changes: Any) -> dict[str, Any]:
    """A capacity profile (JSON form) of a replica like the example manifest's."""
    doc: dict[str, Any] = {
        "kind": "CapacityProfile",
        "model": "movielens-ranker",
        "engineKey": "a" * 64,
        "hardware": {"id": "cpu-x86_64-avx2", "replicaCpus": 1, "replicaGpus": 0, "hostCpus": 2},
        "conditions": {
            "maxBatchSize": 32,
            "batchWaitTimeoutMs": 5,
            "candidates": 200,
            "maxOngoingRequests": 32,
            "request": "POST /v1/recommend k=10",
        },
        "measuredAt": "2026-01-01T00:00:00Z",
        "saturated": True,
        "levels": [
            {"concurrency": 1, "throughputRps": 4.0, "p50Ms": 240, "p99Ms": 320, "requests": 80},
            {"concurrency": 2, "throughputRps": 6.5, "p50Ms": 300, "p99Ms": 420, "requests": 130},
            {"concurrency": 4, "throughputRps": 8.0, "p50Ms": 480, "p99Ms": 700, "requests": 160},
            {"concurrency": 8, "throughputRps": 8.2, "p50Ms": 950, "p99Ms": 1300, "requests": 164},
        ],
    }
    doc.update(changes)
    return doc
