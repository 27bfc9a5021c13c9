"""TensorRT backend: an ONNX graph built into a serialized TensorRT engine for this GPU.

Written against the TensorRT 10 Python API. One optimization profile covers batch 1 to
maxBatchSize and sequence 1 to maxSequenceLength, tuned for half the max batch at full
length (the typical batched ranking request). FP16 sets the builder flag; INT8 uses
explicit quantization: the ONNX graph carries QDQ nodes from static calibration (the
form TensorRT 10 recommends over its deprecated implicit calibrators), with FP16 allowed
for the layers left unquantized. The build is only attempted where ``tensorrt`` imports
and a CUDA GPU exists; the engine is specific to the GPU's compute capability, which is
part of the cache key.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.export import INPUT_NAMES, OUTPUT_NAME, export_onnx
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.engine.quantize import quantize_static_int8
from recserve_serving.errors import EngineError
from recserve_serving.model import Checkpoint
from recserve_serving.recipe import OptimizationRecipe

PLAN_FILE = "model.plan"
WORKSPACE_BYTES = 2 << 30


def _logger() -> Any:
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build(
    checkpoint: Checkpoint,
    recipe: OptimizationRecipe,
    target: Path,
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
) -> str:
    import tensorrt as trt

    max_len = min(recipe.max_sequence_length, checkpoint.meta.max_len)
    with tempfile.TemporaryDirectory(prefix="recserve-trt-") as scratch:
        onnx_path = export_onnx(checkpoint, Path(scratch) / "raw.onnx")
        if recipe.precision == "int8":
            onnx_path = quantize_static_int8(
                onnx_path,
                Path(scratch) / "qdq.onnx",
                calibration(),
                per_channel=recipe.quantization.per_channel,
            )
        logger = _logger()
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT cannot parse the exported ONNX graph: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if recipe.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if recipe.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        batch = recipe.max_batch_size
        for name in INPUT_NAMES:
            profile.set_shape(name, (1, 1), (max(1, batch // 2), max_len), (batch, max_len))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError("TensorRT failed to build an engine (see the TensorRT log above)")
        (target / PLAN_FILE).write_bytes(bytes(serialized))
    return PLAN_FILE


class TensorRTEngine(Engine):
    """Runs a serialized plan with torch CUDA tensors as I/O buffers (no extra CUDA binding)."""

    def __init__(self, directory: Path, manifest: EngineManifest, threads: int = DEFAULT_THREADS) -> None:
        super().__init__(directory, manifest, threads)
        try:
            import tensorrt as trt
            import torch
        except ImportError as error:
            raise EngineError(f"engine {directory} needs tensorrt: {error}") from None
        if not torch.cuda.is_available():
            raise EngineError(f"engine {directory} is a TensorRT engine and needs a CUDA GPU")
        self.torch = torch
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine((directory / manifest.model_file).read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT cannot deserialize {directory / manifest.model_file} on this GPU")
        self.context = self.engine.create_execution_context()

    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        keep = []
        for name in INPUT_NAMES:
            tensor = torch.from_numpy(np.ascontiguousarray(encoded[name], dtype=np.int64)).cuda()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        output = torch.empty(
            tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda"
        )
        self.context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError("TensorRT execution failed")
        stream.synchronize()
        scores: np.ndarray = output.cpu().numpy()
        return scores
