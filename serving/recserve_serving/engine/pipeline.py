"""Pipeline-parallel scoring: the encoder's layers split into stages, one Ray actor each.

Stage 0 holds the embeddings and the first layers, the last stage holds the remaining
layers, the pooling and the head. Activations go from stage to stage as Ray object
references, so they move between the stage actors directly, never through the caller.
Inside a Serve replica the stages are placed in the replica's own placement group (one
bundle per stage, STRICT_PACK), so a replica's shards always share a node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.errors import EngineError


def stage_ranges(layers: int, stages: int) -> list[range]:
    """Contiguous, near-equal layer ranges; earlier stages take the remainder (they also embed)."""
    if not 1 <= stages <= layers:
        raise EngineError(f"cannot split {layers} encoder layers into {stages} pipeline stages")
    base, extra = divmod(layers, stages)
    ranges, start = [], 0
    for stage in range(stages):
        size = base + (1 if stage < extra else 0)
        ranges.append(range(start, start + size))
        start += size
    return ranges


class Stage:
    """One pipeline stage; the other stages' weights are dropped after loading."""

    def __init__(self, checkpoint_dir: str, stage: int, stages: int, threads: int = DEFAULT_THREADS) -> None:
        import torch

        from recserve_serving.model import load_checkpoint

        torch.set_num_threads(threads)
        model = load_checkpoint(Path(checkpoint_dir)).model.eval()
        bert: Any = model.encoder
        layers = bert.encoder.layer
        self.span = stage_ranges(len(layers), stages)[stage]
        self.first, self.last = stage == 0, stage == stages - 1
        self.config = bert.config
        self.embeddings: Any = bert.embeddings if self.first else None
        self.layers: list[Any] = [layers[i] for i in self.span]
        self.head: Any = model.head if self.last else None

    def forward(self, inputs: dict[str, np.ndarray] | np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        with torch.inference_mode():
            mask2d = torch.as_tensor(attention_mask)
            if self.first:
                assert isinstance(inputs, dict) and self.embeddings is not None
                hidden: torch.Tensor = self.embeddings(
                    input_ids=torch.as_tensor(inputs["input_ids"]),
                    token_type_ids=torch.as_tensor(inputs["token_type_ids"]),
                )
            else:
                hidden = torch.as_tensor(inputs)
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask2d)
            for layer in self.layers:
                out = layer(hidden, attention_mask=mask)
                hidden = out[0] if isinstance(out, tuple) else out
            if not self.last:
                return hidden.numpy()
            assert self.head is not None
            weights = mask2d.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            scores: torch.Tensor = self.head(pooled)
            return scores.squeeze(-1).numpy()


class PipelineEngine(Engine):
    """A torch engine run as ``stages`` Ray actors; scores match the single-device engine."""

    def __init__(
        self,
        directory: Path,
        manifest: EngineManifest,
        stages: int,
        placement_group: Any = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        super().__init__(directory, manifest, threads)
        if manifest.backend != "torch":
            raise EngineError(
                f"pipeline parallelism runs torch engines; {directory} is a {manifest.backend} engine"
            )
        group = placement_group or ray.util.get_current_placement_group()
        remote: Any = ray.remote(num_cpus=1)(Stage)
        self.stages: list[Any] = []
        for stage in range(stages):
            options: dict[str, Any] = {}
            if group is not None:
                # Bundle 0 holds the replica itself; stage i runs in bundle i + 1.
                bundle = stage + 1 if len(group.bundle_specs) > stages else stage
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=bundle
                )
            self.stages.append(remote.options(**options).remote(str(directory), stage, stages, threads))

    def _run(self, encoded: dict[str, np.ndarray]) -> np.ndarray:
        import ray

        mask = np.asarray(encoded["attention_mask"])
        inputs = {k: np.asarray(encoded[k]) for k in ("input_ids", "token_type_ids")}
        ref = self.stages[0].forward.remote(inputs, mask)
        for stage in self.stages[1:]:
            ref = stage.forward.remote(ref, mask)
        return np.asarray(ray.get(ref))

    def close(self) -> None:
        import ray

        for stage in self.stages:
            ray.kill(stage)
        self.stages = []
