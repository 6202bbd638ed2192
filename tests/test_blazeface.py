"""BlazeFace: letterbox, decoding and weighted NMS as pure functions, then the real models on real photos."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.detectors import Face, make_detector
from device.detectors.anchors import SHORT_RANGE, generate_anchors
from device.detectors.blazeface import (
    BlazeFaceDetector,
    decode,
    iou,
    letterbox,
    letterbox_params,
    sigmoid_scores,
    to_faces,
    weighted_nms,
)
from tests.conftest import MODELS

# The tests on ../shared's photos check the detector on real scenes; the others paste the
# public-domain portraits of maskwatch data synth (the ``faces`` fixture) and run on any clone.
# Faces a person sees in ../shared/media (x0, y0, x1, y1), drawn by eye around brows..chin.
# pic2 also holds two faces cut by the top edge (one blurred behind the others): a detector
# may or may not report those.
MEDIA_FACES: dict[str, list[tuple[float, float, float, float]]] = {
    "pic1.jpeg": [(165, 225, 345, 425), (490, 205, 665, 400)],
    "pic2.jpg": [(65, 120, 220, 296), (360, 75, 525, 263), (610, 115, 765, 290)],
    "pic3.jpg": [(167, 47, 280, 165)],
    "demo2.jpg": [(205, 60, 340, 205)],
}
MEDIA_EXTRA_ALLOWED = {"pic2.jpg": 2}


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def check_media_faces(detector, shared: Path, name: str) -> list[Face]:
    """Every face a person sees is found, nothing else (beyond pic2's cut-off faces), boxes in frame."""
    rgb = read_rgb(shared / "media" / name)
    h, w = rgb.shape[:2]
    faces = detector.detect(rgb)
    truth = MEDIA_FACES[name]
    for t in truth:
        best = max((float(iou(np.array(t), np.array([f.box]))[0]) for f in faces), default=0.0)
        assert best >= 0.5, f"{name}: face {t} not found (best IoU {best:.2f}) in {[f.box for f in faces]}"
    assert len(truth) <= len(faces) <= len(truth) + MEDIA_EXTRA_ALLOWED.get(name, 0), [f.box for f in faces]
    for f in faces:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, f.box
        assert 0 < f.score <= 1
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    return faces


def paste(face: np.ndarray, canvas_wh: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """``face`` on a plain grey canvas of canvas_wh, its top-left corner at ``at``."""
    w, h = canvas_wh
    canvas = np.full((h, w, 3), 128, dtype=np.uint8)
    x, y = at
    canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
    return canvas


def check_pasted_face_found(detector, face: np.ndarray) -> None:
    """A real face, on a 240x240 photo, then that photo pasted into non-square frames, is found where it was put.

    The reference is the same detector's box on the square photo, moved by the paste offset;
    the frames differ in size and aspect (bars left/right or top/bottom), so only the
    letterbox mapping connects the two. The model's own wobble between scales is a few % of
    the face; a letterbox mistake would be off by the padding (tens to hundreds of pixels).
    """
    photo = paste(cv2.resize(face, (180, 180), interpolation=cv2.INTER_AREA), (240, 240), (30, 30))
    (ref,) = detector.detect(photo)
    for canvas_wh, at in [((520, 260), (280, 8)), ((260, 520), (15, 260)), ((640, 480), (0, 0))]:
        frame = paste(photo, canvas_wh, at)
        faces = detector.detect(frame)
        assert len(faces) == 1, (canvas_wh, [f.box for f in faces])
        dx, dy = at
        expect = np.array(ref.box) + [dx, dy, dx, dy]
        err = np.abs(np.array(faces[0].box) - expect)
        assert err.max() <= 0.12 * ref.width, (canvas_wh, faces[0].box, expect.tolist())
        np.testing.assert_allclose(faces[0].keypoints[:4], ref.keypoints[:4] + [dx, dy], atol=0.12 * ref.width)


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def test_letterbox_params_landscape_and_portrait():
    lb = letterbox_params(640, 480, 128)
    assert (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y) == (128, 96, 0, 16)
    lb = letterbox_params(300, 900, 192)
    assert (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y) == (64, 192, 64, 0)
    lb = letterbox_params(50, 50, 128)
    assert (lb.new_width, lb.new_height, lb.pad_x, lb.pad_y) == (128, 128, 0, 0)
    with pytest.raises(ValueError, match="positive"):
        letterbox_params(0, 10, 128)


@pytest.mark.parametrize(("w", "h", "size"), [(640, 480, 128), (480, 640, 128), (1280, 360, 192), (37, 101, 192)])
def test_letterbox_inverse_maps_back_to_the_frame(w, h, size):
    lb = letterbox_params(w, h, size)
    pts = np.array([[0, 0], [w, h], [w / 3, h / 5], [w - 1, 2.5]], dtype=np.float32)
    np.testing.assert_allclose(lb.to_frame(lb.to_input(pts)), pts, atol=1e-3)
    # The frame's corners land on the edges of the resized area inside the square.
    corners = lb.to_input(np.array([[0, 0], [w, h]], dtype=np.float32)) * size
    np.testing.assert_allclose(corners, [[lb.pad_x, lb.pad_y], [lb.pad_x + lb.new_width, lb.pad_y + lb.new_height]],
                               atol=1e-3)


def test_letterbox_image_puts_content_where_the_mapping_says():
    frame = np.zeros((300, 800, 3), dtype=np.uint8)
    frame[100:200, 600:700] = (255, 0, 0)  # a red square right of centre
    out, lb = letterbox(frame, 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    (x0, y0), (x1, y1) = lb.to_input(np.array([[600, 100], [700, 200]], np.float32)) * 128
    red = np.argwhere(out[..., 0] > 128)
    assert abs(red[:, 1].min() - x0) <= 1 and abs(red[:, 1].max() + 1 - x1) <= 1
    assert abs(red[:, 0].min() - y0) <= 1 and abs(red[:, 0].max() + 1 - y1) <= 1
    # Padding rows are black, even when the buffer is reused after another frame.
    out2, lb2 = letterbox(np.full((300, 800, 3), 255, np.uint8), 128, out)
    assert out2 is out
    assert (out2[:lb2.pad_y] == 0).all() and (out2[lb2.pad_y + lb2.new_height:] == 0).all()
    assert (out2[lb2.pad_y:lb2.pad_y + lb2.new_height] == 255).all()


def test_sigmoid_scores_clip_without_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid_scores(np.array([-1e6, -100, 0, 2, 1e6], dtype=np.float32))
    assert s[2] == 0.5
    assert s[0] == s[1] and 0 < s[0] < 1e-40
    np.testing.assert_allclose(s[3], 1 / (1 + np.exp(-2)))
    assert s[4] == 1.0


def synthetic_outputs(entries: dict[int, tuple[float, list[float]]], n: int = 896) -> tuple[np.ndarray, np.ndarray]:
    """Raw model outputs: anchor index -> (logit, 16 regressor values); all others score ~0."""
    boxes = np.zeros((n, 16), np.float32)
    scores = np.full((n, 1), -20.0, np.float32)
    for k, (logit, reg) in entries.items():
        boxes[k] = reg
        scores[k] = logit
    return boxes, scores


def test_decode_box_and_keypoints_relative_to_anchor():
    anchors = generate_anchors(SHORT_RANGE)
    k = 600  # a stride-16 anchor
    ax, ay = anchors[k]
    kp = [1, 2, -3, 4, 5, -6, 7, 8, -9, 10, 11, 12]
    raw_boxes, raw_scores = synthetic_outputs({k: (3.0, [6.4, -12.8, 32, 25.6, *kp])})
    boxes, kps, scores = decode(raw_boxes, raw_scores, anchors, 128, 0.5)
    assert boxes.shape == (1, 4) and kps.shape == (1, 6, 2) and scores.shape == (1,)
    cx, cy, w, h = ax + 0.05, ay - 0.1, 0.25, 0.2
    np.testing.assert_allclose(boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)
    np.testing.assert_allclose(kps[0], np.array(kp, np.float32).reshape(6, 2) / 128 + [ax, ay], atol=1e-6)
    np.testing.assert_allclose(scores[0], 1 / (1 + np.exp(-3.0)), rtol=1e-6)


def test_decode_threshold_and_invalid_boxes():
    anchors = generate_anchors(SHORT_RANGE)
    raw_boxes, raw_scores = synthetic_outputs({
        10: (0.0, [0, 0, 20, 20] + [0] * 12),     # score exactly 0.5
        20: (5.0, [0, 0, -5, 20] + [0] * 12),     # confident but negative width: dropped
        30: (5.0, [0, 0, 20, 20] + [0] * 12),
    })
    _, _, s = decode(raw_boxes, raw_scores, anchors, 128, 0.5)
    assert len(s) == 2  # 0.5 is kept at threshold 0.5 (MediaPipe keeps score >= threshold)
    _, _, s = decode(raw_boxes, raw_scores, anchors, 128, 0.51)
    assert len(s) == 1 and s[0] > 0.99
    b, k, s = decode(*synthetic_outputs({}), anchors, 128, 0.5)
    assert b.shape == (0, 4) and k.shape == (0, 6, 2) and s.shape == (0,)


def test_iou_values():
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 1, 1], [1, 1, 1, 1]], np.float32)
    np.testing.assert_allclose(iou(np.array([0, 0, 2, 2]), boxes), [1, 1 / 3, 0, 0.25, 0], atol=1e-6)
    assert iou(np.array([1, 1, 1, 1]), boxes[4:]).tolist() == [0.0]  # empty boxes do not divide by zero


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([
        [0.10, 0.10, 0.30, 0.30],   # face A, weaker anchor
        [0.12, 0.12, 0.32, 0.32],   # face A, best anchor
        [0.60, 0.60, 0.80, 0.80],   # face B, alone
        [0.11, 0.09, 0.31, 0.29],   # face A, another anchor
    ], np.float32)
    kps = np.repeat(boxes[:, None, :2], 6, axis=1) + 0.01
    scores = np.array([0.6, 0.9, 0.8, 0.7], np.float32)
    out_b, out_k, out_s = weighted_nms(boxes, kps, scores, 0.3)
    assert out_s.tolist() == pytest.approx([0.9, 0.8])
    group = [1, 0, 3]
    w = scores[group] / scores[group].sum()
    np.testing.assert_allclose(out_b[0], (boxes[group] * w[:, None]).sum(0), atol=1e-6)
    np.testing.assert_allclose(out_k[0], (kps[group] * w[:, None, None]).sum(0), atol=1e-6)
    np.testing.assert_allclose(out_b[1], boxes[2], atol=1e-7)
    # A strict threshold merges nothing: every box survives, best first.
    _, _, s = weighted_nms(boxes, kps, scores, 0.95)
    assert s.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    b, k, s = weighted_nms(boxes[:0], kps[:0], scores[:0], 0.3)
    assert b.shape == (0, 4) and k.shape == (0, 6, 2) and s.shape == (0,)


