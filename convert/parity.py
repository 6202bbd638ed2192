"""Does a converted .tflite model still say what its Keras model says?

The TFLite side runs through :class:`device.classifier.MaskClassifier`, the device's own code
path (input quantization, batching, output dequantization), so a mismatch found here is one the
Pi would have. Labels are decided the daemon's way (alert class at or above the card's
threshold), so "agreement" means "the same alert decisions".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.bench import EVAL_BATCH
from device.decision import decide
from device.metrics import agreement, classification_metrics

log = logging.getLogger(__name__)


@dataclass
class Parity:
    """Parity numbers of one converted model against its Keras source on labelled images."""

    split: str
    n_images: int
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    accuracy_keras: float
    accuracy_tflite: float
    accuracy_delta_points: float
    alert_f1_keras: float
    alert_f1_tflite: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_metrics(
    keras_probs: np.ndarray,
    tflite_probs: np.ndarray,
    y_true: np.ndarray,
    alert_index: int | Sequence[int],
    threshold: float,
    split: str = "val",
) -> Parity:
    """Compare two models' probabilities (N, classes) on the same labelled images.

    ``alert_index``: the alert label(s) (:func:`device.decision.decide`); the F1 reported is that
    of the first one (``without_mask``)."""
    keras_probs = np.asarray(keras_probs, dtype=np.float32)
    tflite_probs = np.asarray(tflite_probs, dtype=np.float32)
    if keras_probs.shape != tflite_probs.shape:
        raise ValueError(f"Keras and TFLite outputs differ in shape: {keras_probs.shape} vs {tflite_probs.shape}")
    if len(keras_probs) == 0:
        raise ValueError("parity check needs at least one image")
    pk = decide(keras_probs, alert_index, threshold)
    pt = decide(tflite_probs, alert_index, threshold)
    first = alert_index if isinstance(alert_index, (int, np.integer)) else list(alert_index)[0]
    mk = classification_metrics(y_true, pk, first)
    mt = classification_metrics(y_true, pt, first)
    diff = np.abs(keras_probs - tflite_probs)
    return Parity(
        split=split,
        n_images=int(len(keras_probs)),
        agreement=agreement(pk, pt),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        accuracy_keras=mk["accuracy"],
        accuracy_tflite=mt["accuracy"],
        accuracy_delta_points=100.0 * (mt["accuracy"] - mk["accuracy"]),
        alert_f1_keras=mk["f1"],
        alert_f1_tflite=mt["f1"],
    )


def keras_probabilities(model: Any, x: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Inference-mode probabilities of a Keras model on raw uint8 pixels (augmentation off)."""
    import keras

    x = np.asarray(x, dtype=np.float32)
    out = [keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)


def tflite_probabilities(path: Path, x: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Probabilities of a .tflite model (with its card beside it) through the device classifier."""
    from device.classifier import MaskClassifier

    clf = MaskClassifier(path, num_threads=num_threads)
    out = [clf.predict_crops(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
    return np.concatenate(out).astype(np.float32)
