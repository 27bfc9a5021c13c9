"""The RecommenderModel API (recserve.dev/v1alpha1): the one source of truth for the CRD.

Every constraint is stated twice on purpose, once as a pydantic validator (for ``recserve
validate``, the admission webhook and the local ``up``) and once as a CRD bound or CEL rule
(for a cluster without the webhook); tests keep the pairs in step. Status lives in
``status.py``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from recserve_operator.api.placement import PlacementSpec
from recserve_operator.api.status import RecommenderModelStatus
from recserve_serving.dataspec import DataSpec
from recserve_serving.gpu_support import Combination, combination_problems
from recserve_serving.recipe import OptimizationRecipe
from recserve_serving.schema import CamelModel
from recserve_serving.serving_spec import FaultInjectionSpec, ServingSpec
from recserve_serving.spec_rules import CelRule, Loc, Problem, cel_rules, hinted_pattern, raise_if_any
from recserve_serving.trainingspec import TrainingSpec
from recserve_serving.uri_paths import S3_UNSUPPORTED, UNSAFE_PATH_CEL, path_problem

GROUP = "recserve.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RecommenderModel"
PLURAL = "recommendermodels"
SINGULAR = "recommendermodel"
SHORT_NAMES = ("recmodel", "rm")

MAX_NAME_LENGTH = 40
NAME_DESCRIPTION = (
    "At most 40 characters, a DNS-1035 label: the RayService, its Services and Jobs are named "
    "after the model, and KubeRay allows a RayService name of at most 47."
)
NAME_PATTERN = hinted_pattern(
    r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    "a DNS-1035 label: lowercase letters, digits and '-', starting with a letter",
)

CHECKPOINT_URI_PATTERN = hinted_pattern(
    r"^(models:/[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[1-9][0-9]{0,8}|@[A-Za-z_][A-Za-z0-9_-]{0,127})"
    r"|file:///\S+"
    r"|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(/\S*)?"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?)$",
    "models:/NAME/VERSION, models:/NAME@ALIAS, file:///ABSOLUTE/PATH, pvc://CLAIM/PATH or s3://BUCKET/PREFIX",
)

DURATION_PATTERN = hinted_pattern(
    r"^([0-9]{1,4}h([0-9]{1,4}m)?([0-9]{1,6}s)?|[0-9]{1,4}m([0-9]{1,6}s)?|[0-9]{1,6}s)$",
    "a duration such as 30s, 2m, 1h or 1h30m",
)
MAX_PAUSE_SECONDS = 24 * 3600
MAX_CANARY_STEPS = 10

_DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}


def duration_seconds(text: str) -> int:
    """Seconds of a pause such as ``1h30m``; the same strings CEL's ``duration()`` reads."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _DURATION_UNITS[unit] for n, unit in re.findall(r"([0-9]+)([hms])", text))


class ObjectMeta(CamelModel):
    """The metav1.ObjectMeta fields, so that typos in a manifest's metadata are caught too."""

    name: str | None = Field(
        default=None, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN, description=NAME_DESCRIPTION
    )
    generate_name: str | None = Field(
        default=None, max_length=MAX_NAME_LENGTH - 5, pattern=r"^[a-z][-a-z0-9]*$"
    )
    namespace: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = Field(default=None, ge=0)
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)
    self_link: str | None = None

    @model_validator(mode="after")
    def _named(self) -> ObjectMeta:
        if self.name is None and self.generate_name is None:
            raise_if_any([Problem(("name",), "required (or generateName)")])
        return self


Scheme = Literal["models", "file", "pvc", "s3"]
_SCHEMES: dict[str, Scheme] = {"models": "models", "file": "file", "pvc": "pvc", "s3": "s3"}