def test_to_faces_clips_boxes_and_applies_min_face():
    lb = letterbox_params(200, 100, 128)  # new 128x64, pad_y 32
    boxes = np.array([[-0.1, 0.25, 0.5, 0.75], [0.5, 0.4, 0.55, 0.45]], np.float32)
    kps = np.zeros((2, 6, 2), np.float32)
    faces = to_faces(boxes, kps, np.array([0.9, 0.8], np.float32), lb)
    assert faces[0].box == pytest.approx((0.0, 0.0, 100.0, 100.0))
    assert faces[0].keypoints.shape == (6, 2) and faces[0].keypoints.dtype == np.float32
    assert faces[1].box == pytest.approx((100.0, 30.0, 110.0, 40.0))  # (0.4 * 128 - 32) / 0.64 = 30
    assert [f.score for f in to_faces(boxes, kps, np.array([0.9, 0.8], np.float32), lb, min_face=20)] == [
        pytest.approx(0.9)]


def test_face_equality_ignores_keypoints():
    a = Face((1.0, 2.0, 3.0, 4.0), 0.9, np.zeros((6, 2), np.float32))
    b = Face((1.0, 2.0, 3.0, 4.0), 0.9, np.ones((6, 2), np.float32))
    assert a == b and hash(a) == hash(b) and a.width == 2.0 and a.height == 2.0


