"""The mask classifier as the device runs it: a .tflite model plus its model card.

The card decides input size, crop margin and label order, and the interpreter's own tensor
details decide quantization, so the same code runs float32, int8 and uint8 models.
All faces of a frame go through one ``invoke`` when the model's batch dimension can be
resized; models that cannot be resized fall back to one invoke per face.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from device import runtime
from device.contract import ModelCard, crop_face, dequantize, load_card_for, quantize, sha256_file


class MaskClassifier:
    def __init__(self, model_path: Path, num_threads: int | None = None, card: ModelCard | None = None):
        self.path = Path(model_path)
        self.card = card if card is not None else load_card_for(self.path)
        self.interpreter, self.backend = runtime.load_interpreter(self.path, num_threads)
        inp = runtime.input_info(self.interpreter)
        out = runtime.output_info(self.interpreter)
        size = self.card.input_size
        if len(inp.shape) != 4 or tuple(inp.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"{self.path}: input shape {list(inp.shape)} does not match its card "
                f"(input_size {size} -> [N, {size}, {size}, 3])"
            )
        if out.shape[-1] != len(self.card.labels) and not (out.shape[-1] == 1 and len(self.card.labels) == 2):
            raise ValueError(
                f"{self.path}: output has {out.shape[-1]} values but its card lists {len(self.card.labels)} labels"
            )
        self._batch = int(inp.shape[0])
        self._resizable = True
        self.alert_index = self.card.labels.index(self.card.alert_label)
        #: The card's alert labels (their summed probability is what its threshold applies to).
        self.alert_indices = [self.card.labels.index(lb) for lb in self.card.alerts]
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    @property
    def info(self) -> dict:
        """What an event says about the model that produced it."""
        return {
            "name": self.card.name,
            "sha256": self.sha256,
            "quantization": self.card.quantization,
            "threshold": self.card.threshold,
        }

    def _set_batch(self, n: int) -> bool:
        if n == self._batch:
            return True
        if not self._resizable:
            return False
        inp = runtime.input_info(self.interpreter)
        try:
            self.interpreter.resize_tensor_input(inp.index, [n, *inp.shape[1:]], strict=False)
            self.interpreter.allocate_tensors()
        except Exception:  # some converted models have a fixed batch: fall back to one at a time
            self._resizable = False
            self.interpreter.resize_tensor_input(inp.index, [self._batch, *inp.shape[1:]], strict=False)
            self.interpreter.allocate_tensors()
            return False
        self._batch = n
        return True

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        inp = runtime.input_info(self.interpreter)
        if inp.quantized:
            x = quantize(batch, inp.scale, inp.zero_point, inp.dtype)
        else:
            x = batch.astype(inp.dtype, copy=False)
        self.interpreter.set_tensor(inp.index, x)
        self.interpreter.invoke()
        out = runtime.output_info(self.interpreter)
        y = self.interpreter.get_tensor(out.index)
        if out.quantized:
            y = dequantize(y, out.scale, out.zero_point)
        return y.astype(np.float32, copy=False)

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, len(labels)) for face crops (N, S, S, 3) uint8 RGB."""
        crops = np.asarray(crops)
        n = len(crops)
        if n == 0:
            return np.zeros((0, len(self.card.labels)), np.float32)
        if self._set_batch(n):
            probs = self._invoke(crops)
        else:
            probs = np.concatenate([self._invoke(crops[i : i + 1]) for i in range(n)])
        if probs.shape[-1] == 1:  # single sigmoid output = P(labels[1])
            p = probs[:, 0]
            probs = np.stack([1.0 - p, p], axis=1)
        return probs

    def crops(self, frame_rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        size, margin = self.card.input_size, self.card.margin
        if not len(boxes):
            return np.zeros((0, size, size, 3), np.uint8)
        return np.stack([crop_face(frame_rgb, tuple(b), size, margin) for b in boxes])

    def classify(self, frame_rgb: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """Probabilities for each face box in a frame, crops made by the shared contract."""
        return self.predict_crops(self.crops(frame_rgb, boxes))

    def alert_scores(self, probs: np.ndarray) -> np.ndarray:
        """P(alert) per face (the card's alert labels summed): the number the tracker smooths and thresholds."""
        from device.decision import alert_score

        return alert_score(probs, self.alert_indices)
