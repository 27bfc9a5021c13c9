"""The torch backend: the (distilled/pruned) checkpoint itself, run eagerly.

It needs no export step, so it is the reference every other backend is measured against
and the fallback for models ONNX cannot express. On a CUDA machine it runs on the GPU in
fp32, fp16 or bf16: the CUDA path that needs no TensorRT. On CPU it offers fp32, bf16 and
dynamic INT8 of the Linear layers, applied at load time from the stored fp32 weights (so
the files on disk stay plain HF weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.engine.precision import device, place
from recserve_serving.errors import CheckpointError, EngineError
from recserve_serving.model import WEIGHTS_FILE, Checkpoint, load_checkpoint, save_checkpoint, torch_inputs
from recserve_serving.prefix import candidate_scores, user_states
from recserve_serving.recipe import OptimizationRecipe


def build(checkpoint: Checkpoint, recipe: OptimizationRecipe, target: Path) -> str:
    save_checkpoint(checkpoint, target)
    return WEIGHTS_FILE


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

    @torch.inference_mode()
    def _user_states(self, user_ids: np.ndarray, user_mask: np.ndarray) -> list[Any]:
        inputs = torch_inputs({"user_ids": user_ids, "user_mask": user_mask}, self.device)
        return user_states(self.model.encoder, inputs["user_ids"], inputs["user_mask"])

    @torch.inference_mode()
    def _candidate_scores(self, encoded: dict[str, np.ndarray], states: list[Any]) -> np.ndarray:
        inputs = torch_inputs(encoded, self.device)
        scores = candidate_scores(
            self.model.encoder,
            self.model.head,
            inputs["user_mask"],
            inputs["item_ids"],
            inputs["item_mask"],
            inputs["pair_slots"],
            states,
        )
        return scores.float().cpu().numpy()