class CheckpointRef(CamelModel):
    """Where a checkpoint comes from; a registry alias is resolved to a version in status."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule("!self.uri.startsWith('s3://')", S3_UNSUPPORTED, ".uri"),
            CelRule(
                f"!({UNSAFE_PATH_CEL})",
                "a file:// or pvc:// path must not contain '.', '..' or empty segments, "
                "nor a percent-encoded '.' or '/'",
                ".uri",
            ),
        )
    )

    uri: str = Field(
        default=...,
        max_length=1024,
        pattern=CHECKPOINT_URI_PATTERN,
        description="models:/NAME/VERSION or models:/NAME@ALIAS (MLflow registry), "
        "file:///PATH or pvc://CLAIM/PATH (no '..' segments). s3:// is refused: not supported.",
    )

    @model_validator(mode="after")
    def _supported_and_contained(self) -> CheckpointRef:
        if self.scheme == "s3":
            raise_if_any([Problem(("uri",), S3_UNSUPPORTED)])
        problem = path_problem(self.uri)
        if problem:
            raise_if_any([Problem(("uri",), f"{problem} (got {self.uri})")])
        return self

    @property
    def scheme(self) -> Scheme:
        return _SCHEMES[self.uri.split(":", 1)[0]]


class CanaryStep(CamelModel):
    """Send weight percent of traffic to the canary, then analyse for pause before the next step."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                f"!self.pause.matches('{DURATION_PATTERN}') || "
                f"duration(self.pause) <= duration('{MAX_PAUSE_SECONDS // 3600}h')",
                "pause must be <= 24h",
                ".pause",
            )
        )
    )

    weight: int = Field(..., ge=1, le=100, description="Percent of traffic sent to the canary in this step.")
    pause: str = Field(
        default=...,
        max_length=20,
        pattern=DURATION_PATTERN,
        description="How long this step runs; its analysis window (30s, 2m, 1h, 1h30m).",
    )

    @model_validator(mode="after")
    def _bounded_pause(self) -> CanaryStep:
        if self.pause_seconds > MAX_PAUSE_SECONDS:
            raise_if_any([Problem(("pause",), f"must be <= 24h (got {self.pause})")])
        return self

    @property
    def pause_seconds(self) -> int:
        return duration_seconds(self.pause)


class AnalysisSpec(CamelModel):
    """Gates a canary must pass at each step; a canary without limits would always be promoted."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.maxErrorRate) || has(self.maxP99LatencyMs) || has(self.maxScoreShift)",
                "analysis needs at least one of maxErrorRate, maxP99LatencyMs, maxScoreShift",
            )
        )
    )

    max_error_rate: float | None = Field(
        default=None, ge=0, le=1, description="Largest fraction of canary requests that may fail."
    )
    max_p99_latency_ms: float | None = Field(
        default=None, gt=0, le=60_000, description="Largest canary p99 latency, in milliseconds."
    )
    max_score_shift: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Largest shift between canary and stable score distributions "
        "(two-sample Kolmogorov-Smirnov statistic, 0..1).",
    )
    min_requests: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="Canary requests a step needs before it is judged; fewer pauses the rollout.",
    )

    @model_validator(mode="after")
    def _has_a_limit(self) -> AnalysisSpec:
        if self.max_error_rate is None and self.max_p99_latency_ms is None and self.max_score_shift is None:
            raise_if_any([Problem((), "needs at least one of maxErrorRate, maxP99LatencyMs, maxScoreShift")])
        return self


_STEPS_RULES = cel_rules(
    CelRule(
        "self.map(s, s.weight).isSorted() && self.all(s, self.exists_one(t, t.weight == s.weight))",
        "step weights must strictly increase",
    )
)


class CanarySpec(CamelModel):
    """A second version that takes a growing share of traffic while analysis gates each step."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                f"!has(self.progressDeadline) || !self.progressDeadline.matches('{DURATION_PATTERN}') || "
                f"duration(self.progressDeadline) <= duration('{MAX_PAUSE_SECONDS // 3600}h')",
                "progressDeadline must be <= 24h",
                ".progressDeadline",
            )
        )
    )

    checkpoint: CheckpointRef
    optimization: OptimizationRecipe | None = Field(
        default=None,
        description="Recipe of the canary engine; the stable recipe (spec.optimization) when unset. "
        "Replaces it whole, no merge.",
    )
    steps: list[CanaryStep] = Field(
        default=..., min_length=1, max_length=MAX_CANARY_STEPS, json_schema_extra=_STEPS_RULES
    )
    sticky_by: Literal["user_id", "none"] = Field(
        default="user_id", description="user_id keeps each user on one version; none splits per request."
    )
    shadow_percent: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Percent of stable traffic mirrored to the canary; its answers are discarded.",
    )
    analysis: AnalysisSpec
    progress_deadline: str = Field(
        default="10m",
        max_length=20,
        pattern=DURATION_PATTERN,
        description="How long a step may wait for a verdict once its pause is over (the canary not "
        "serving, too little traffic, no metrics) before the canary is rolled back "
        "(reason ProgressDeadlineExceeded). At most 24h.",
    )

    fault_injection: FaultInjectionSpec | None = Field(
        default=None,
        description="Chaos drill: the canary's replicas fail this share of calls on purpose, to show "
        "that analysis rolls a failing version back. Never applies to stable, nor after promotion.",
    )

    @property
    def progress_deadline_seconds(self) -> int:
        return duration_seconds(self.progress_deadline)

    @model_validator(mode="after")
    def _bounded_deadline(self) -> CanarySpec:
        if self.progress_deadline_seconds > MAX_PAUSE_SECONDS:
            raise_if_any([Problem(("progressDeadline",), f"must be <= 24h (got {self.progress_deadline})")])
        return self

    @model_validator(mode="after")
    def _increasing_steps(self) -> CanarySpec:
        problems = [
            Problem(
                ("steps", i, "weight"),
                f"must be > steps[{i - 1}].weight, weights strictly increase "
                f"(got {step.weight} after {previous.weight})",
            )
            for i, (previous, step) in enumerate(zip(self.steps, self.steps[1:], strict=False), start=1)
            if step.weight <= previous.weight
        ]
        raise_if_any(problems)
        return self


