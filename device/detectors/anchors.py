"""SSD anchor centres for the BlazeFace models, as MediaPipe's SsdAnchorsCalculator makes them.

BlazeFace predicts every box relative to a fixed anchor, so the decoder needs exactly the
anchor list (count and order) that the model was trained with. The face graphs use
``fixed_anchor_size: true`` (every anchor is 1x1 in normalized units) and a single aspect
ratio, so an anchor reduces to its centre; consecutive layers with the same stride share one
feature map and stack their anchors per cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnchorOptions:
    """The options of MediaPipe's face_detection_{short,full}_range graphs that shape anchors."""

    input_size: int
    strides: tuple[int, ...]
    #: > 0 adds a second anchor per layer and cell (MediaPipe's interpolated-scale anchor).
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    num_aspect_ratios: int = 1

    @property
    def anchors_per_layer_cell(self) -> int:
        return self.num_aspect_ratios + (1 if self.interpolated_scale_aspect_ratio > 0.0 else 0)


#: face_detection_short_range: 128x128 input, 16x16 cells x 2 + 8x8 cells x 6 = 896 anchors.
SHORT_RANGE = AnchorOptions(input_size=128, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0)
#: face_detection_full_range: 192x192 input, one layer of stride 4: 48x48 cells x 1 = 2304 anchors.
FULL_RANGE = AnchorOptions(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0)


def generate_anchors(opts: AnchorOptions) -> np.ndarray:
    """Anchor centres, shape (N, 2) float32 as (x, y) in 0..1, in the model's output order.

    Order is row-major over each feature map (y outer, x inner) with the anchors of one cell
    adjacent, feature maps in stride order: the same as the C++ calculator.
    """
    chunks = []
    i = 0
    strides = opts.strides
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_cell = (j - i) * opts.anchors_per_layer_cell
        rows = math.ceil(opts.input_size / strides[i])
        cols = math.ceil(opts.input_size / strides[i])
        ys = (np.arange(rows, dtype=np.float64) + opts.anchor_offset_y) / rows
        xs = (np.arange(cols, dtype=np.float64) + opts.anchor_offset_x) / cols
        gx, gy = np.meshgrid(xs, ys)  # (rows, cols): y outer, x inner once flattened
        centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
        chunks.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(chunks).astype(np.float32)
