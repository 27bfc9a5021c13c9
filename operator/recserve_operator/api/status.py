"""The status the operator writes: what runs, how healthy it is, and how far a rollout got.

It follows kstatus conventions (``observedGeneration`` plus ``Ready``/``Reconciling``/
``Stalled`` conditions) so Argo CD, Flux and ``kubectl wait`` read health without knowing
recserve. Everything a restarted operator needs to resume a canary (weight, step, when the
step began) is here, because status is the only memory the operator keeps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from recserve_serving.recipe import Precision
from recserve_serving.schema import CamelModel

Phase = Literal["Pending", "Building", "Deploying", "Progressing", "Ready", "Degraded", "Failed"]
ConditionStatus = Literal["True", "False", "Unknown"]
CanaryState = Literal["Progressing", "Paused", "Promoted", "RolledBack", "Aborted"]
RetrainRun = Literal["Running", "Succeeded", "Failed"]
ResolvedBackend = Literal["onnxruntime", "torch", "tensorrt"]

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
ENGINE_READY = "EngineReady"
CANARY_HEALTHY = "CanaryHealthy"

CONDITION_TYPE_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(CamelModel):
    """A kstatus condition, shaped like metav1.Condition so generic tools read it."""

    type: str = Field(..., max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: ConditionStatus
    reason: str = Field(..., min_length=1, max_length=1024, pattern=REASON_PATTERN)
    message: str = Field(default="", max_length=32_768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


class SearchCandidateStatus(CamelModel):
    """One candidate of spec.optimization.search, as far as the search got with it."""

    recipe: str = Field(..., max_length=128, description="The candidate in short, e.g. int8 distill=3.")
    passed: bool = Field(..., description="Whether its engine was built and passed the quality gate.")
    drop: float | None = Field(default=None, description="Drop of the gate metric from the checkpoint.")
    pairs_per_s: int | None = Field(
        default=None, ge=0, description="Pairs per second on the recommend-shaped benchmark (passed only)."
    )
    front: bool = Field(default=False, description="On the quality/throughput Pareto front.")
    chosen: bool = Field(default=False, description="The candidate this version serves.")


class EngineStatus(CamelModel):
    """The engine a version runs: its cache key and what the build gate measured."""

    key: str = Field(
        default=..., description="Content-addressed engine key (checkpoint digest, recipe, backend, GPU)."
    )
    backend: ResolvedBackend
    precision: Precision
    size_bytes: int | None = Field(default=None, ge=0)
    quality: dict[str, float] = Field(
        default_factory=dict, description="Gate metrics of the engine, e.g. ndcg@10 and its drop."
    )
    p50_ms: float | None = Field(default=None, ge=0)
    p99_ms: float | None = Field(default=None, ge=0)
    search: list[SearchCandidateStatus] | None = Field(
        default=None,
        max_length=8,
        description="Every candidate of spec.optimization.search when the engine was chosen by one; "
        "the full report (quality, timings, reasons) is in the engine cache's reports.",
    )


class VersionStatus(CamelModel):
    """One served version: the checkpoint as written in spec, what it resolved to, its engine."""

    checkpoint: str = Field(..., description="The checkpoint URI as written in spec.")
    version: str | None = Field(
        default=None, description="Registry version the URI resolved to (an alias moves)."
    )
    digest: str | None = Field(default=None, description="Content digest of the resolved checkpoint.")
    recipe: str | None = Field(
        default=None,
        description="Fingerprint of the optimization recipe: with the digest it names the version "
        "before its engine exists, so a decision outlives the build Job that made the engine.",
    )
    label: str | None = Field(
        default=None, description="The version label in metrics and the X-Recserve-Version header."
    )
    engine_dir: str | None = Field(
        default=None,
        description="Where the engine is stored: a decided version keeps serving from here "
        "while its build Job is gone or being re-run.",
    )
    engine: EngineStatus | None = None


class AnalysisResult(CamelModel):
    """The last canary analysis over the current step's window."""

    verdict: Literal["Pass", "Fail", "Inconclusive"]
    requests: int = Field(default=0, ge=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    p99_latency_ms: float | None = Field(default=None, ge=0)
    score_shift: float | None = Field(default=None, ge=0)
    message: str = Field(default="", max_length=4096)
    checked_at: datetime | None = None


class CanaryStatus(VersionStatus):
    """Where a rollout stands; enough to resume after an operator restart without resetting weights."""

    state: CanaryState = Field(
        default="Progressing",
        description="Progressing or Paused (too little traffic, or no metrics) while steps run; "
        "Promoted, RolledBack (failed analysis, progress deadline, or an engine that failed its "
        "quality gate) or Aborted once finished. A finished canary stays finished for its checkpoint "
        "digest and recipe, until spec names another canary.",
    )
    weight: int = Field(default=0, ge=0, le=100, description="Percent of traffic the canary gets now.")
    step: int = Field(
        default=0, ge=0, description="Index into spec.rollout.canary.steps of the current step."
    )
    step_started_at: datetime | None = Field(
        default=None,
        description="When the current step's window began: its pause, and then its progress deadline, "
        "count from here. Moved forward when the analysis baseline had to be taken again.",
    )
    analysis: AnalysisResult | None = None
    reason: str | None = Field(
        default=None,
        max_length=64,
        description="Why a finished canary ended: AnalysisFailed, ProgressDeadlineExceeded, "
        "QualityGateFailed, EngineFailed, Aborted, PromotedByRequest or StepsPassed.",
    )
    message: str | None = Field(default=None, max_length=4096, description="What decided it, in words.")
    report: str | None = Field(
        default=None,
        max_length=1024,
        description="The quality gate report of a canary engine that failed it.",
    )
    replaced: VersionStatus | None = Field(
        default=None,
        description="The stable version a promoted canary replaced. While spec.checkpoint still names it "
        "and spec.rollout.canary is gone, the promoted version keeps serving (Ready reason "
        "PromotionNotInSpec) instead of silently going back.",
    )


class TrainingStatus(CamelModel):
    """Where scheduled retraining stands: the CronJob that runs it and its last runs, as the
    CronJob reports them. Informational: a failed retrain registers nothing, so serving, Ready
    and the phase never depend on it."""

    cron_job: str | None = Field(
        default=None,
        max_length=63,
        description="The retrain CronJob; null where nothing is scheduled (see message): then "
        "recserve retrain runs by hand.",
    )
    schedule: str = Field(..., max_length=128, description="spec.training.schedule.")
    suspended: bool = Field(default=False, description="spec.training.suspend.")
    last_schedule_time: datetime | None = Field(default=None, description="When a retrain last started.")
    last_successful_time: datetime | None = Field(
        default=None, description="When a retrain last finished successfully."
    )
    active: int = Field(default=0, ge=0, description="Retrain Jobs running now (at most 1: Forbid).")
    last_run: RetrainRun | None = Field(
        default=None,
        description="How the last scheduled retrain went: Running, Succeeded, or Failed (it ended "
        "after the last success without succeeding; its Job's logs say why).",
    )
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="Why nothing is scheduled, or why the CronJob could not be applied.",
    )