class RolloutSpec(CamelModel):
    """How a new version replaces the running one."""

    strategy: Literal["Canary", "Immediate"] = Field(
        default="Canary",
        description="Canary: a new version that spec.checkpoint resolves to without spec changing (its "
        "registry alias moved) is canaried like spec.rollout.canary, with its steps and analysis "
        "(default steps when none); the old version serves until the new one is promoted. Immediate: "
        "the new version replaces the old at once. An edit of spec.checkpoint itself is always "
        "applied as written.",
    )
    canary: CanarySpec | None = None


def _recipe_rules(recipe: str, path: str, guard: str = "") -> tuple[CelRule, ...]:
    return (
        CelRule(
            f"{guard}{recipe}.backend != 'tensorrt' || self.serving.resources.gpus > 0.0",
            "backend tensorrt needs serving.resources.gpus > 0",
            f"{path}.backend",
        ),
        CelRule(
            f"{guard}{recipe}.precision != 'fp16' || self.serving.resources.gpus > 0.0",
            "precision fp16 needs serving.resources.gpus > 0",
            f"{path}.precision",
        ),
        CelRule(
            f"{guard}!({recipe}.backend == 'torch' && {recipe}.precision == 'int8')"
            " || self.serving.resources.gpus == 0.0",
            "int8 with backend torch runs on CPU only: set serving.resources.gpus to 0, "
            "or use backend tensorrt for int8 on GPUs",
            f"{path}.precision",
        ),
        CelRule(
            f"{guard}self.serving.parallelism.pipeline == 1 || {recipe}.backend == 'torch'",
            f"pipeline parallelism runs torch engines only: set {path.lstrip('.')}.backend to torch, "
            "or serving.parallelism.pipeline to 1",
            ".serving.parallelism.pipeline",
        ),
        CelRule(
            f"{guard}self.serving.batching.maxBatchSize <= {recipe}.maxBatchSize",
            f"serving.batching.maxBatchSize must be <= {path.lstrip('.')}.maxBatchSize",
            ".serving.batching.maxBatchSize",
        ),
    )


def _recipe_problems(recipe: OptimizationRecipe, serving: ServingSpec, at: Loc) -> list[Problem]:
    """A recipe is judged against the hardware, shards and batches it will serve; a searching
    recipe by each of its candidates too, since any of them may be the one served (its own
    fields are judged as well, as the CRD's CEL rules do)."""
    problems = _one_recipe_problems(recipe, serving, at)
    if recipe.search is None:
        return problems
    where: Loc = (*at, "search", "preset" if recipe.search.preset else "candidates")
    for index, candidate in enumerate(recipe.candidates()):
        problems += _one_recipe_problems(candidate, serving, (*where, index))
    return problems


