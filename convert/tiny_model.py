"""A tiny random-weight int8 mask classifier that follows the contract, for plumbing runs.

The daemon tests and ``make bench-device`` (when no trained model exists) need a classifier file
with a model card: raw RGB in, softmax over the binary labels out, int8 in and out. Its weights
are random, so it says nothing about accuracy; it costs about a second to build (TensorFlow:
workstation only; the Pi-like test run reuses the file the workstation run cached).

``python -m convert.tiny_model OUT.tflite`` builds one (the card lands beside it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def build_tiny_classifier(path: Path, size: int = 64) -> Path:
    """Write the tiny int8 model to ``path`` and its card beside it; returns ``path``."""
    import keras

    from convert.tflite import to_tflite
    from device.contract import BINARY_LABELS, ModelCard

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(BINARY_LABELS), activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    data = to_tflite(model, "int8", rng.integers(0, 256, (16, size, size, 3)).astype(np.float32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    ModelCard(name="tiny", backbone="tiny_cnn", input_size=size, quantization="int8").save(path.with_suffix(".json"))
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m convert.tiny_model OUT.tflite", file=sys.stderr)
        return 2
    print(build_tiny_classifier(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