class ChampionStatus(CamelModel):
    """The registry alias the operator last moved, when a canary of a registry version was promoted."""

    model: str = Field(..., max_length=256, description="The registered model name in the MLflow registry.")
    alias: str = Field(
        ..., max_length=256, description="The alias moved: spec.checkpoint's alias, else champion."
    )
    version: str = Field(..., max_length=64, description="The version the alias now names.")
    moved_at: datetime = Field(..., description="When the operator moved it.")
    from_canary: str = Field(
        ..., max_length=1024, description="The promoted canary's checkpoint URI, as in spec."
    )


class RecommenderModelStatus(CamelModel):
    """Written only by the operator; never tracked in git."""

    observed_generation: int | None = Field(default=None, ge=0)
    phase: Phase | None = Field(
        default=None,
        description="Pending, Building (engines), Deploying, Progressing (canary steps), Ready, "
        "Degraded (serving stable after a rollback or with a failed dependency), Failed (Stalled).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    stable: VersionStatus | None = None
    canary: CanaryStatus | None = None
    endpoint: str | None = Field(default=None, max_length=2048, description="URL of the serving endpoint.")
    training: TrainingStatus | None = Field(
        default=None, description="Scheduled retraining (spec.training); absent when spec has none."
    )
    champion: ChampionStatus | None = Field(
        default=None,
        description="Where a promotion moved the registry's champion alias; spec is never written, so "
        "GitOps sources that name models:/NAME@champion follow the promotion without a commit.",
    )

    @field_validator("conditions")
    @classmethod
    def _unique_types(cls, conditions: list[Condition]) -> list[Condition]:
        seen: set[str] = set()
        for condition in conditions:
            if condition.type in seen:
                raise ValueError(f"condition type {condition.type!r} appears twice; types are unique")
            seen.add(condition.type)
        return conditions

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