def _one_recipe_problems(recipe: OptimizationRecipe, serving: ServingSpec, at: Loc) -> list[Problem]:
    """What a replica can run is ``gpu_support``'s verdict, the same one the runtime applies."""
    combo = Combination(
        backend=recipe.backend,
        precision=recipe.precision,
        pipeline=serving.parallelism.pipeline,
        tensor=serving.parallelism.tensor,
        gpus=serving.resources.gpus,
    )
    problems = combination_problems(combo, recipe_at=at)
    where = ".".join(str(part) for part in at)
    if serving.batching.max_batch_size > recipe.max_batch_size:
        problems.append(
            Problem(
                ("serving", "batching", "maxBatchSize"),
                f"must be <= {where}.maxBatchSize, the engine's largest batch "
                f"(got {serving.batching.max_batch_size} > {recipe.max_batch_size})",
            )
        )
    return problems


EXTRA_CEL_RULES: dict[type[CamelModel], tuple[CelRule, ...]] = {
    OptimizationRecipe: (
        CelRule(
            "!(self.precision == 'fp16' && self.backend == 'onnxruntime')",
            "precision fp16 needs a GPU backend (tensorrt or torch); onnxruntime on CPU supports fp32 and int8",
            ".precision",
        ),
        CelRule(
            "self.precision != 'bf16' || self.backend == 'torch'",
            "bf16 runs on the torch backend only: set backend to torch",
            ".precision",
        ),
        CelRule(
            "!(self.precision == 'int8' && self.backend == 'torch' && self.quantization.mode == 'static')",
            "static int8 quantization is available with onnxruntime or tensorrt, not torch",
            ".quantization.mode",
        ),
    )
}
"""CEL twins of validators in models this package does not own (the recipe belongs to serving)."""


class RecommenderModelSpec(CamelModel):
    """What to serve (checkpoint), how to build it (optimization), run it (serving), and roll it out."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *_recipe_rules("self.optimization", ".optimization"),
            *_recipe_rules(
                "self.rollout.canary.optimization",
                ".rollout.canary.optimization",
                guard="!has(self.rollout.canary) || !has(self.rollout.canary.optimization) || ",
            ),
            CelRule(
                "!has(self.rollout.canary) || self.rollout.canary.checkpoint.uri != self.checkpoint.uri"
                " || has(self.rollout.canary.optimization)",
                "a canary must differ from stable: another checkpoint or its own optimization",
                ".rollout.canary",
            ),
        )
    )

    checkpoint: CheckpointRef
    task: Literal["ranking"] = Field(
        default="ranking", description="ranking: a cross-encoder scores (user, item) pairs."
    )
    data: DataSpec | None = Field(
        default=None,
        description="The catalog, the interactions and where users' histories come from. Without it, "
        "the bundled example catalog (MovieLens ml-latest-small) is served.",
    )
    optimization: OptimizationRecipe = OptimizationRecipe()
    serving: ServingSpec = ServingSpec()
    placement: PlacementSpec = PlacementSpec()
    rollout: RolloutSpec = RolloutSpec()
    training: TrainingSpec | None = Field(
        default=None,
        description="Scheduled retraining on new interactions (a CronJob in a cluster, recserve retrain "
        "embedded); its versions reach traffic only through a canary. No retraining when unset.",
    )

    @property
    def data_or_example(self) -> DataSpec:
        """``data``, or the bundled example's when the spec names none."""
        from recserve_serving.example_data import EXAMPLE_DATA

        return self.data or EXAMPLE_DATA

    @model_validator(mode="after")
    def _consistent(self) -> RecommenderModelSpec:
        problems = _recipe_problems(self.optimization, self.serving, ("optimization",))
        canary = self.rollout.canary
        if canary is not None:
            if canary.optimization is not None:
                problems += _recipe_problems(
                    canary.optimization, self.serving, ("rollout", "canary", "optimization")
                )
            elif canary.checkpoint.uri == self.checkpoint.uri:
                problems.append(
                    Problem(
                        ("rollout", "canary", "checkpoint", "uri"),
                        "must differ from spec.checkpoint.uri, or the canary needs its own "
                        f"optimization (both are {self.checkpoint.uri})",
                    )
                )
        raise_if_any(problems)
        return self

    @property
    def canary_recipe(self) -> OptimizationRecipe | None:
        canary = self.rollout.canary
        if canary is None:
            return None
        return canary.optimization or self.optimization


class RecommenderModel(CamelModel):
    """A recommender served by recserve: the whole Kubernetes object."""

    api_version: Literal["recserve.dev/v1alpha1"]
    kind: Literal["RecommenderModel"]
    metadata: ObjectMeta
    spec: RecommenderModelSpec
    status: RecommenderModelStatus | None = None
