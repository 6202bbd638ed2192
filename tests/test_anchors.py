"""SSD anchors for BlazeFace: count, order and values must match what the models were trained with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from device.detectors.anchors import FULL_RANGE, SHORT_RANGE, AnchorOptions, generate_anchors


def reference_anchors(opts: AnchorOptions) -> np.ndarray:
    """A plain-loop transcription of MediaPipe's SsdAnchorsCalculator (fixed-size anchors)."""
    out = []
    layer = 0
    n = len(opts.strides)
    while layer < n:
        last = layer
        per_cell = 0
        while last < n and opts.strides[last] == opts.strides[layer]:
            per_cell += 1  # aspect ratio 1.0
            if opts.interpolated_scale_aspect_ratio > 0:
                per_cell += 1
            last += 1
        fm = math.ceil(opts.input_size / opts.strides[layer])
        for y in range(fm):
            for x in range(fm):
                for _ in range(per_cell):
                    out.append(((x + opts.anchor_offset_x) / fm, (y + opts.anchor_offset_y) / fm))
        layer = last
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize(("opts", "count"), [(SHORT_RANGE, 896), (FULL_RANGE, 2304)])
def test_anchor_count_and_shape(opts, count):
    a = generate_anchors(opts)
    assert a.shape == (count, 2)
    assert a.dtype == np.float32
    assert (a > 0).all() and (a < 1).all()


@pytest.mark.parametrize("opts", [SHORT_RANGE, FULL_RANGE, AnchorOptions(256, (16, 32, 32, 32))])
def test_anchors_equal_the_loop_transcription(opts):
    np.testing.assert_allclose(generate_anchors(opts), reference_anchors(opts), atol=1e-7)


def test_short_range_known_anchors():
    a = generate_anchors(SHORT_RANGE)
    # 16x16 map, two anchors per cell, x varies fastest.
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16])
    np.testing.assert_allclose(a[511], [15.5 / 16, 15.5 / 16])
    # Then the three stride-16 layers share an 8x8 map: six anchors per cell.
    np.testing.assert_allclose(a[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
    np.testing.assert_allclose(a[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_full_range_known_anchors():
    a = generate_anchors(FULL_RANGE)
    np.testing.assert_allclose(a[0], [0.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[1], [1.5 / 48, 0.5 / 48])
    np.testing.assert_allclose(a[48], [0.5 / 48, 1.5 / 48])
    np.testing.assert_allclose(a[-1], [47.5 / 48, 47.5 / 48])
    assert len(np.unique(a, axis=0)) == 2304  # one anchor per cell
