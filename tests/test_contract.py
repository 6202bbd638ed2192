import numpy as np
import pytest

from device.contract import (
    INCORRECT_MASK,
    WITH_MASK,
    WITHOUT_MASK,
    ModelCard,
    card_path,
    crop_face,
    dequantize,
    expand_box,
    load_card_for,
    normalize_label,
    quantize,
)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("with_mask", WITH_MASK), ("WithMask", WITH_MASK), ("mask", WITH_MASK), ("Masked", WITH_MASK),
        ("without_mask", WITHOUT_MASK), ("no_mask", WITHOUT_MASK), ("NoMask", WITHOUT_MASK),
        ("mask_weared_incorrect", INCORRECT_MASK), ("incorrect_mask", INCORRECT_MASK),
        ("with_incorrect_mask", INCORRECT_MASK), ("cats", None), ("", None),
    ],
)
def test_normalize_label(name, expected):
    assert normalize_label(name) == expected


def test_expand_box_is_square_grown_and_clipped():
    assert expand_box((40, 40, 60, 80), 0.25, 640, 480) == (20, 30, 80, 90)
    x0, y0, x1, y1 = expand_box((0, 0, 100, 100), 0.5, 120, 110)
    assert (x0, y0) == (0, 0) and (x1, y1) == (120, 110)


def test_crop_face_shape_and_content():
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 90:110] = 255
    crop = crop_face(img, (90, 40, 110, 60), size=32, margin=0.0)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
    assert crop.min() == 255


def test_quantize_roundtrip_int8_pixel_contract():
    # int8 model with Rescaling inside: scale 1, zero point -128 maps pixel p to p - 128
    px = np.array([0, 1, 128, 255], np.uint8)
    q = quantize(px, 1.0, -128, np.int8)
    assert q.tolist() == [-128, -127, 0, 127]
    assert dequantize(q, 1.0, -128).tolist() == [0, 1, 128, 255]
    assert quantize(np.array([1e6, -1e6]), 0.5, 0, np.int8).tolist() == [127, -128]


def test_card_roundtrip_and_errors(tmp_path):
    model = tmp_path / "m.tflite"
    with pytest.raises(FileNotFoundError, match="m.json"):
        load_card_for(model)
    ModelCard(threshold=0.4, input_size=96).save(card_path(model))
    card = load_card_for(model)
    assert card.threshold == 0.4 and card.input_size == 96 and card.labels == [WITH_MASK, WITHOUT_MASK]
    card_path(model).write_text('{"labels": ["a", "b"], "alert_label": "without_mask"}')
    with pytest.raises(ValueError, match="alert_label"):
        load_card_for(model)
    card_path(model).write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_card_for(model)


def test_cv_view_copies_only_what_opencv_rejects():
    import cv2

    from device.contract import cv_view, resize_face

    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = frame[10:90, 20:100]  # strided rows: OpenCV reads it as a sub-matrix
    assert cv_view(crop) is crop and cv_view(frame) is frame
    for bad in (frame[:, ::-1], frame[::-1], frame[..., ::-1], frame[::2, ::2]):
        view = cv_view(bad)
        assert view.flags.c_contiguous and not np.shares_memory(view, frame)
        assert np.array_equal(view, bad)
    # Same pixels whichever way the crop is handed over.
    ref = cv2.resize(np.ascontiguousarray(crop), (32, 32), interpolation=cv2.INTER_AREA)
    assert np.array_equal(resize_face(crop, 32), ref)
