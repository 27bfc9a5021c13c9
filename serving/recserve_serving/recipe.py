"""The optimization recipe: how a checkpoint becomes an engine.

It is part of the RecommenderModel spec and of the engine cache key, so every field that
changes the produced engine belongs here and nothing else does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from recserve_serving.gpu_support import bf16_problem
from recserve_serving.schema import CamelModel
from recserve_serving.spec_rules import CelRule, Problem, cel_rules, raise_if_any

Backend = Literal["auto", "onnxruntime", "torch", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class PruneSpec(CamelModel):
    """Structured pruning: whole attention heads and FFN neurons are removed, not zeroed."""

    heads: float = Field(
        default=0.0, ge=0.0, le=0.9, description="Fraction of attention heads removed per layer."
    )
    ffn: float = Field(
        default=0.0, ge=0.0, le=0.9, description="Fraction of FFN intermediate neurons removed."
    )
    recovery_steps: int = Field(
        default=100, ge=0, le=100_000, description="Fine-tuning steps after pruning to recover quality."
    )


class DistillSpec(CamelModel):
    """Knowledge distillation into a shallower student initialised from the teacher's layers."""

    layers: int = Field(..., ge=1, le=48, description="Encoder layers of the student.")
    steps: int = Field(default=300, ge=1, le=1_000_000, description="Distillation training steps.")
    temperature: float = Field(default=2.0, gt=0.0, le=20.0, description="Softening of teacher scores.")
    alpha: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weight of the teacher-score loss against the label loss."
    )


class QuantizationSpec(CamelModel):
    """How INT8 scales are found: at run time (dynamic) or from calibration data (static)."""

    mode: Literal["dynamic", "static"] = "dynamic"
    per_channel: bool = True
    calibration_samples: int = Field(default=256, ge=8, le=100_000)


GateMetric = Literal["ndcg@10", "auc", "hitrate@10", "coverage", "diversity", "served_ndcg@10"]
MinimumMetric = Literal["ndcg@10", "hitrate@10", "auc", "coverage", "novelty", "diversity", "served_ndcg@10"]
UNBOUNDED_METRICS = frozenset({"novelty"})
"""Metrics not confined to 0..1: novelty is a mean self-information, in bits."""


class MetricMinimum(CamelModel):
    """A floor on one evaluation metric of the engine itself, whatever the checkpoint scored."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "self.metric == 'novelty' || self.min <= 1.0",
                "min must be within 0..1; only novelty, in bits, goes above 1",
                ".min",
            )
        )
    )

    metric: MinimumMetric = Field(
        ...,
        description="ndcg@10, hitrate@10 or auc (ranking quality); coverage (share of candidates that "
        "reach some top 10), novelty (mean bits of self-information of top-10 items) or diversity "
        "(mean pairwise genre Jaccard distance within each top 10).",
    )
    minimum: float = Field(..., alias="min", ge=0.0, description="The lowest value the engine may ship with.")

    @model_validator(mode="after")
    def _within_range(self) -> MetricMinimum:
        if self.metric not in UNBOUNDED_METRICS and self.minimum > 1.0:
            raise ValueError(
                f"min of {self.metric} must be within 0..1 (got {self.minimum:g}); "
                "only novelty, in bits, goes above 1"
            )
        return self


class QualityGate(CamelModel):
    """The largest quality loss, and the slowest latency, a build may ship with."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "!has(self.minimums) || self.minimums.all(a, self.minimums.exists_one(b, b.metric == a.metric))",
                "minimums: keep one min per metric",
                ".minimums",
            ),
            CelRule(
                "has(self.servedUsers) || (self.metric != 'served_ndcg@10' && "
                "(!has(self.minimums) || self.minimums.all(m, m.metric != 'served_ndcg@10')))",
                "served_ndcg@10 needs servedUsers: the users the served pipeline is scored on",
                ".servedUsers",
            ),
        )
    )

    metric: GateMetric = Field(
        default="ndcg@10", description="The metric whose drop from the checkpoint maxDrop bounds."
    )
    max_drop: float = Field(default=0.01, ge=0.0, le=1.0, description="Largest allowed absolute metric drop.")
    max_p99_latency_ms: float | None = Field(
        default=None, gt=0, description="Largest allowed p99 latency at maxBatchSize, in milliseconds."
    )
    minimums: list[MetricMinimum] | None = Field(
        default=None,
        max_length=6,
        description="Floors the engine's own metrics must reach besides the drop, e.g. "
        "[{metric: diversity, min: 0.6}]; every one must hold. At most one per metric.",
    )
    served_users: int | None = Field(
        default=None,
        ge=1,
        le=5000,
        description="Also score the served pipeline (hybrid retrieval, this engine, its fusion head) "
        "on this many users of the full-catalog temporal protocol, for the engine and once per "
        "checkpoint: served_ndcg@10 in the report, and a metric the gate can bound. Costs "
        "users × retrieval candidates pairs per engine.",
    )

    @model_validator(mode="after")
    def _one_minimum_per_metric(self) -> QualityGate:
        names = [m.metric for m in self.minimums or ()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"minimums: {', '.join(repeated)} listed more than once; keep one min per metric"
            )
        if self.served_users is None and "served_ndcg@10" in [self.metric, *names]:
            raise ValueError(
                "served_ndcg@10 needs servedUsers: set qualityGate.servedUsers to the number of users "
                "the served pipeline is scored on (60 takes about a minute per engine on 2 cores)"
            )
        return self


