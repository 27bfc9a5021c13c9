"""The torch backend: the (distilled/pruned) checkpoint itself, run eagerly.

It needs no export step, so it is the reference every other backend is measured against
and the fallback for models ONNX cannot express. On a CUDA machine it runs on the GPU in
fp32, fp16 or bf16: the CUDA path that needs no TensorRT. On CPU it offers fp32, bf16 and
dynamic INT8 of the Linear layers, applied at load time from the stored fp32 weights (so
the files on disk stay plain HF weights).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.errors import CheckpointError, EngineError
from recserve_serving.model import WEIGHTS_FILE, Checkpoint, load_checkpoint, save_checkpoint, torch_inputs
from recserve_serving.recipe import OptimizationRecipe


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build(checkpoint: Checkpoint, recipe: OptimizationRecipe, target: Path) -> str:
    save_checkpoint(checkpoint, target)
    return WEIGHTS_FILE


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    quantized: nn.Module = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return quantized


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""The torch dtype each float precision runs in; int8 stays fp32 storage with INT8 Linear layers."""


def precision_problem(precision: str, device: str) -> str | None:
    """Why torch cannot run ``precision`` on ``device`` (``cpu`` or ``cuda``), or None: fp16 on
    CUDA only, bf16 on CUDA or CPU (correct there, and fast on CPUs with AMX), int8 as dynamic
    INT8 Linear layers on CPU only."""
    if precision == "int8" and device != "cpu":
        return "INT8, which torch runs on CPU only"
    if precision == "fp16" and device != "cuda":
        return "fp16, which needs a CUDA GPU"
    if precision != "int8" and precision not in DTYPES:
        return f"precision {precision!r}; torch runs {', '.join(DTYPES)} or int8"
    return None


def place(module: nn.Module, precision: str, device: str, what: str) -> nn.Module:
    """``module`` in ``precision`` on ``device``, or an EngineError saying why ``what`` cannot run here.

    One function for the single-device engine and each pipeline stage, so that both run a
    precision the same way.
    """
    problem = precision_problem(precision, device)
    if problem is not None:
        raise EngineError(f"{what} is {problem}")
    if precision == "int8":
        return quantize_linear_int8(module)
    return module.to(device=device, dtype=DTYPES[precision])


class TorchEngine(Engine):
    def __init__(self, directory: Path, manifest: EngineManifest, threads: int = DEFAULT_THREADS) -> None:
        super().__init__(directory, manifest, threads)
        torch.set_num_threads(threads)
        try:
            model: nn.Module = load_checkpoint(directory).model.eval()
        except CheckpointError as error:
            raise EngineError(f"torch engine {directory}: {error}") from None
        self.device = device()
        self.model = place(model, manifest.precision, self.device, f"torch engine {directory}")

    @torch.inference_mode()
    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        scores: torch.Tensor = self.model(**torch_inputs(encoded, self.device))
        return scores.float().cpu().numpy()
