"""Which layers of an int8 model stay float32: those int8 gets badly wrong.

Why: MobileNetV2's first depthwise convolution (``expanded_conv_depthwise``) is the textbook
case of a layer that int8 handles badly: its 32 channels' outputs span very different ranges
and share one int8 scale, so in our classifier its int8 output was off by 1.4 quantization steps
(RMSE) where every other layer stayed under 0.75. That one layer made most of the int8 model's
disagreement with float32: on the shared data's test faces the alert score moved by up to 0.40
(mean 0.0071) with it in int8 and by up to 0.16 (mean 0.0040) with it in float32 (README,
"int8 and float32"); the model stays int8 in and out, every other layer int8, and XNNPACK
runs the float layer between a dequantize and a quantize at no measurable cost.

How: TensorFlow's own quantization debugger (``tf.lite.experimental.QuantizationDebugger``,
the tool its "inspecting quantization errors" guide uses for exactly this) runs the calibrated
model on a few real images and reports, per layer, the error of the int8 output against the
float one; a layer whose RMSE is more than ``max_error_steps`` of its quantization step is
"denylisted", and the calibrated model is quantized again with those layers left float.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: An int8 layer whose output RMSE exceeds this many of its quantization steps stays float32.
#: One step is what rounding alone costs at most; the rest of our classifier's layers measure
#: 0.2-0.75 steps.
MAX_ERROR_STEPS = 1.0


@dataclass(frozen=True)
class LayerError:
    """One quantized tensor's error against float: RMSE in units of its quantization step."""

    tensor: str  # the TFLite tensor name (the fused ops' names, ';'-separated)
    op: str
    steps: float

    @property
    def layer(self) -> str:
        """The Keras layer it comes from, for people: ``expanded_conv_depthwise``."""
        parts = [p for p in self.tensor.split(";")[0].split("/") if p]
        at = next((i + 1 for i, p in enumerate(parts) if p.startswith("backbone")), 1)
        name = parts[min(at, len(parts) - 1)] if parts else self.tensor
        return re.sub(r"_(relu|BN)$", "", re.sub(r"_\d+$", "", name))

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "op": self.op, "rmse_steps": round(self.steps, 3), "tensor": self.tensor}


def layer_errors(statistics_csv: str) -> list[LayerError]:
    """The debugger's layer statistics (its CSV dump) -> errors, worst first."""
    out = []
    for row in csv.DictReader(io.StringIO(statistics_csv)):
        scale = float(row.get("scale") or 0.0)
        mse = float(row.get("mean_squared_error") or "nan")
        if scale > 0 and math.isfinite(mse):
            out.append(LayerError(row["tensor_name"], row.get("op_name", ""), math.sqrt(mse) / scale))
    return sorted(out, key=lambda e: -e.steps)


def check_max_error(max_error_steps: float) -> None:
    """ValueError unless ``max_error_steps`` is a usable ``--max-int8-error`` (> 0; inf allowed)."""
    if not max_error_steps > 0:
        raise ValueError(f"--max-int8-error must be > 0 (inf keeps every layer int8), got {max_error_steps!r}")


def too_noisy(errors: list[LayerError], max_error_steps: float) -> list[LayerError]:
    """The layers to keep float32: error above ``max_error_steps`` (``inf``: none)."""
    check_max_error(max_error_steps)
    return [e for e in errors if e.steps > max_error_steps]


def quantize_keeping_float(converter: Any, check_images: np.ndarray, io_type: Any,
                           max_error_steps: float = MAX_ERROR_STEPS) -> tuple[bytes, list[LayerError]]:
    """A full-integer model from ``converter`` (set up for int8, with its representative
    dataset) whose too-noisy layers stay float32, and those layers.

    ``check_images``: a few real images (float32 NHWC) the errors are measured on.
    """
    import tensorflow as tf

    # Not a public module: the function the debugger and TFLiteConverter themselves call to
    # quantize a calibrated model, the only way to pass denylisted nodes with int8 input and
    # output. TensorFlow is pinned (2.21.*) and tests/test_convert_float_layers.py fails if it moves.
    from tensorflow.lite.python import convert as tf_convert

    images = np.asarray(check_images, np.float32)
    if not len(images):
        raise ValueError("no images to measure the int8 layers' error on")

    def dataset():
        for i in range(len(images)):
            yield [images[i : i + 1]]

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    keep = too_noisy(layer_errors(dump.getvalue()), max_error_steps)
    # Quantized again as TFLiteConverter itself does it (lite.py, ``_quantize``), the noisy layers
    # denylisted: the MLIR quantizer also gives the model its int8 / uint8 input and output.
    model = tf_convert.mlir_quantize(
        debugger.calibrated_model,
        converter._experimental_disable_per_channel,
        input_data_type=io_type,
        output_data_type=io_type,
        disable_per_channel_for_dense_layers=converter._experimental_disable_per_channel_quantization_for_dense_layers,
        denylisted_nodes=[e.tensor for e in keep],
    )
    return model, keep