class RecipeOverride(CamelModel):
    """One search candidate as the optimization fields it changes; every other field, and the
    quality gate, come from the recipe it is listed in. A field given here replaces the base's
    whole value (``prune: {heads: 0.25}`` is that prune, not the base's prune amended)."""

    backend: Backend | None = None
    precision: Precision | None = None
    quantization: QuantizationSpec | None = None
    prune: PruneSpec | None = None
    distill: DistillSpec | None = None
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_sequence_length: int | None = Field(default=None, ge=8, le=512)


SearchPreset = Literal["cpu"]
_CPU_PRUNE = PruneSpec(heads=0.25, ffn=0.25)
PRESETS: dict[str, tuple[RecipeOverride, ...]] = {
    "cpu": (
        RecipeOverride(precision="fp32", prune=None, distill=None),
        RecipeOverride(precision="int8", prune=None, distill=None),
        RecipeOverride(precision="int8", prune=None, distill=DistillSpec(layers=3)),
        RecipeOverride(precision="int8", prune=_CPU_PRUNE, distill=None),
        RecipeOverride(precision="int8", prune=_CPU_PRUNE, distill=DistillSpec(layers=3)),
    ),
}
"""Candidate lists by name. Preset candidates name precision, prune and distill explicitly (None
included), so they mean the same whatever the base sets; ``cpu`` is what ONNX Runtime on CPU can
trade: fp32, int8, int8 on a 3-layer student, int8 pruned by a quarter, and both together."""


class SearchSpec(CamelModel):
    """Build several recipes and serve the fastest whose engine passes the quality gate."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.preset) != has(self.candidates)",
                "set exactly one of preset and candidates",
            )
        )
    )

    preset: SearchPreset | None = Field(
        default=None,
        description="A named candidate list: cpu = fp32, int8, int8 distilled to 3 layers, int8 "
        "pruned (a quarter of heads and FFN neurons), and int8 distilled and pruned.",
    )
    candidates: list[RecipeOverride] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Candidate recipes as overrides of this recipe's fields, e.g. "
        "[{precision: fp32}, {precision: int8}, {precision: int8, distill: {layers: 3}}].",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SearchSpec:
        if (self.preset is None) == (self.candidates is None):
            raise ValueError(
                "set exactly one of preset (e.g. cpu) and candidates (a list of recipe overrides)"
            )
        return self

    @property
    def overrides(self) -> tuple[RecipeOverride, ...]:
        return PRESETS[self.preset] if self.preset is not None else tuple(self.candidates or ())


class OptimizationRecipe(CamelModel):
    """Everything that turns a checkpoint into an engine; part of the content-addressed engine key.

    With ``search`` it describes several engines instead of one: each candidate is a recipe
    of its own (without ``search``), built and keyed like any other, and the search picks one.
    """

    backend: Backend = "auto"
    precision: Precision = Field(
        default="int8",
        description="fp32; fp16 (GPUs: torch or tensorrt); bf16 (torch, on GPUs or CPU); "
        "int8 (onnxruntime, tensorrt, or torch on CPU).",
    )
    quantization: QuantizationSpec = QuantizationSpec()
    prune: PruneSpec | None = None
    distill: DistillSpec | None = None
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_sequence_length: int = Field(default=128, ge=8, le=512)
    quality_gate: QualityGate = QualityGate()
    search: SearchSpec | None = Field(
        default=None,
        description="Build each candidate (this recipe with the candidate's fields replaced), gate "
        "each against qualityGate, measure each on a recommend-shaped benchmark, and serve the "
        "fastest that passed; the build fails when none passed.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OptimizationRecipe:
        if self.precision == "fp16" and self.backend == "onnxruntime":
            raise ValueError(
                "precision fp16 needs a GPU backend (tensorrt or torch); "
                "onnxruntime on CPU supports fp32 and int8"
            )
        if self.precision == "int8" and self.backend == "torch" and self.quantization.mode == "static":
            raise ValueError("static int8 quantization is available with onnxruntime or tensorrt, not torch")
        if self.precision == "bf16":
            raise_if_any(p for p in (bf16_problem(self.backend),) if p is not None)
        if self.search is not None:
            self.candidates()
        return self

    def candidates(self) -> list[OptimizationRecipe]:
        """The full recipes a search builds, in the order listed: this recipe without ``search``,
        each with one candidate's fields put in. A candidate that contradicts itself or repeats
        another is an error naming its index, so a spec cannot ask for an unbuildable search."""
        if self.search is None:
            return [self]
        base = self.model_dump(exclude={"search"})
        at: tuple[str | int, ...] = ("search", "preset") if self.search.preset else ("search", "candidates")
        found: list[OptimizationRecipe] = []
        problems: list[Problem] = []
        for index, override in enumerate(self.search.overrides):
            changed = {name: getattr(override, name) for name in override.model_fields_set}
            try:
                recipe = OptimizationRecipe.model_validate({**base, **changed})
            except ValidationError as error:
                reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
                problems.append(Problem((*at, index), f"this candidate is not a valid recipe: {reasons}"))
                continue
            if recipe in found:
                problems.append(
                    Problem((*at, index), f"is the same recipe as candidate {found.index(recipe)}")
                )
            found.append(recipe)
        raise_if_any(problems)
        return found
