"""The operator's own Prometheus metrics, served on ``--metrics-port``.

Dashboards and alerts (observability/) read these; the names are the contract in
``observability/metrics-contract.yaml`` and a test holds the two together.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from recserve_operator.api.status import RecommenderModelStatus
from recserve_operator.planners.canary import Event

REGISTRY = CollectorRegistry()
CANARY_WEIGHT = Gauge(
    "recserve_canary_weight", "Percent of traffic on the canary.", ("model", "namespace"), registry=REGISTRY
)
ANALYSIS_RESULT = Gauge(
    "recserve_canary_analysis_result",
    "Last analysis of each check (1 pass, 0 fail).",
    ("model", "namespace", "check"),
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "recserve_canary_rollbacks",
    "Automatic rollbacks of a canary to 0%.",
    ("model", "namespace"),
    registry=REGISTRY,
)
BUILDS = Counter("recserve_engine_builds", "Engine builds by result.", ("result",), registry=REGISTRY)
RECONCILE_ERRORS = Counter(
    "recserve_reconcile_errors", "Reconcile passes that ended in an error.", registry=REGISTRY
)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    start_http_server(port, addr=addr, registry=REGISTRY)


def observe(model: str, namespace: str, status: RecommenderModelStatus, events: list[Event]) -> None:
    """Record one reconcile pass: canary weight and checks, rollbacks and build results."""
    canary = status.canary
    live = canary is not None and canary.state in {"Progressing", "Paused"}
    CANARY_WEIGHT.labels(model, namespace).set(canary.weight if canary is not None and live else 0)
    analysis = canary.analysis if canary is not None else None
    if analysis is not None and analysis.verdict != "Inconclusive":
        failed = analysis.message if analysis.verdict == "Fail" else ""
        for check in ("error rate", "p99 latency", "score shift"):
            ANALYSIS_RESULT.labels(model, namespace, check.replace(" ", "_")).set(0 if check in failed else 1)
    for event in events:
        if event.reason == "CanaryRolledBack":
            ROLLBACKS.labels(model, namespace).inc()
        elif event.reason in {"EngineBuildFailed", "CanaryQualityGateFailed", "CanaryEngineFailed"}:
            BUILDS.labels("failed").inc()
        elif event.reason == "EngineBuilt":
            BUILDS.labels("succeeded").inc()
