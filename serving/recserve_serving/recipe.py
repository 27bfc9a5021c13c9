"""The optimization recipe: how a checkpoint becomes an engine.

It is part of the RecommenderModel spec and of the engine cache key, so every field that
changes the produced engine belongs here and nothing else does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recserve_serving.schema import CamelModel

Backend = Literal["auto", "onnxruntime", "torch", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]


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


class QualityGate(CamelModel):
    """The largest quality loss, and the slowest latency, a build may ship with."""

    metric: Literal["ndcg@10", "auc", "hitrate@10"] = "ndcg@10"
    max_drop: float = Field(default=0.01, ge=0.0, le=1.0, description="Largest allowed absolute metric drop.")
    max_p99_latency_ms: float | None = Field(
        default=None, gt=0, description="Largest allowed p99 latency at maxBatchSize, in milliseconds."
    )


class OptimizationRecipe(CamelModel):
    """Everything that turns a checkpoint into an engine; part of the content-addressed engine key."""

    backend: Backend = "auto"
    precision: Precision = "int8"
    quantization: QuantizationSpec = QuantizationSpec()
    prune: PruneSpec | None = None
    distill: DistillSpec | None = None
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_sequence_length: int = Field(default=128, ge=8, le=512)
    quality_gate: QualityGate = QualityGate()

    @model_validator(mode="after")
    def _consistent(self) -> OptimizationRecipe:
        if self.precision == "fp16" and self.backend == "onnxruntime":
            raise ValueError(
                "precision fp16 needs a GPU backend (tensorrt or torch); "
                "onnxruntime on CPU supports fp32 and int8"
            )
        if self.precision == "int8" and self.backend == "torch" and self.quantization.mode == "static":
            raise ValueError("static int8 quantization is available with onnxruntime or tensorrt, not torch")
        return self
