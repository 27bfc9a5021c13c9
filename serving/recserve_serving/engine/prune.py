"""Structured pruning: drop the least important attention heads and FFN neurons, then recover.

Importance is the first-order Taylor estimate |sum(activation * gradient)| of the ranking
loss with respect to each head's context output and each FFN neuron's activation,
averaged over a few training batches: it estimates how much the loss would change if the
unit were removed, which magnitude-based scores cannot see. Every layer keeps the same
number of heads so that ONNX Runtime's attention fusion still recognises the pattern.
A short recovery phase then distils from the unpruned model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from recserve_serving.data import Dataset
from recserve_serving.engine.distill import train_against_teacher
from recserve_serving.model import Checkpoint, CheckpointMeta, prune_layer
from recserve_serving.recipe import PruneSpec
from recserve_serving.train import TrainSettings, listwise_loss

IMPORTANCE_BATCHES = 8


def importance(
    checkpoint: Checkpoint, data: Dataset, *, batches: int = IMPORTANCE_BATCHES, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: head importances (one per head) and FFN neuron importances."""
    settings = TrainSettings(seed=seed)
    group = 1 + settings.negatives_per_positive
    model = checkpoint.model.eval()
    encoder: Any = model.encoder
    layers = list(encoder.encoder.layer)
    captured: dict[tuple[str, int], list[torch.Tensor]] = {}
    head_scores = [np.zeros(layer.attention.self.num_attention_heads) for layer in layers]
    neuron_scores = [np.zeros(layer.intermediate.dense.out_features) for layer in layers]

    def keep(kind: str, index: int, use_input: bool) -> Any:
        """Record the tensor each head (the attention output projection's input) or neuron
        (the FFN's activation) produces; a prefix-shaped layer produces two per pass (the
        user's tokens and the candidates'), and both count."""

        def hook(_module: Any, inputs: Any, output: Any) -> None:
            tensor = inputs[0] if use_input else output
            tensor.retain_grad()
            captured.setdefault((kind, index), []).append(tensor)

        return hook

    handles = []
    for index, layer in enumerate(layers):
        handles.append(layer.attention.output.dense.register_forward_hook(keep("heads", index, True)))
        handles.append(layer.intermediate.register_forward_hook(keep("ffn", index, False)))
    rng = np.random.default_rng(seed)
    pairs = data.training_pairs(batches * settings.batch_size, rng, negatives_per_positive=group - 1)
    loss_fn = listwise_loss(group)
    parameters = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    try:
        for start in range(0, len(pairs) - settings.batch_size + 1, settings.batch_size):
            batch = pairs[start : start + settings.batch_size]
            inputs = checkpoint.encode(
                [p.user_text for p in batch], [p.item_text for p in batch], settings.max_len
            )
            labels = torch.tensor([p.label for p in batch], dtype=torch.float32)
            model.zero_grad(set_to_none=True)
            captured.clear()
            loss_fn(model(**inputs), labels).backward()  # type: ignore[no-untyped-call]
            for index, layer in enumerate(layers):
                size = layer.attention.self.attention_head_size
                for heads in _taylor(captured[("heads", index)]):
                    per_head = heads.view(*heads.shape[:2], -1, size).sum(dim=(1, 3)).abs()
                    head_scores[index] += per_head.mean(0).numpy()
                for neurons in _taylor(captured[("ffn", index)]):
                    neuron_scores[index] += neurons.sum(1).abs().mean(0).numpy()
    finally:
        for handle in handles:
            handle.remove()
        for parameter, required in zip(model.parameters(), parameters, strict=True):
            parameter.requires_grad_(required)
        model.zero_grad(set_to_none=True)
    return head_scores, neuron_scores


def _taylor(activations: list[torch.Tensor]) -> list[torch.Tensor]:
    """activation * d(loss)/d(activation), elementwise: the first-order effect of removing it,
    as [sequences, tokens, features]. An activation no score depends on has no gradient and no
    effect (a prefix-shaped ranker's last layer on user tokens); every unit needs one that has."""
    effects = [_sequences((a * a.grad).detach()) for a in activations if a.grad is not None]
    if not effects:
        raise RuntimeError("no gradient reached a pruning candidate; is the encoder frozen?")
    return effects


def _sequences(tensor: torch.Tensor) -> torch.Tensor:
    """[..., tokens, features] as [sequences, tokens, features]: the prefix shape's candidates
    come as [users, candidates, tokens, features]."""
    return tensor.reshape(-1, *tensor.shape[-2:])


def kept(count: int, fraction: float) -> int:
    """Units left after removing ``fraction`` of ``count`` (at least one)."""
    return max(1, count - math.floor(count * fraction + 1e-9))


def prune(
    checkpoint: Checkpoint, data: Dataset, spec: PruneSpec, *, seed: int = 0
) -> tuple[Checkpoint, dict[str, float]]:
    """A pruned copy of ``checkpoint`` (the original is untouched and serves as its teacher)."""
    head_scores, neuron_scores = importance(checkpoint, data, seed=seed)
    pruned = copy.deepcopy(checkpoint.model)
    encoder: Any = pruned.encoder
    heads_per_layer, ffn_per_layer = {}, {}
    for index, layer in enumerate(encoder.encoder.layer):
        n_heads = kept(len(head_scores[index]), spec.heads)
        n_neurons = kept(len(neuron_scores[index]), spec.ffn)
        keep_heads = np.argsort(-head_scores[index], kind="stable")[:n_heads].tolist()
        keep_neurons = np.argsort(-neuron_scores[index], kind="stable")[:n_neurons].tolist()
        prune_layer(layer, keep_heads, keep_neurons)
        heads_per_layer[str(index)] = n_heads
        ffn_per_layer[str(index)] = n_neurons
    old = checkpoint.meta
    meta = CheckpointMeta(
        base=old.base,
        max_len=old.max_len,
        shape=old.shape,
        item_max_len=old.item_max_len,
        heads_per_layer=heads_per_layer,
        ffn_per_layer=ffn_per_layer,
        extra={**old.extra, "pruned": spec.to_dict()},
    )
    result = Checkpoint(pruned, checkpoint.tokenizer, meta)
    metrics: dict[str, float] = {
        "prune_heads_kept": float(sum(heads_per_layer.values())),
        "prune_ffn_kept": float(sum(ffn_per_layer.values())),
    }
    if spec.recovery_steps:
        recovered = train_against_teacher(
            result,
            checkpoint,
            data,
            steps=spec.recovery_steps,
            temperature=2.0,
            alpha=0.5,
            seed=seed,
            max_len=old.max_len,
        )
        metrics.update({f"recovery_{k}": v for k, v in recovered.items()})
    return result, metrics
