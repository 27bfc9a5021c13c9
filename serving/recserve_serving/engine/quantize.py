"""INT8 quantization of a fused ONNX ranker with ONNX Runtime.

Dynamic quantization computes activation scales per batch at run time: no calibration
data, every MatMul and the fused attention run as integer kernels, and it is the fastest
INT8 path on CPU. Static quantization fixes activation scales from calibration batches
drawn from training pairs; here it covers the MatMuls (ORT has no static kernel for the
fused Attention op) in QDQ form with symmetric activations, which keeps scores closest to
fp32 and is the form TensorRT consumes. Weights are quantized per output channel, which
keeps the score drift far below per-tensor scales (measured in notes/cpu-inference.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from recserve_serving.data import Dataset
from recserve_serving.engine.export import quiet_onnxruntime_tools
from recserve_serving.errors import EngineError
from recserve_serving.model import MODEL_INPUTS, Checkpoint
from recserve_serving.tokens import encode_pairs

CALIBRATION_BATCH = 32


def quantize_dynamic_int8(
    source: Path, target: Path, *, per_channel: bool = True, weights_only: bool = False
) -> Path:
    """``weights_only`` leaves activation-by-activation MatMuls in fp32: a prefix-shaped graph
    writes its attention as plain MatMuls (no fused Attention op to quantize as a whole), and
    dynamically quantized attention products cost accuracy for little time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with quiet_onnxruntime_tools():
            quantize_dynamic(
                str(source),
                str(target),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                # Without it, the fused graph fails with "Unable to find data type for weight_name".
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": weights_only},
            )
    except Exception as error:  # ORT's quantizer raises bare exceptions on unsupported graphs
        raise EngineError(f"INT8 quantization of {source.name} failed: {error}") from error
    return target


def calibration_batches(
    checkpoint: Checkpoint, data: Dataset, *, samples: int, max_len: int, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Tokenized training pairs (never evaluation users' held-out items) in batches of 32."""
    pairs = data.training_pairs(samples, np.random.default_rng(seed + 7919), negatives_per_positive=3)
    for start in range(0, len(pairs), CALIBRATION_BATCH):
        batch = pairs[start : start + CALIBRATION_BATCH]
        meta = checkpoint.meta
        encoded = encode_pairs(
            checkpoint.tokenizer,
            meta.shape,
            [p.user_text for p in batch],
            [p.item_text for p in batch],
            max_len,
            meta.item_max_len,
        )
        yield {k: np.asarray(encoded[k], dtype=np.int64) for k in MODEL_INPUTS if k in encoded}


def weight_matmuls(path: Path) -> list[str]:
    """MatMul nodes with a constant (weight) operand.

    Attention's Q.K^T and probabilities.V are activation-by-activation products whose
    ranges vary per input; quantizing them with fixed scales costs far more accuracy than
    it saves time, so static quantization covers weight MatMuls only.
    """
    model = onnx.load(str(path), load_external_data=False)
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [
        n.name for n in model.graph.node if n.op_type == "MatMul" and any(i in constants for i in n.input)
    ]


def quantize_static_int8(
    source: Path, target: Path, batches: Iterable[dict[str, np.ndarray]], *, per_channel: bool = True
) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime has no types
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    try:
        with quiet_onnxruntime_tools():
            quantize_static(
                str(source),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=weight_matmuls(source),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "ActivationSymmetric": True},
            )
    except Exception as error:  # calibration and QDQ insertion raise assorted exception types
        raise EngineError(f"static INT8 quantization of {source.name} failed: {error}") from error
    return target
