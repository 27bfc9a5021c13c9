"""How an engine is served: replicas, batching, resources, model parallelism, retrieval depth, limits.

This is the ``spec.serving`` block of a RecommenderModel. It lives in the serving package
because the Ray Serve config is rendered from these same models; the operator imports
them, never the other way round. Bounds follow Ray Serve's own (``AutoscalingConfig``,
``@serve.batch``, Ray resource rules), so a spec that validates here deploys there.
"""

from __future__ import annotations

import math
import re

from pydantic import ConfigDict, Field, model_validator

from recserve_serving.gpu_support import TENSOR_PARALLELISM_NOT_IMPLEMENTED, tensor_problem
from recserve_serving.schema import CamelModel
from recserve_serving.spec_rules import (
    CelRule,
    Problem,
    cel_rules,
    hinted_pattern,
    raise_if_any,
    whole_if_above_one,
)

QUANTITY_PATTERN = hinted_pattern(
    r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$",
    "a Kubernetes memory quantity such as 512Mi, 8Gi or 1G",
)
LABEL_VALUE_PATTERN = hinted_pattern(
    r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    "a Kubernetes label value (the node's nvidia.com/gpu.product), e.g. NVIDIA-H100-80GB-HBM3",
)

_QUANTITY_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_bytes(quantity: str) -> int:
    """Bytes of a memory quantity; Ray takes bytes while Kubernetes takes the quantity string."""
    match = re.fullmatch(QUANTITY_PATTERN, quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    number = quantity[: len(quantity) - len(match.group(2) or "")]
    return math.ceil(float(number) * _QUANTITY_SUFFIXES[match.group(2) or ""])


class AutoscalingSpec(CamelModel):
    """Ray Serve request-based autoscaling of the ranker replicas."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must be <= maxReplicas",
                ".minReplicas",
            ),
            CelRule(
                "!has(self.initialReplicas) || "
                "(self.initialReplicas >= self.minReplicas && self.initialReplicas <= self.maxReplicas)",
                "initialReplicas must be within minReplicas..maxReplicas",
                ".initialReplicas",
            ),
            CelRule(
                "!has(self.maxOngoingRequests) || self.targetOngoingRequests <= double(self.maxOngoingRequests)",
                "targetOngoingRequests must be <= maxOngoingRequests",
                ".targetOngoingRequests",
            ),
        )
    )

    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Replicas kept at all times; 0 scales to zero (cold starts)."
    )
    max_replicas: int = Field(
        default=1, ge=1, le=1000, description="Upper bound; the cluster autoscaler adds nodes to reach it."
    )
    initial_replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Replicas at first deploy; minReplicas when unset."
    )
    target_ongoing_requests: float = Field(
        default=2.0,
        gt=0,
        le=10_000,
        description="Requests in flight per replica that autoscaling steers to; lower trades cost for latency.",
    )
    max_ongoing_requests: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Hard cap of requests a replica holds; unset means max(batching.maxBatchSize, "
        "2 × targetOngoingRequests) so that a replica can always fill a batch.",
    )
    upscale_delay_seconds: float = Field(
        default=30.0, ge=0, le=86_400, description="Sustained overload needed before adding replicas."
    )
    downscale_delay_seconds: float = Field(
        default=600.0, ge=0, le=86_400, description="Sustained underload needed before removing replicas."
    )

    @model_validator(mode="after")
    def _replica_bounds(self) -> AutoscalingSpec:
        problems = []
        if self.min_replicas > self.max_replicas:
            problems.append(
                Problem(
                    ("minReplicas",),
                    f"must be <= maxReplicas (got {self.min_replicas} > {self.max_replicas})",
                )
            )
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            problems.append(
                Problem(
                    ("initialReplicas",),
                    f"must be within minReplicas..maxReplicas "
                    f"({self.min_replicas}..{self.max_replicas}, got {initial})",
                )
            )
        cap = self.max_ongoing_requests
        if cap is not None and self.target_ongoing_requests > cap:
            problems.append(
                Problem(
                    ("targetOngoingRequests",),
                    f"must be <= maxOngoingRequests (got {self.target_ongoing_requests:g} > {cap}); "
                    "a replica never holds more than its cap, so autoscaling would always scale up",
                )
            )
        raise_if_any(problems)
        return self


class BatchingSpec(CamelModel):
    """Dynamic batching in each replica (Ray Serve @serve.batch)."""

    max_batch_size: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Largest batch a replica runs; at most optimization.maxBatchSize, the engine's shape.",
    )
    batch_wait_timeout_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="How long a partial batch waits for more requests; latency traded for throughput.",
    )

    @property
    def batch_wait_timeout_s(self) -> float:
        return self.batch_wait_timeout_ms / 1000.0


class ResourcesSpec(CamelModel):
    """Resources of one model shard (one placement-group bundle); a replica has pipeline × tensor shards."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "!has(self.gpuProduct) || self.gpus > 0.0",
                "gpuProduct needs gpus > 0",
                ".gpuProduct",
            ),
            CelRule(
                "self.gpus <= 1.0 || self.gpus == double(int(self.gpus))",
                "gpus must be a fraction <= 1 or a whole number",
                ".gpus",
            ),
            CelRule(
                "self.cpus <= 1.0 || self.cpus == double(int(self.cpus))",
                "cpus must be a fraction <= 1 or a whole number",
                ".cpus",
            ),
        )
    )

    gpus: float = Field(
        default=0.0,
        ge=0,
        le=16,
        description="GPUs per shard; a fraction below 1 packs several replicas on one GPU.",
    )
    gpu_product: str | None = Field(
        default=None,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="The nvidia.com/gpu.product node label to schedule on; any GPU when unset.",
    )
    cpus: float = Field(default=1.0, gt=0, le=256, description="CPU cores per shard (Ray num_cpus).")
    memory: str = Field(
        default="2Gi",
        max_length=32,
        pattern=QUANTITY_PATTERN,
        description="Memory per shard as a Kubernetes quantity; the container limit and Ray's memory.",
    )

    @model_validator(mode="after")
    def _ray_resource_rules(self) -> ResourcesSpec:
        problems = [
            whole_if_above_one(self.gpus, ("gpus",)),
            whole_if_above_one(self.cpus, ("cpus",)),
        ]
        if self.gpu_product is not None and self.gpus == 0:
            problems.append(Problem(("gpuProduct",), "needs gpus > 0 (got gpus 0)"))
        raise_if_any(p for p in problems if p is not None)
        return self

    @property
    def memory_bytes(self) -> int:
        return quantity_bytes(self.memory)

    def bundle(self) -> dict[str, float]:
        """One shard's placement-group bundle: its CPUs and, when it has any, its GPUs."""
        bundle = {"CPU": self.cpus}
        if self.gpus:
            bundle["GPU"] = self.gpus
        return bundle

    def shard_actor_options(self) -> dict[str, float]:
        """Ray resources of the actor that runs a shard (a pipeline stage): exactly its bundle,
        so the actor fits the bundle and Ray hands it the bundle's GPU (CUDA_VISIBLE_DEVICES)."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    @property
    def engine_threads(self) -> int:
        """Threads an engine may run: the whole cores its shard reserves, at least one, so that
        replicas packed on a node do not oversubscribe it."""
        return max(1, math.floor(self.cpus))


class ParallelismSpec(CamelModel):
    """Model parallelism of one replica; more than one shard becomes a STRICT_PACK placement group.

    ``tensor`` accepts the same range as ``pipeline`` in the schema so that a value above 1 gets
    the rule's own message (it is not implemented) instead of a bare "must be <= 1".
    """

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule("self.tensor == 1", TENSOR_PARALLELISM_NOT_IMPLEMENTED, ".tensor")
        )
    )

    pipeline: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Pipeline stages (consecutive layer groups), one shard each; above 1 needs "
        "optimization.backend torch.",
    )
    tensor: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Tensor-parallel shards of each stage; only 1 until tensor parallelism is implemented.",
    )

    @model_validator(mode="after")
    def _tensor_implemented(self) -> ParallelismSpec:
        raise_if_any(p for p in (tensor_problem(self.tensor),) if p is not None)
        return self

    @property
    def shards(self) -> int:
        return self.pipeline * self.tensor


class DiversitySpec(CamelModel):
    """Maximal Marginal Relevance re-ranking of the ranker's answer, so that a top k is not k
    near-copies of one item.

    The ranker scores each candidate alone and cannot see that its best ten are the same
    franchise; MMR trades a little relevance for variety, one pick at a time.
    """

    lambda_: float = Field(
        ...,
        alias="lambda",
        ge=0.0,
        le=1.0,
        description="Weight of variety against relevance: each next item maximises "
        "(1 - lambda) × relevance - lambda × (largest cosine similarity to the items already picked). "
        "0 keeps the ranker's order exactly; 1 ignores relevance after the first pick.",
    )
    pool: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Items, best ranker scores first, that MMR picks from (default: every candidate); "
        "at least maxK so that every request can be answered from it. Relevance is the ranker's score "
        "min-max normalised over it.",
    )


class RetrievalSpec(CamelModel):
    """The two-stage shape: a cheap retriever proposes candidates, the BERT ranker scores them."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule("self.defaultK <= self.maxK", "defaultK must be <= maxK", ".defaultK"),
            CelRule("self.maxK <= self.candidates", "maxK must be <= candidates", ".maxK"),
            CelRule(
                "!has(self.diversity) || !has(self.diversity.pool) || self.diversity.pool >= self.maxK",
                "diversity.pool must be >= maxK: MMR answers a request for k items from the pool",
                ".diversity.pool",
            ),
        )
    )

    candidates: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Candidates scored by the ranker per request; ranking cost grows linearly with it.",
    )
    default_k: int = Field(
        default=10, ge=1, le=1000, description="Results returned when a request gives no k."
    )
    max_k: int = Field(default=100, ge=1, le=1000, description="Largest k a request may ask for.")
    diversity: DiversitySpec | None = Field(
        default=None,
        description="Re-rank the ranker's top items for variety (Maximal Marginal Relevance); "
        "unset returns the ranker's order. Costs one k × pool similarity pass per request.",
    )

    @model_validator(mode="after")
    def _k_within_candidates(self) -> RetrievalSpec:
        problems = []
        if self.default_k > self.max_k:
            problems.append(Problem(("defaultK",), f"must be <= maxK (got {self.default_k} > {self.max_k})"))
        if self.max_k > self.candidates:
            problems.append(
                Problem(("maxK",), f"must be <= candidates (got {self.max_k} > {self.candidates})")
            )
        if (
            self.diversity is not None
            and self.diversity.pool is not None
            and self.diversity.pool < self.max_k
        ):
            problems.append(
                Problem(
                    ("diversity", "pool"),
                    f"must be >= maxK (got {self.diversity.pool} < {self.max_k}): MMR answers a request "
                    "for k items from the pool's items, so raise pool or lower maxK",
                )
            )
        raise_if_any(problems)
        return self


