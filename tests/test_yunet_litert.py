"""YuNet on LiteRT: decoding, NMS and frame mapping on hand-made tensors with known answers, and
the converted model against OpenCV's own FaceDetectorYN on the real photos."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest

from device.detectors import make_detector
from device.detectors import model_files as fetch
from device.detectors.blazeface import iou
from device.detectors.yunet import YuNetDetector
from device.detectors.yunet_litert import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_QUANTIZATION,
    OUTPUT_NAMES,
    YuNetCard,
    YuNetLiteRTDetector,
    check_input_size,
    converted_model_name,
    decode,
    default_model_path,
    fit_params,
    nms,
    rows_to_frame,
)
from tests.test_blazeface import MEDIA_FACES, check_media_faces, read_rgb

# --------------------------------------------------------------------------------------------
# Decoding: a 64x64 input has 8x8 cells at stride 8, 4x4 at 16, 2x2 at 32
# --------------------------------------------------------------------------------------------


def blank_outputs(width: int = 64, height: int = 64) -> dict[str, np.ndarray]:
    out = {}
    for name in OUTPUT_NAMES:
        head, stride = name.split("_")
        n = (width // int(stride)) * (height // int(stride))
        out[name] = np.zeros((1, n, {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}[head]), np.float32)
    return out


def test_decode_one_prior_at_a_known_cell():
    raw = blank_outputs()
    cell = 1 * 4 + 2  # stride 16: row 1, column 2
    raw["cls_16"][0, cell] = 0.81
    raw["obj_16"][0, cell] = 1.0
    raw["bbox_16"][0, cell] = [0.5, 0.25, math.log(2), math.log(3)]
    raw["kps_16"][0, cell] = [0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1]
    rows = decode(raw, 64, 64, score_threshold=0.7)
    assert rows.shape == (1, 15) and rows.dtype == np.float32
    # centre ((2 + 0.5) * 16, (1 + 0.25) * 16) = (40, 20); size (2 * 16, 3 * 16) = (32, 48)
    np.testing.assert_allclose(rows[0, :4], [24, -4, 32, 48], atol=1e-4)
    # landmarks: (cell + offset) * stride
    np.testing.assert_allclose(rows[0, 4:14], [32, 16, 48, 16, 40, 24, 32, 32, 48, 32], atol=1e-4)
    assert rows[0, 14] == pytest.approx(0.9)  # sqrt(0.81 * 1.0)


def test_decode_clamps_scores_thresholds_and_keeps_opencvs_order():
    raw = blank_outputs()
    raw["cls_32"][0, 3] = 1.3  # clamped to 1: sqrt(1 * 0.64) = 0.8; cell row 1, column 1
    raw["obj_32"][0, 3] = 0.64
    raw["cls_8"][0, 9] = 0.9  # row 1, column 1 at stride 8
    raw["obj_8"][0, 9] = 0.9
    raw["cls_8"][0, 0] = 0.5  # sqrt(0.25) = 0.5: below the threshold
    raw["obj_8"][0, 0] = 0.5
    raw["cls_16"][0, 0] = 1.0  # a negative score clamps to 0
    raw["obj_16"][0, 0] = -2.0
    rows = decode(raw, 64, 64, score_threshold=0.7)
    assert rows[:, 14] == pytest.approx([0.9, 0.8])  # stride 8 before stride 32, as OpenCV
    np.testing.assert_allclose(rows[0, :4], [4, 4, 8, 8])  # exp(0) * 8 wide, centred on (8, 8)
    np.testing.assert_allclose(rows[1, :4], [16, 16, 32, 32])
    assert len(decode(raw, 64, 64, score_threshold=0.95)) == 0
    assert decode(blank_outputs(), 64, 64, 0.5).shape == (0, 15)


def test_decode_non_square_grid_is_row_major():
    raw = blank_outputs(96, 64)  # stride 32: 3 columns x 2 rows
    raw["cls_32"][0, 5] = raw["obj_32"][0, 5] = 1.0  # last cell: row 1, column 2
    rows = decode(raw, 96, 64, 0.5)
    np.testing.assert_allclose(rows[0, :4], [48, 16, 32, 32])  # centre (2 * 32, 1 * 32)


def test_decode_rejects_outputs_of_another_size():
    raw = blank_outputs()
    raw["kps_8"] = np.zeros((1, 63, 10), np.float32)
    with pytest.raises(ValueError, match="stride 8.*64x64 input has 64"):
        decode(raw, 64, 64, 0.5)


# --------------------------------------------------------------------------------------------
# NMS: OpenCV's NMSBoxes on integer boxes
# --------------------------------------------------------------------------------------------


def row(x, y, w, h, score):
    return [x, y, w, h] + [0.0] * 10 + [score]


def test_nms_keeps_the_best_of_overlapping_faces_best_first():
    rows = np.array([row(10, 10, 100, 100, 0.8),  # IoU 0.68 with the first: suppressed
                     row(200, 200, 50, 50, 0.75),
                     row(0, 0, 100, 100, 0.9)], np.float32)
    kept = nms(rows, 0.7, 0.3)
    assert kept[:, 14] == pytest.approx([0.9, 0.75])
    assert len(nms(rows, 0.7, 0.7)) == 3  # 0.68 is not above 0.7


def test_nms_truncates_boxes_to_integers_as_opencv():
    # As floats these overlap by 0.49, as OpenCV's integer rects (0,0,2,2) and (1,0,2,2) by 0.33.
    rows = np.array([row(0, 0, 2.9, 2.9, 0.9), row(1, 0, 2.9, 2.9, 0.8)], np.float32)
    assert len(nms(rows, 0.5, 0.4)) == 2
    assert len(nms(rows, 0.5, 0.3)) == 1


def test_nms_passes_a_single_face_through():
    one = np.array([row(1.5, 2.5, 3, 4, 0.71)], np.float32)
    np.testing.assert_array_equal(nms(one, 0.7, 0.3), one)
    assert nms(np.zeros((0, 15), np.float32), 0.7, 0.3).shape == (0, 15)


# --------------------------------------------------------------------------------------------
# Frame <-> model input
# --------------------------------------------------------------------------------------------


def test_fit_of_the_models_own_size_is_identity():
    fit = fit_params(640, 480, 640, 480)
    assert fit.identity and fit.scale_x == fit.scale_y == 1.0


def test_fit_round_trip_and_rows_to_frame():
    fit = fit_params(1280, 720, 640, 480)  # halved to 640x360, black below
    assert (fit.new_width, fit.new_height) == (640, 360) and not fit.identity
    pts = np.random.default_rng(0).uniform(0, 1280, size=(20, 2)).astype(np.float32)
    np.testing.assert_allclose(fit.to_frame(fit.to_input(pts)), pts, rtol=1e-6)
    np.testing.assert_allclose(fit.to_frame(np.array([[320, 180]])), [[640, 360]])
    rows = np.array([[10, 20, 30, 40] + list(range(10)) + [0.9]], np.float32)
    out = rows_to_frame(rows, fit)
    np.testing.assert_allclose(out[0, :14], rows[0, :14] * 2)
    assert out[0, 14] == pytest.approx(0.9)
    up = fit_params(320, 240, 640, 480)  # smaller frames are scaled up
    assert (up.new_width, up.new_height) == (640, 480) and up.scale_x == 2.0
    tall = fit_params(480, 640, 640, 480)  # portrait: height limits
    assert (tall.new_width, tall.new_height) == (360, 480)
    with pytest.raises(ValueError, match="positive"):
        fit_params(0, 10, 640, 480)


def test_input_size_must_be_multiples_of_32_and_names_the_fix():
    check_input_size(640, 480)
    with pytest.raises(ValueError, match="use 480x384"):
        check_input_size(480, 360)
    assert converted_model_name(512, 384) == "face_detection_yunet_2023mar_512x384_float32.tflite"


# --------------------------------------------------------------------------------------------
# Card and model file errors (no real model needed)
# --------------------------------------------------------------------------------------------


def good_card(**changes) -> dict:
    card = {"input_width": 64, "input_height": 64, "outputs": {n: f"Identity_{i}" for i, n in enumerate(OUTPUT_NAMES)}}
    return {**card, **changes}


def test_card_round_trip_and_clear_errors(tmp_path):
    path = tmp_path / "m.json"
    YuNetCard(**good_card()).save(path)
    assert YuNetCard.load(path) == YuNetCard(**good_card())
    cases = {
        "missing field.*outputs": {k: v for k, v in good_card().items() if k != "outputs"},
        "outputs must map": good_card(outputs={"cls_8": "x"}),
        "input_width/input_height.*multiples of 32": good_card(input_width=100),
        "input_width must be an integer": good_card(input_width="640"),
        "colour_order": good_card(colour_order="GRB"),
        "format": good_card(format="something/2"),
    }
    for message, data in cases.items():
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message) as info:
            YuNetCard.load(path)
        assert str(path) in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        YuNetCard.load(path)
    with pytest.raises(FileNotFoundError, match="convert-detector"):
        YuNetCard.load(tmp_path / "absent.json")


def test_missing_default_model_names_the_file_and_the_commands(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        default_model_path(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "maskwatch convert-detector" in msg and "make setup" in msg
    monkeypatch.setattr(fetch, "DEFAULT_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="convert-detector"):
        make_detector("yunet")


def test_broken_model_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        make_detector("yunet", model_path=tmp_path / "nope.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(FileNotFoundError, match="bad.tflite: no YuNet card bad.json .* kind to 'short'"):
        make_detector("yunet", model_path=bad)
    YuNetCard(**good_card()).save(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="bad.tflite: not a TFLite model"):
        make_detector("yunet", model_path=bad)


# --------------------------------------------------------------------------------------------
# The converted model (../shared's YuNet, converted by the workstation run)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yunet(yunet_tflite):
    return make_detector("yunet", model_path=yunet_tflite, num_threads=2)


def fitted_frame(rgb: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    fit = fit_params(rgb.shape[1], rgb.shape[0], width, height)
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:fit.new_height, :fit.new_width] = cv2.resize(rgb, (fit.new_width, fit.new_height),
                                                        interpolation=cv2.INTER_AREA)
    return frame


@pytest.mark.parametrize("name", sorted(MEDIA_FACES))
def test_same_faces_as_opencv_on_real_photos(yunet, yunet_onnx, shared, name):
    """On a 640x480 frame the LiteRT path and cv2.FaceDetectorYN report the same faces."""
    frame = fitted_frame(read_rgb(shared / "media" / name))
    opencv = cv2.FaceDetectorYN.create(str(yunet_onnx), "", (640, 480), yunet.score_threshold, 0.3, 5000)
    _, rows = opencv.detect(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    rows = np.zeros((0, 15), np.float32) if rows is None else rows[np.argsort(-rows[:, 14])]
    ours = yunet.detect(frame)
    assert len(ours) == len(rows) >= 1
    for face, r in zip(ours, rows, strict=True):
        expect = np.array([r[0], r[1], r[0] + r[2], r[1] + r[3]])
        assert iou(np.array(face.box), expect[None])[0] >= 0.9, (face.box, expect)
        assert face.score == pytest.approx(float(r[14]), abs=0.02)
        np.testing.assert_allclose(face.keypoints[:3], r[4:10].reshape(3, 2), atol=2.0)


@pytest.mark.parametrize("name", sorted(MEDIA_FACES))
def test_finds_the_faces_in_photos_of_any_size(yunet, shared, name):
    faces = check_media_faces(yunet, shared, name)  # the photo scaled into the 640x480 input
    for f in faces:
        assert np.isnan(f.keypoints[4:]).all() and f.keypoints[0, 0] < f.keypoints[1, 0]


def test_follows_frame_size_changes_and_blank_frames(yunet, shared):
    big = read_rgb(shared / "media" / "pic1.jpeg")
    first = yunet.detect(big)
    assert len(yunet.detect(read_rgb(shared / "media" / "pic3.jpg"))) == 1
    again = yunet.detect(big)
    np.testing.assert_allclose([f.box for f in again], [f.box for f in first], atol=1e-3)
    for shape in ((1, 1, 3), (7, 13, 3), (481, 641, 3), (480, 640, 3)):
        assert yunet.detect(np.zeros(shape, np.uint8)) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        yunet.detect(np.zeros((48, 64, 4), np.uint8))


def test_backend_follows_the_model_file_and_names_itself(yunet, yunet_onnx):
    assert isinstance(yunet, YuNetLiteRTDetector)
    assert yunet.describe() == "yunet-litert 640x480 float32"
    assert "yunet-litert 640x480 float32" in repr(yunet)
    assert isinstance(make_detector("yunet", model_path=yunet_onnx), YuNetDetector)


def test_card_that_does_not_fit_the_model_is_refused(yunet_tflite, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copyfile(yunet_tflite, model)
    card = json.loads(yunet_tflite.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps({**card, "input_width": 512, "input_height": 384}))
    with pytest.raises(ValueError, match=r"m.tflite.*input is \(1, 480, 640, 3\)"):
        make_detector("yunet", model_path=model)
    outputs = {**card["outputs"], "cls_8": "no_such_tensor"}
    model.with_suffix(".json").write_text(json.dumps({**card, "outputs": outputs}))
    with pytest.raises(ValueError, match="cls_8 to output 'no_such_tensor'"):
        make_detector("yunet", model_path=model)
    swapped = {**card["outputs"], "cls_8": card["outputs"]["bbox_8"], "bbox_8": card["outputs"]["cls_8"]}
    model.with_suffix(".json").write_text(json.dumps({**card, "outputs": swapped}))
    with pytest.raises(ValueError, match=r"\((cls|bbox)_8\) has shape \(1, 4800, [14]\), expected"):
        make_detector("yunet", model_path=model)


# --------------------------------------------------------------------------------------------
# The int8 model (the default): quantized input and outputs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yunet_int8(yunet_int8_tflite):
    return make_detector("yunet", model_path=yunet_int8_tflite, num_threads=2)


@pytest.mark.parametrize("name", sorted(MEDIA_FACES))
def test_int8_finds_the_faces_float32_finds(yunet_int8, yunet, shared, name):
    faces = check_media_faces(yunet_int8, shared, name)
    reference = yunet.detect(read_rgb(shared / "media" / name))
    assert len(faces) == len(reference)
    for ref in reference:
        assert max(iou(np.array(ref.box), np.array([f.box for f in faces]))) >= 0.8
    assert yunet_int8.describe() == "yunet-litert 640x480 int8"
    assert yunet_int8.detect(np.zeros((481, 641, 3), np.uint8)) == []


def test_int8_card_records_its_calibration(yunet_int8_tflite):
    card = YuNetCard.load(yunet_int8_tflite.with_suffix(".json"))
    assert card.quantization == "int8" and card.calibration["images"] == 13
    assert "astronaut" in card.calibration["photos"] and card.parity["same_faces"]


def test_daemon_finds_the_default_model_where_install_puts_detectors(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from device.config import config_from_dict
    from device.detectors import DEFAULT_KIND
    from device.wiring import resolve_detector_path

    assert config_from_dict({}, env={}).detector.kind == DEFAULT_KIND == "yunet"
    monkeypatch.setattr(fetch, "DEFAULT_DIR", tmp_path / "checkout-models")
    cfg = SimpleNamespace(state_dir=tmp_path / "state", detector=SimpleNamespace(kind="yunet", model_path=None))
    with pytest.raises(FileNotFoundError, match="detector.model_path: .*maskwatch convert-detector"):
        resolve_detector_path(cfg)
    (tmp_path / "state" / "models").mkdir(parents=True)
    installed = tmp_path / "state" / "models" / converted_model_name(*DEFAULT_INPUT_SIZE, DEFAULT_QUANTIZATION)
    installed.write_bytes(b"")
    assert resolve_detector_path(cfg) == (installed, False)
