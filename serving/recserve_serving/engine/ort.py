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
USER_FILE = "user.onnx"
"""A prefix-shaped engine's user pass; ``model.onnx`` is then its candidate pass."""


def _optimize(
    raw: Path,
    scratch: Path,
    target: Path,
    checkpoint: Checkpoint,
    recipe: OptimizationRecipe,
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
) -> None:
    """Fuse one exported graph, then quantize it as the recipe says, into ``target``."""
    from recserve_serving.engine.export import fuse
    from recserve_serving.engine.quantize import quantize_dynamic_int8, quantize_static_int8

    encoder: Any = checkpoint.model.encoder
    attention = encoder.encoder.layer[0].attention.self
    fused = fuse(
        raw,
        scratch / f"fused-{raw.name}",
        num_heads=int(attention.num_attention_heads),
        hidden_size=int(attention.all_head_size),
    )
    if recipe.precision == "int8" and recipe.quantization.mode == "static":
        quantize_static_int8(fused, target, calibration(), per_channel=recipe.quantization.per_channel)
    elif recipe.precision == "int8":
        quantize_dynamic_int8(
            fused,
            target,
            per_channel=recipe.quantization.per_channel,
            weights_only=checkpoint.meta.shape == "prefix",
        )
    else:
        shutil.copyfile(fused, target)


USER_INPUTS = ("user_ids", "user_mask")
CANDIDATE_INPUTS = ("user_mask", "item_ids", "item_mask", "pair_slots")


def _user_feeds(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    for batch in batches:
        yield {name: batch[name] for name in USER_INPUTS}


def _candidate_feeds(batches: Iterator[dict[str, np.ndarray]], users: Any) -> Iterator[dict[str, np.ndarray]]:
    """Calibration input of the candidate pass: the batch's candidates with its users' states
    from the fp32 user pass, the states the quantized candidate pass will read."""
    names = [output.name for output in users.get_outputs()]
    for batch in batches:
        states = users.run(None, {name: batch[name] for name in USER_INPUTS})
        yield {**{name: batch[name] for name in CANDIDATE_INPUTS}, **dict(zip(names, states, strict=True))}


def build(
    checkpoint: Checkpoint,
    recipe: OptimizationRecipe,
    target: Path,
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
) -> str:
    """Write ``model.onnx`` (and, for a prefix-shaped ranker, ``user.onnx``) into ``target``;
    ``calibration()`` yields input batches (in the ranker's shape) for static INT8."""
    from recserve_serving.engine.export import export_onnx, export_prefix_onnx

    with tempfile.TemporaryDirectory(prefix="recserve-export-") as name:
        scratch = Path(name)
        if checkpoint.meta.shape == "prefix":
            users, candidates = export_prefix_onnx(
                checkpoint, scratch / "user.onnx", scratch / "candidates.onnx"
            )
            _optimize(
                users, scratch, target / USER_FILE, checkpoint, recipe, lambda: _user_feeds(calibration())
            )
            fp32_users = _session(scratch / f"fused-{users.name}", threads=DEFAULT_THREADS)
            _optimize(
                candidates,
                scratch,
                target / MODEL_FILE,
                checkpoint,
                recipe,
                lambda: _candidate_feeds(calibration(), fp32_users),
            )
        else:
            raw = export_onnx(checkpoint, scratch / "raw.onnx")
            _optimize(raw, scratch, target / MODEL_FILE, checkpoint, recipe, calibration)
    return MODEL_FILE


def _session(path: Path, threads: int) -> Any:
    """A CPU session whose intra-op threads sleep between calls instead of spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own Fail/InvalidGraph types
        raise EngineError(f"ONNX Runtime cannot load {path}: {error}") from None


class OrtEngine(Engine):
    """ONNX Runtime on CPU; a prefix-shaped engine holds a user session and a candidate session."""

    def __init__(self, directory: Path, manifest: EngineManifest, threads: int = DEFAULT_THREADS) -> None:
        super().__init__(directory, manifest, threads)
        self.session = _session(directory / manifest.model_file, threads)
        self._inputs = [i.name for i in self.session.get_inputs()]
        self.user_session = None
        if manifest.model_shape == "prefix":
            self.user_session = _session(directory / USER_FILE, threads)
            self._state_names = [o.name for o in self.user_session.get_outputs()]

    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.asarray(encoded[name], dtype=np.int64) for name in self._inputs}
        scores: np.ndarray = self.session.run(None, feeds)[0]
        return scores

    def _user_states(self, user_ids: np.ndarray, user_mask: np.ndarray) -> list[Any]:
        assert self.user_session is not None
        states: list[Any] = self.user_session.run(None, {"user_ids": user_ids, "user_mask": user_mask})
        return states

    def _candidate_scores(self, encoded: dict[str, np.ndarray], states: list[Any]) -> np.ndarray:
        feeds = {name: encoded[name] for name in CANDIDATE_INPUTS}
        feeds.update(
            {name: np.ascontiguousarray(state) for name, state in zip(self._state_names, states, strict=True)}
        )
        scores: np.ndarray = self.session.run(None, feeds)[0]
        return scores
