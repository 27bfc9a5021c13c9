"""How a served model keeps learning: the ``spec.training`` block of a RecommenderModel.

A retrain warm-starts from the stable checkpoint, fine-tunes on the interactions that arrived
since that checkpoint's data cutoff (plus a replay sample of older ones, against forgetting),
and compares itself with the stable checkpoint on the newest held-out slice. Only a version
no worse on the gate metric moves the candidate alias; the canary does the rest. The block
lives in the serving package because the retrain itself (``recserve_serving.retrain``) reads
it, in a CronJob as in ``recserve retrain``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from recserve_serving.schema import CamelModel
from recserve_serving.spec_rules import hinted_pattern

CRON_PATTERN = hinted_pattern(
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|(\S+\s+){4}\S+)$",
    "a cron schedule of five fields (minute hour day month weekday), e.g. '0 3 * * 0', or @daily",
)
ALIAS_PATTERN = hinted_pattern(r"^[A-Za-z_][\w.-]{0,62}$", "a registry alias such as candidate")
GateMetric = Literal["ndcg@10", "auc", "hitrate@10"]


class TrainingBudget(CamelModel):
    """What one retrain may spend: optimizer steps, and a wall-clock ceiling for the whole run."""

    steps: int = Field(default=100, ge=1, le=100_000, description="Optimizer steps of the fine-tune.")
    batch_size: int = Field(
        default=32,
        ge=4,
        le=1024,
        description="Pairs per step: a multiple of 4 (a positive and its 3 negatives).",
    )

    @field_validator("batch_size")
    @classmethod
    def _whole_groups(cls, value: int) -> int:
        if value % 4:
            raise ValueError(f"must be a multiple of 4, one positive with its 3 negatives (got {value})")
        return value

    max_minutes: int = Field(
        default=60,
        ge=1,
        le=24 * 60,
        description="The retrain stops (and registers nothing) past this many minutes; in a cluster it "
        "is also the CronJob's activeDeadlineSeconds.",
    )


class TrainingPrivacy(CamelModel):
    """Differentially private fine-tuning (DP-SGD): per-example clipping and Gaussian noise."""

    dp_epsilon: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Target privacy budget epsilon of the fine-tune; DP-SGD (opacus) is used when set. "
        "Smaller is more private and costs more quality.",
    )
    dp_delta: float = Field(
        default=1e-5, gt=0, lt=0.01, description="Target delta: the chance the epsilon bound fails."
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0, le=100, description="Per-example gradient clipping norm of DP-SGD."
    )


class TrainingSpec(CamelModel):
    """Scheduled re-fine-tuning on new interactions; its versions reach traffic only through a canary."""

    schedule: str = Field(
        default="0 3 * * 0",
        max_length=128,
        pattern=CRON_PATTERN,
        description="When to retrain, as a cron schedule (the CronJob's schedule in a cluster).",
    )
    suspend: bool = Field(
        default=False, description="Pause scheduled retrains (recserve retrain still runs)."
    )
    window_days: float | None = Field(
        default=None,
        gt=0,
        le=3650,
        description="Fine-tune on at most this many days of the newest interactions; unset: everything "
        "since the stable checkpoint's data cutoff.",
    )
    replay_fraction: float = Field(
        default=0.25,
        ge=0,
        le=0.9,
        description="Share of training pairs drawn from interactions before the cutoff, against forgetting.",
    )
    holdout_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="The newest share of the new interactions, held out to compare the new version with "
        "the stable one.",
    )
    min_new_interactions: int = Field(
        default=50,
        ge=1,
        description="Fewer new interactions than this: the retrain records why and registers nothing.",
    )
    gate_metric: GateMetric = Field(
        default="ndcg@10", description="The metric a new version must not be worse on."
    )
    max_drop: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="How much worse than stable on the gate metric still counts as no worse (absolute).",
    )
    candidate_alias: str = Field(
        default="candidate",
        max_length=63,
        pattern=ALIAS_PATTERN,
        description="The registry alias a retrained version that passes the gate is given; point "
        "spec.rollout.canary.checkpoint at models:/NAME@ALIAS for an automatic canary.",
    )
    budget: TrainingBudget = TrainingBudget()
    privacy: TrainingPrivacy = TrainingPrivacy()
