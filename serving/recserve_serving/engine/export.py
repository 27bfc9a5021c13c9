"""Export a checkpoint's ranker (encoder + head) to ONNX, then fuse it with ORT's BERT optimizer.

The whole ranker is exported, not only the encoder, so an engine is one graph from token
ids to scores. ``dynamo=False`` (TorchScript export) because the dynamo exporter does not
keep MiniLM's batch and sequence axes symbolic as reliably; eager attention is what it
traces cleanly. Opset 17 is the newest the ORT transformer fusions are tested against.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from recserve_serving.errors import EngineError
from recserve_serving.model import Checkpoint

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "scores"
PREFIX_AXES = {
    "user_ids": {0: "users", 1: "user_length"},
    "user_mask": {0: "users", 1: "user_length"},
    "item_ids": {0: "users", 1: "candidates", 2: "item_length"},
    "item_mask": {0: "users", 1: "candidates", 2: "item_length"},
    "pair_slots": {0: "pairs"},
}


def _dummy_inputs(shape: str) -> tuple[tuple[torch.Tensor, ...], dict[str, dict[int, str]]]:
    """Trace inputs and their symbolic axes; sizes differ per axis so none is traced as another."""
    if shape == "prefix":
        ones = torch.ones
        dummy = (
            ones(2, 10, dtype=torch.int64),
            ones(2, 10, dtype=torch.int64),
            ones(2, 3, 6, dtype=torch.int64),
            ones(2, 3, 6, dtype=torch.int64),
            torch.arange(5, dtype=torch.int64),
        )
        return dummy, {**PREFIX_AXES, OUTPUT_NAME: {0: "pairs"}}
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    return tuple(torch.ones(2, 16, dtype=torch.int64) for _ in INPUT_NAMES), {
        **axes,
        OUTPUT_NAME: {0: "batch"},
    }


def export_onnx(checkpoint: Checkpoint, path: Path) -> Path:
    """The ranker as one graph from the shape's token inputs to one score per pair. A prefix
    ranker's graph encodes each distinct user of the call once, inside the graph."""
    model = checkpoint.model.eval()
    dummy, axes = _dummy_inputs(checkpoint.meta.shape)
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter warns about HF's mask arithmetic and index ops; the
        # resulting graph is checked against torch by the gate, so the warnings add nothing.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            dummy,
            str(path),
            input_names=[name for name in axes if name != OUTPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """ORT's optimizer and quantizer log every step, partly on the root logger, and advise
    pre-processing at WARNING (not needed: the fused graph already has its shapes)."""
    loggers = [
        logging.getLogger(),
        *(logging.getLogger(n) for n in ("onnxruntime", "fusion_base", "onnx_model")),
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def fuse(source: Path, target: Path, *, num_heads: int, hidden_size: int) -> Path:
    """ORT transformer fusions (attention, skip-layernorm, bias-gelu) into ``target``.

    ``hidden_size`` is the attention width (heads x head size), which differs from the
    model width after head pruning; the optimizer cannot infer it because HF reshapes with
    -1, so it is passed explicitly (pruning keeps the same head count in every layer).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with quiet_onnxruntime_tools():
            optimized = optimize_model(
                str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1
            )
    except Exception as error:  # the optimizer raises assorted errors on graphs it cannot parse
        raise EngineError(f"ONNX Runtime graph fusion failed on {source.name}: {error}") from error
    optimized.save_model_to_file(str(target))
    return target
