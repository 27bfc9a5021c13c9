"""Which (backend, precision, pipeline, tensor, gpus) combinations a replica can actually run.

Validation (``recserve validate``, the webhook, ``recserve up``) and the runtime
(``PipelineEngine``, the torch backend) both ask this module, so that a spec which
validates is a spec whose replicas start, and a spec the runtime would fail on is refused
before anything is built. The CRD's CEL twins of these rules sit beside the pydantic
validators that call it (``recserve_operator.api.types``, ``ParallelismSpec``); a test
keeps the table of cases and both verdicts together.

Pure Python on purpose: the operator imports it, and it has no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from recserve_serving.spec_rules import Loc, Problem

PIPELINE_BACKENDS = frozenset({"torch"})
"""Backends whose engines ``PipelineEngine`` can split into stages: it runs the checkpoint's
own torch layers, which an ONNX graph or a TensorRT plan no longer exposes."""

TENSOR_PARALLELISM_NOT_IMPLEMENTED = "tensor parallelism is not implemented; use pipeline"


@dataclass(frozen=True)
class Combination:
    """What decides whether a replica can run: the engine (backend, precision) and its shards.

    ``backend`` may be ``auto`` at validation (it becomes tensorrt or onnxruntime at build,
    never torch); the runtime always passes the concrete backend of a built engine.
    """

    backend: str
    precision: str
    pipeline: int = 1
    tensor: int = 1
    gpus: float = 0.0


def tensor_problem(tensor: int, at: Loc = ("tensor",)) -> Problem | None:
    """Tensor parallelism is reserved in the spec but has no runtime behind it."""
    if tensor > 1:
        return Problem(
            at,
            f"{TENSOR_PARALLELISM_NOT_IMPLEMENTED} (got tensor {tensor}): set tensor to 1 and split "
            "the encoder's layers across GPUs with parallelism.pipeline",
        )
    return None


def bf16_problem(backend: str, at: Loc = ("precision",)) -> Problem | None:
    """bf16 is a torch dtype; the ONNX Runtime and TensorRT builds here make fp32, fp16 or int8."""
    if backend != "torch":
        return Problem(at, f"bf16 runs on the torch backend only: set backend to torch (got {backend})")
    return None


def combination_problems(
    combo: Combination, recipe_at: Loc = ("optimization",), serving_at: Loc = ("serving",)
) -> list[Problem]:
    """Every reason ``combo`` cannot run, each at the field to change (paths as the spec spells them)."""
    where = ".".join(str(part) for part in recipe_at)
    problems: list[Problem] = []
    tensor = tensor_problem(combo.tensor, (*serving_at, "parallelism", "tensor"))
    if tensor is not None:
        problems.append(tensor)
    if combo.backend == "tensorrt" and combo.gpus == 0:
        problems.append(
            Problem((*recipe_at, "backend"), "tensorrt runs on GPUs: set serving.resources.gpus > 0 (got 0)")
        )
    if combo.precision == "fp16" and combo.gpus == 0:
        problems.append(
            Problem(
                (*recipe_at, "precision"),
                "fp16 runs on GPUs: set serving.resources.gpus > 0, or use int8, fp32 or (backend torch) "
                "bf16 on CPU (got gpus 0)",
            )
        )
    if combo.precision == "bf16":
        bf16 = bf16_problem(combo.backend, (*recipe_at, "precision"))
        if bf16 is not None:
            problems.append(bf16)
    if combo.backend == "torch" and combo.precision == "int8" and combo.gpus > 0:
        problems.append(
            Problem(
                (*recipe_at, "precision"),
                f"int8 with backend torch runs on CPU only: set serving.resources.gpus to 0, or use "
                f"{where}.backend tensorrt for int8 on GPUs, or fp16/bf16 with torch (got gpus {combo.gpus:g})",
            )
        )
    if combo.pipeline > 1 and combo.backend not in PIPELINE_BACKENDS:
        problems.append(
            Problem(
                (*serving_at, "parallelism", "pipeline"),
                f"pipeline parallelism runs torch engines only: set {where}.backend to torch, or "
                f"serving.parallelism.pipeline to 1 (got backend {combo.backend} with pipeline {combo.pipeline})",
            )
        )
    return problems


def gpu_support(combo: Combination) -> bool:
    """Whether a replica can run ``combo``: the one verdict validation and the runtime share."""
    return not combination_problems(combo)
