"""Export a checkpoint's ranker (encoder + head) to ONNX, then fuse it with ORT's BERT optimizer.

The whole ranker is exported, not only the encoder: a cross-shaped engine is one graph from
token ids to scores, a prefix-shaped one two (the user pass, and the candidate pass that reads
its states). ``dynamo=False`` (TorchScript export) because the dynamo exporter does not
keep MiniLM's batch and sequence axes symbolic as reliably; eager attention is what it
traces cleanly. Opset 17 is the newest the ORT transformer fusions are tested against.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from recserve_serving.errors import EngineError
from recserve_serving.model import Checkpoint
from recserve_serving.prefix import CandidateGraph, UserGraph, state_names, user_states

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "scores"


def _export(
    module: torch.nn.Module,
    dummy: tuple[torch.Tensor, ...],
    path: Path,
    axes: dict[str, dict[int, str]],
    outputs: list[str],
) -> None:
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter warns about HF's mask arithmetic and index ops; the
        # resulting graph is checked against torch by the gate, so the warnings add nothing.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            dummy,
            str(path),
            input_names=[name for name in axes if name not in outputs],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_onnx(checkpoint: Checkpoint, path: Path) -> Path:
    """A cross-shaped ranker as one graph from token ids to one score per pair."""
    dummy = tuple(torch.ones(2, 16, dtype=torch.int64) for _ in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    _export(checkpoint.model.eval(), dummy, path, {**axes, OUTPUT_NAME: {0: "batch"}}, [OUTPUT_NAME])
    return path


def export_prefix_onnx(checkpoint: Checkpoint, user_path: Path, candidate_path: Path) -> tuple[Path, Path]:
    """A prefix-shaped ranker as two graphs: the user pass (token ids -> per-layer keys and
    values) and the candidate pass (those states + candidates' token ids -> scores), so an
    engine runs a request's user once and any number of candidate chunks against it. Dummy
    sizes differ per axis so that no axis is traced as another."""
    model = checkpoint.model.eval()
    encoder: Any = model.encoder
    names = state_names(len(encoder.encoder.layer))
    state_axes = {name: {0: "users", 2: "user_length"} for name in names}
    users = (torch.ones(2, 10, dtype=torch.int64), torch.ones(2, 10, dtype=torch.int64))
    user_axes = {"user_ids": {0: "users", 1: "user_length"}, "user_mask": {0: "users", 1: "user_length"}}
    _export(UserGraph(encoder), users, user_path, {**user_axes, **state_axes}, names)
    with torch.inference_mode():
        states = user_states(encoder, *users)
    candidates = (
        users[1],
        torch.ones(2, 3, 6, dtype=torch.int64),
        torch.ones(2, 3, 6, dtype=torch.int64),
        torch.arange(5, dtype=torch.int64),
        *states,
    )
    candidate_axes = {
        "user_mask": {0: "users", 1: "user_length"},
        "item_ids": {0: "users", 1: "candidates", 2: "item_length"},
        "item_mask": {0: "users", 1: "candidates", 2: "item_length"},
        "pair_slots": {0: "pairs"},
        **state_axes,
        OUTPUT_NAME: {0: "pairs"},
    }
    _export(CandidateGraph(encoder, model.head), candidates, candidate_path, candidate_axes, [OUTPUT_NAME])
    return user_path, candidate_path


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
