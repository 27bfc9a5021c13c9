"""Running the torch ranker in a precision on a device: the rules and the placement.

Shared by the torch engine, each pipeline stage and ``bench/gpu.py``, so that all three run a
precision alike. It imports torch and nothing of the engine machinery (no pydantic), which is
what lets the GPU benchmark run from a bare CUDA + torch + transformers environment.
"""

from __future__ import annotations

import torch
from torch import nn

from recserve_serving.errors import EngineError


def device() -> str:
    """Where a single-device torch engine runs: the GPU whenever CUDA is visible to the process."""
    return "cuda" if torch.cuda.is_available() else "cpu"


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
