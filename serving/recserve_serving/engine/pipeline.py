"""Pipeline-parallel scoring: the encoder's layers split into stages, one Ray actor each.

Stage 0 holds the embeddings and the first layers, the last stage holds the remaining
layers, the pooling and the head. Activations go from stage to stage as Ray object
references, so they move between the stage actors directly, never through the caller.
Inside a Serve replica the stages are placed in the replica's own placement group (one
bundle per stage, STRICT_PACK), so a replica's shards always share a node. A stage whose
bundle holds a GPU runs on it in the engine's precision (fp32, fp16 or bf16); without one it
runs on CPU (fp32, bf16 or INT8), like the single-device torch engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recserve_serving.engine.base import DEFAULT_THREADS, Engine
from recserve_serving.engine.manifest import EngineManifest
from recserve_serving.errors import EngineError
from recserve_serving.gpu_support import Combination, combination_problems
from recserve_serving.serving_spec import ResourcesSpec


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


def stage_device(gpus: float, cuda_available: bool) -> str:
    """Where a stage runs: on its GPU when its bundle gives it one, else on CPU.

    A stage that reserved a GPU but sees no CUDA is refused rather than quietly run on CPU,
    which would serve a GPU spec at a fraction of its throughput."""
    if gpus <= 0:
        return "cpu"
    if not cuda_available:
        raise EngineError(
            f"a pipeline stage reserved {gpus:g} GPU(s) but CUDA is not available in its actor; "
            "check the node's NVIDIA driver and that Ray reports its GPUs (ray status)"
        )
    return "cuda"


def check_runnable(directory: Path, manifest: EngineManifest, stages: int, gpus: float) -> None:
    """Refuse, before any actor starts, what validation refuses too (``gpu_support``)."""
    combo = Combination(backend=manifest.backend, precision=manifest.precision, pipeline=stages, gpus=gpus)
    problems = combination_problems(combo)
    if problems:
        details = "; ".join(p.message for p in problems)
        raise EngineError(f"cannot run engine {directory} as {stages} pipeline stages: {details}")
    if stages > 1 and manifest.model_shape != "cross":
        raise EngineError(
            f"cannot run engine {directory} as {stages} pipeline stages: its checkpoint has the "
            f"{manifest.model_shape} shape, and pipeline stages run cross-shaped checkpoints only; "
            "train with `recserve train --shape cross`, or set serving.parallelism.pipeline to 1"
        )


def stage_attention_mask(config: Any, hidden: Any, mask2d: Any) -> Any:
    """The encoder layers' attention mask from the 2-D padding mask; the one place a stage builds
    it, so that another mask shape (e.g. a shared prefix) changes only this function."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=mask2d)


def to_wire(hidden: Any) -> np.ndarray:
    """Activations as a numpy array for Ray's object store; bf16, which numpy lacks, travels as
    its raw 16 bits (no widening, no rounding)."""
    import torch

    cpu = hidden.detach().cpu()
    if cpu.dtype == torch.bfloat16:
        return np.asarray(cpu.view(torch.int16).numpy())
    return np.asarray(cpu.numpy())


def from_wire(array: np.ndarray, dtype: Any, device: str) -> Any:
    """The inverse of ``to_wire`` for a stage that runs in ``dtype``; copies, since arrays from
    the object store are read-only."""
    import torch

    tensor = torch.from_numpy(np.array(array))
    if dtype == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.to(device)


class Stage:
    """One pipeline stage on its own device and precision; the other stages' weights are dropped."""

    def __init__(
        self,
        checkpoint_dir: str,
        stage: int,
        stages: int,
        threads: int = DEFAULT_THREADS,
        precision: str = "fp32",
        gpus: float = 0.0,
    ) -> None:
        import torch
        from torch import nn

        from recserve_serving.engine.precision import DTYPES, place
        from recserve_serving.model import load_checkpoint

        torch.set_num_threads(threads)
        model = load_checkpoint(Path(checkpoint_dir)).model.eval()
        bert: Any = model.encoder
        layers = bert.encoder.layer
        self.span = stage_ranges(len(layers), stages)[stage]
        self.first, self.last = stage == 0, stage == stages - 1
        self.config = bert.config
        self.device = stage_device(gpus, torch.cuda.is_available())
        self.dtype = DTYPES.get(precision, torch.float32)
        parts = nn.ModuleDict({"layers": nn.ModuleList([layers[i] for i in self.span])})
        if self.first:
            parts["embeddings"] = bert.embeddings
        if self.last:
            parts["head"] = model.head
        what = f"pipeline stage {stage} of {checkpoint_dir}"
        self.parts: Any = place(parts, precision, self.device, what)

    def forward(self, inputs: dict[str, np.ndarray] | np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            mask2d = torch.as_tensor(attention_mask, device=self.device)
            if self.first:
                assert isinstance(inputs, dict)
                hidden: torch.Tensor = self.parts["embeddings"](
                    input_ids=torch.as_tensor(inputs["input_ids"], device=self.device),
                    token_type_ids=torch.as_tensor(inputs["token_type_ids"], device=self.device),
                )
            else:
                assert isinstance(inputs, np.ndarray)
                hidden = from_wire(inputs, self.dtype, self.device)
            mask = stage_attention_mask(self.config, hidden, mask2d)
            for layer in self.parts["layers"]:
                out = layer(hidden, attention_mask=mask)
                hidden = out[0] if isinstance(out, tuple) else out
            if not self.last:
                return to_wire(hidden)
            weights = mask2d.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            scores: torch.Tensor = self.parts["head"](pooled)
            return np.asarray(scores.squeeze(-1).float().cpu().numpy())


class PipelineEngine(Engine):
    """A torch engine run as ``stages`` Ray actors; scores match the single-device engine.

    Each stage actor asks for ``resources`` (one shard: ``serving.resources``), exactly its
    placement-group bundle, so a stage with a GPU in its bundle gets that GPU and runs on it.
    """

    def __init__(
        self,
        directory: Path,
        manifest: EngineManifest,
        stages: int,
        placement_group: Any = None,
        threads: int = DEFAULT_THREADS,
        resources: ResourcesSpec | None = None,
    ) -> None:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        super().__init__(directory, manifest, threads)
        shard = resources or ResourcesSpec()
        check_runnable(directory, manifest, stages, shard.gpus)
        group = placement_group or ray.util.get_current_placement_group()
        remote: Any = ray.remote(Stage)
        self.stages: list[Any] = []
        for stage in range(stages):
            options: dict[str, Any] = dict(shard.shard_actor_options())
            if group is not None:
                # Bundle 0 holds the replica itself; stage i runs in bundle i + 1.
                bundle = stage + 1 if len(group.bundle_specs) > stages else stage
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group=group, placement_group_bundle_index=bundle
                )
            self.stages.append(
                remote.options(**options).remote(
                    str(directory), stage, stages, threads, manifest.precision, shard.gpus
                )
            )

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