# --------------------------------------------------------------------------------------------
# The real models
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short(detector_model):
    return make_detector("short", model_path=detector_model, num_threads=2)


@pytest.fixture(scope="module")
def full():
    from device.detectors.model_files import model_path

    try:
        path = model_path("full", MODELS)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return make_detector("full", model_path=path, num_threads=2)


@pytest.mark.parametrize("name", sorted(MEDIA_FACES))
def test_short_range_finds_the_faces_in_shared_media(short, shared, name):
    check_media_faces(short, shared, name)


@pytest.mark.parametrize("name", sorted(MEDIA_FACES))
def test_full_range_finds_the_faces_in_shared_media(full, shared, name):
    check_media_faces(full, shared, name)


def test_short_and_full_range_agree_on_the_boxes(short, full, shared):
    for name in MEDIA_FACES:
        rgb = read_rgb(shared / "media" / name)
        for a in short.detect(rgb):
            best = max(float(iou(np.array(a.box), np.array([b.box]))[0]) for b in full.detect(rgb))
            assert best > 0.6, (name, a.box)


def test_keypoints_follow_the_face(short, shared):
    """Keypoints are in MediaPipe's order: subject's right eye (image left) first, eyes above nose above mouth."""
    for name in ("pic3.jpg", "pic2.jpg"):
        for f in short.detect(read_rgb(shared / "media" / name)):
            kp = f.keypoints
            x0, y0, x1, y1 = f.box
            assert kp.shape == (6, 2) and kp.dtype == np.float32
            assert ((kp[:4, 0] > x0) & (kp[:4, 0] < x1) & (kp[:4, 1] > y0) & (kp[:4, 1] < y1)).all(), kp
            assert kp[0, 0] < kp[1, 0]  # right eye left of left eye in a non-mirrored photo
            assert kp[4, 0] < kp[5, 0]  # so are the ears
            assert max(kp[0, 1], kp[1, 1]) < kp[2, 1] < kp[3, 1]


