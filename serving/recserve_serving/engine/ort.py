"""ONNX Runtime backend: export, fuse, quantize at build time; a CPU session at run time.

The build side needs torch (export) and onnx (quantization); the run side needs only
onnxruntime and the engine's tokenizer. The build's imports stay inside ``build`` so that the
serving image, which has no torch and no onnx, can load engines.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.errors import EngineError
from recserve_serving.recipe import OptimizationRecipe

if TYPE_CHECKING:
    from recserve_serving.model import Checkpoint

MODEL_FILE = "model.onnx"


def build(
    checkpoint: Checkpoint,
    recipe: OptimizationRecipe,
    target: Path,
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
) -> str:
    """Write ``model.onnx`` into ``target``; ``calibration()`` yields input batches for static INT8."""
    from recserve_serving.engine.export import export_onnx, fuse
    from recserve_serving.engine.quantize import quantize_dynamic_int8, quantize_static_int8

    encoder: Any = checkpoint.model.encoder
    attention = encoder.encoder.layer[0].attention.self
    with tempfile.TemporaryDirectory(prefix="recserve-export-") as scratch:
        raw = export_onnx(checkpoint, Path(scratch) / "raw.onnx")
        fused = fuse(
            raw,
            Path(scratch) / "fused.onnx",
            num_heads=int(attention.num_attention_heads),
            hidden_size=int(attention.all_head_size),
        )
        if recipe.precision == "int8" and recipe.quantization.mode == "static":
            quantize_static_int8(
                fused, target / MODEL_FILE, calibration(), per_channel=recipe.quantization.per_channel
            )
        elif recipe.precision == "int8":
            quantize_dynamic_int8(
                fused,
                target / MODEL_FILE,
                per_channel=recipe.quantization.per_channel,
                weights_only=checkpoint.meta.shape == "prefix",
            )
        else:
            shutil.copyfile(fused, target / MODEL_FILE)
    return MODEL_FILE


class OrtEngine(Engine):
    """ONNX Runtime on CPU: intra-op threads that sleep between calls instead of spinning."""

    def __init__(self, directory: Path, manifest: EngineManifest, threads: int = DEFAULT_THREADS) -> None:
        super().__init__(directory, manifest, threads)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = directory / manifest.model_file
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own Fail/InvalidGraph types
            raise EngineError(f"ONNX Runtime cannot load {path}: {error}") from None
        self._inputs = [i.name for i in self.session.get_inputs()]

    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.asarray(encoded[name], dtype=np.int64) for name in self._inputs}
        scores: np.ndarray = self.session.run(None, feeds)[0]
        return scores