class LimitsSpec(CamelModel):
    """Bounds on what one request may cost, so a single client cannot tie up a replica or the queue."""

    max_body_bytes: int = Field(
        default=4 * 2**20,
        ge=1024,
        le=64 * 2**20,
        description="Largest request body in bytes; a larger one is refused with 413 before it is parsed.",
    )
    max_text_chars: int = Field(
        default=4096,
        ge=16,
        le=1_000_000,
        description="Longest text in a BYTES input of an inference request (400 beyond it); the ranker "
        "reads at most its sequence length of tokens, so longer texts only cost tokenizer time.",
    )
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Time a request may take in the router, queueing included; 504 once it passes.",
    )
    max_queued_requests: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Requests that may wait for a busy router or ranker; beyond it, 503 with Retry-After.",
    )
    retry_after_seconds: int = Field(
        default=1, ge=0, le=3600, description="The Retry-After of a 503 for a full queue."
    )


class FaultInjectionSpec(CamelModel):
    """A chaos drill for a canary: its ranker fails a share of scoring calls on purpose.

    Like Istio's ``fault.abort``, it shows before a real regression does that the rollout's
    analysis sees a failing version and rolls it back, while stable's users see nothing. The
    failures happen in the canary's own replicas, so they travel the path a real one would:
    the version header, the per-version error count, the analysis window.
    """

    abort_percent: float = Field(
        ...,
        gt=0,
        le=100,
        description="Percent of the canary's scoring calls that fail with 503 (reason injected fault).",
    )

    def strikes(self, call: int) -> bool:
        """Whether a replica's ``call``-th scoring call (from 0) fails: evenly spread, so that every
        run of ``100 / abortPercent`` calls holds exactly its share of failures. A drill that fails
        a fixed fraction is judged on that fraction, not on a random draw's luck."""
        return math.floor((call + 1) * self.abort_percent / 100) > math.floor(call * self.abort_percent / 100)


