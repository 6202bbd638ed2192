"""YuNet (OpenCV FaceDetectorYN) behind the FaceDetector interface, on the real model and photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.detectors import make_detector
from device.detectors.yunet import YuNetDetector, yunet_rows_to_faces
from tests.test_blazeface import MEDIA_FACES, check_media_faces, check_pasted_face_found, read_rgb

YUNET = "models/face_detection_yunet_2023mar.onnx"


@pytest.fixture(scope="module")
def yunet_path(shared):
    path = shared / YUNET
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def yunet(yunet_path):
    return make_detector("yunet", model_path=yunet_path)


def test_rows_map_to_blazeface_keypoints_and_clip():
    rows = np.array([
        # x, y, w, h, right eye, left eye, nose, right mouth corner, left mouth corner, score
        [10, 20, 40, 50, 20, 30, 40, 30, 30, 40, 22, 55, 38, 57, 0.7],
        [-5, 90, 30, 30, 0, 100, 10, 100, 5, 105, 0, 110, 10, 112, 0.95],
        [100, 100, 4, 4, 101, 101, 103, 101, 102, 102, 101, 103, 103, 103, 0.8],
    ], np.float32)
    faces = yunet_rows_to_faces(rows, width=200, height=110)
    assert [f.score for f in faces] == pytest.approx([0.95, 0.8, 0.7])
    assert faces[0].box == pytest.approx((0.0, 90.0, 25.0, 110.0))  # clipped to the frame
    kp = faces[2].keypoints
    assert kp.shape == (6, 2) and kp.dtype == np.float32
    np.testing.assert_allclose(kp[:4], [[20, 30], [40, 30], [30, 40], [30, 56]])
    assert np.isnan(kp[4:]).all()
    assert len(yunet_rows_to_faces(rows, 200, 110, min_face=10)) == 2
    assert yunet_rows_to_faces(None, 200, 110) == []


@pytest.mark.parametrize("name", sorted(MEDIA_FACES))
def test_yunet_finds_the_faces_in_shared_media(yunet, shared, name):
    faces = check_media_faces(yunet, shared, name)
    for f in faces:
        assert np.isnan(f.keypoints[4:]).all() and np.isfinite(f.keypoints[:4]).all()
        assert f.keypoints[0, 0] < f.keypoints[1, 0]  # subject's right eye first, as BlazeFace


def test_yunet_takes_rgb_and_matches_opencv_on_bgr(yunet_path, shared):
    """The wrapper converts RGB to the BGR YuNet wants: same faces as OpenCV called directly."""
    bgr = cv2.imread(str(shared / "media" / "pic2.jpg"))
    h, w = bgr.shape[:2]
    raw = cv2.FaceDetectorYN.create(str(yunet_path), "", (w, h), 0.7, 0.3, 5000)
    _, rows = raw.detect(bgr)
    ours = make_detector("yunet", model_path=yunet_path).detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(ours) == len(rows) >= 3
    expect = sorted((tuple(r[:2]) for r in rows), key=lambda t: t[0])
    got = sorted(((f.box[0], f.box[1]) for f in ours), key=lambda t: t[0])
    np.testing.assert_allclose(got, expect, atol=0.5)


def test_yunet_follows_frame_size_changes(yunet, shared):
    big = read_rgb(shared / "media" / "pic1.jpeg")
    small = read_rgb(shared / "media" / "pic3.jpg")
    first = yunet.detect(big)
    assert len(yunet.detect(small)) == 1
    again = yunet.detect(big)
    assert len(first) == 2
    np.testing.assert_allclose([f.box for f in again], [f.box for f in first], atol=1e-3)


def test_yunet_pasted_face_in_non_square_frames(yunet, faces):
    for face in faces:
        check_pasted_face_found(yunet, face)


def test_yunet_default_threshold_keeps_masked_faces(yunet, yunet_path, shared):
    """OpenCV's demo threshold (0.9) loses both masked faces in pic1; our default keeps them."""
    rgb = read_rgb(shared / "media" / "pic1.jpeg")
    assert len(yunet.detect(rgb)) == 2
    assert len(make_detector("yunet", model_path=yunet_path, score_threshold=0.9).detect(rgb)) < 2


def test_yunet_bad_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        YuNetDetector(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.onnx"):
        make_detector("yunet", model_path=bad)


def test_yunet_blank_and_odd_sized_frames(yunet):
    for shape in ((1, 1, 3), (7, 13, 3), (481, 641, 3)):
        assert yunet.detect(np.zeros(shape, np.uint8)) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        yunet.detect(np.zeros((48, 64, 4), np.uint8))
