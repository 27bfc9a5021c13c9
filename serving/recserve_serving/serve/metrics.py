"""Per-version serving metrics in Prometheus form, the input of canary analysis and dashboards.

The router observes every request, so it owns the request, error, latency, score and
shadow metrics; a private registry keeps them apart from anything else in the process.
Score buckets are fixed (scores are logits) so that histograms of two versions can be
compared bucket by bucket (the Kolmogorov-Smirnov score shift).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(x / 2 for x in range(-20, 21))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SHIFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The exposed family names, which canary analysis queries and the dashboards and alerts use
# (observability/metrics-contract.yaml lists them for those).
REQUESTS = "recserve_requests_total"
LATENCY = "recserve_request_duration_seconds"
SCORE = "recserve_score"
BATCH_SIZE = "recserve_batch_size"
QUEUE_LENGTH = "recserve_queue_length"
SHADOW_DIFF = "recserve_shadow_score_diff"
RANKER_RETRIES = "recserve_ranker_retries_total"
FEEDBACK_COMPACTED = "recserve_feedback_events_compacted_total"


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter(
            REQUESTS,
            "Requests answered, by endpoint and HTTP status code.",
            (*labels, "endpoint", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            LATENCY,
            "Time from request to answer in the router.",
            (*labels, "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            SCORE,
            "Scores the version returned; the distribution compared between canary and stable.",
            labels,
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Requests merged into one engine call by dynamic batching.",
            labels,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_length = Gauge(
            QUEUE_LENGTH,
            "Requests the router has sent to a version and not yet had answered.",
            labels,
            registry=self.registry,
        )
        self.ranker_retries = Counter(
            RANKER_RETRIES,
            "Ranker calls sent again, once, to another replica because the replica called had died.",
            labels,
            registry=self.registry,
        )
        self.shadow_diff = Histogram(
            SHADOW_DIFF,
            "Mean absolute score difference between canary (shadow) and stable on mirrored requests.",
            ("model",),
            buckets=SHIFT_BUCKETS,
            registry=self.registry,
        )

        self.feedback_compacted = Counter(
            FEEDBACK_COMPACTED,
            "Interaction-log events this replica's compactions removed: reason erased (the user was "
            "erased after the event) or expired (older than spec.serving.feedbackLog.retentionDays).",
            ("model", "reason"),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
