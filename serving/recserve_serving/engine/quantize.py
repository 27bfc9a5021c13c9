"""INT8 quantization of a fused ONNX ranker with ONNX Runtime.

Dynamic quantization computes activation scales per batch at run time: no calibration
data, and good accuracy on a transformer whose activations vary a lot between inputs.
Weights are quantized per output channel, which keeps the score drift of the scoring head
far below per-tensor scales (measured in notes/cpu-inference.md).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from recserve_serving.errors import EngineError


def quantize_dynamic_int8(source: Path, target: Path, *, per_channel: bool = True) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # Without it, the fused graph fails with "Unable to find data type for weight_name".
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    except Exception as error:  # ORT's quantizer raises bare exceptions on unsupported graphs
        raise EngineError(f"INT8 quantization of {source.name} failed: {error}") from error
    return target