def test_pasted_face_is_found_at_its_place_in_non_square_frames(short, full, faces):
    for face in faces:
        check_pasted_face_found(short, face)
        check_pasted_face_found(full, face)


def test_thresholds_and_min_face(detector_model, short, shared):
    rgb = read_rgb(shared / "media" / "pic2.jpg")
    all_faces = short.detect(rgb)
    strict = make_detector("short", detector_model, score_threshold=0.93).detect(rgb)
    assert 0 < len(strict) < len(all_faces) and all(f.score >= 0.93 for f in strict)
    big = make_detector("short", detector_model, min_face=160).detect(rgb)
    assert 0 < len(big) < len(all_faces)
    assert all(min(f.width, f.height) >= 160 for f in big)


def test_model_input_is_scaled_to_minus_one_one(short):
    """MediaPipe feeds BlazeFace pixels mapped 0..255 -> -1..1; black bars are -1."""
    from device.runtime import input_info

    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 32:] = 255
    short.detect(frame)
    fed = short.interpreter.get_tensor(input_info(short.interpreter).index)[0]
    assert fed.dtype == np.float32
    assert fed[:16].max() == -1.0 and fed[-16:].max() == -1.0  # letterbox bars (128 x 96 content)
    assert fed[64, 10].tolist() == [-1.0, -1.0, -1.0] and fed[64, 120].tolist() == [1.0, 1.0, 1.0]


def test_mirrored_view_is_the_mirrored_result(short, faces):
    """A flipped view (negative strides, as a mirrored camera gives) works and mirrors the boxes."""
    for i, photo in enumerate(faces):
        rgb = paste(cv2.resize(photo, (200, 200), interpolation=cv2.INTER_AREA), (640, 480), (90 + 250 * i, 140))
        w = rgb.shape[1]
        (face,) = short.detect(rgb)
        (flipped,) = short.detect(rgb[:, ::-1])
        x0, y0, x1, y1 = flipped.box
        np.testing.assert_allclose((w - x1, y0, w - x0, y1), face.box, atol=0.06 * face.width)


def test_blank_frames_have_no_faces(short, full):
    for frame in (np.zeros((480, 640, 3), np.uint8), np.full((1, 1, 3), 200, np.uint8)):
        assert short.detect(frame) == [] and full.detect(frame) == []


def test_bad_frames_are_clear_errors(short):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        short.detect(np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        short.detect(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        short.detect(np.zeros((0, 64, 3), np.uint8))


def test_wrong_or_broken_model_files(detector_model, tmp_path):
    with pytest.raises(ValueError, match="face_detection_short_range.tflite.*'full'"):
        BlazeFaceDetector(detector_model, kind="full")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="bad.tflite"):
        make_detector("short", model_path=bad)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        make_detector("short", model_path=tmp_path / "missing.tflite")


def test_make_detector_rejects_bad_options(detector_model):
    with pytest.raises(ValueError, match="unknown detector kind 'tiny'"):
        make_detector("tiny")
    with pytest.raises(ValueError, match="score_threshold"):
        make_detector("short", detector_model, score_threshold=1.5)
    d = make_detector("short", detector_model)
    assert d.score_threshold == 0.5 and d.iou_threshold == 0.3