class ExplainSpec(CamelModel):
    """Reasons for recommendations (``"explain": true``), measured by occlusion on the served engine.

    Explaining costs a second ranker call per request: one pair per explained item and per
    history item whose leaving-out changes the user's text, so ``maxHistory`` bounds it.
    """

    enabled: bool = Field(
        default=True,
        description="Whether requests may ask for reasons; when false, asking is refused with 400.",
    )
    max_history: int = Field(
        default=10,
        ge=1,
        le=50,
        description="Most recent liked items that can be a reason; each adds at most one scored pair "
        "per explained item (fewer when leaving it out does not change the user's text).",
    )


class FeedbackLogSpec(CamelModel):
    """How long the interaction log (``/v1/feedback`` events) keeps events, and how often the
    routers compact it: compaction is also what removes an erased user's events from its files."""

    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="Events received longer ago than this are deleted by the next compaction "
        "(erasure tombstones are kept). Unset: events are kept until deleted by hand. Retraining "
        "reads only what is kept, so keep at least spec.training.windowDays.",
    )
    compact_every_minutes: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="How often each router replica compacts the log (and once when it starts): the "
        "longest an erased user's events or expired events stay in the log's files.",
    )


class ServingSpec(CamelModel):
    """Everything about running an engine that does not change the engine itself."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.parallelism.pipeline * self.parallelism.tensor == 1 || self.resources.gpus == 0.0"
                " || self.resources.gpus >= 1.0",
                "parallelism with more than one shard needs whole GPUs per shard (gpus 0 or >= 1)",
                ".parallelism",
            ),
            CelRule(
                "!has(self.autoscaling.maxOngoingRequests) || "
                "self.autoscaling.maxOngoingRequests >= self.batching.maxBatchSize",
                "autoscaling.maxOngoingRequests must be >= batching.maxBatchSize",
                ".autoscaling.maxOngoingRequests",
            ),
        )
    )

    autoscaling: AutoscalingSpec = AutoscalingSpec()
    batching: BatchingSpec = BatchingSpec()
    resources: ResourcesSpec = ResourcesSpec()
    parallelism: ParallelismSpec = ParallelismSpec()
    retrieval: RetrievalSpec = RetrievalSpec()
    limits: LimitsSpec = LimitsSpec()
    explain: ExplainSpec = ExplainSpec()
    feedback_log: FeedbackLogSpec = FeedbackLogSpec()

    @model_validator(mode="after")
    def _consistent(self) -> ServingSpec:
        problems = []
        if self.parallelism.shards > 1 and 0 < self.resources.gpus < 1:
            problems.append(
                Problem(
                    ("parallelism",),
                    f"pipeline × tensor = {self.parallelism.shards} shards need whole GPUs per shard "
                    f"(resources.gpus 0 for CPU stages, or >= 1; got {self.resources.gpus:g})",
                )
            )
        cap = self.autoscaling.max_ongoing_requests
        if cap is not None and cap < self.batching.max_batch_size:
            problems.append(
                Problem(
                    ("autoscaling", "maxOngoingRequests"),
                    f"must be >= batching.maxBatchSize (got {cap} < {self.batching.max_batch_size}); "
                    "a replica that holds fewer requests never fills a batch",
                )
            )
        raise_if_any(problems)
        return self

    @property
    def max_ongoing_requests(self) -> int:
        """Ray's per-replica cap: explicit, or large enough to fill a batch and reach the target."""
        explicit = self.autoscaling.max_ongoing_requests
        if explicit is not None:
            return explicit
        return max(self.batching.max_batch_size, math.ceil(2 * self.autoscaling.target_ongoing_requests))
