"""The mirror pass: faces found on the mirror image land where they are in the frame, a face
both passes find is reported once, and the daemon, the CLIs and the scene benchmark agree on it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.detectors import DEFAULT_MIRROR, Face, make_detector
from device.detectors.mirror import MirroredDetector, merge_faces, mirror_face


def test_a_mirrored_face_comes_back_to_the_frame_with_its_keypoints_swapped():
    kps = np.array([[30, 20], [50, 20], [40, 30], [40, 40], [22, 25], [58, 25]], np.float32)
    face = Face((20.0, 10.0, 60.0, 50.0), 0.7, kps)
    back = mirror_face(face, 100)
    assert back.box == (40.0, 10.0, 80.0, 50.0) and back.score == 0.7
    # x flipped, and the pairs swapped back so that the subject's right eye comes first again
    assert back.keypoints[:, 0].tolist() == [50, 70, 60, 60, 42, 78]
    assert back.keypoints[:, 1].tolist() == [20, 20, 30, 40, 25, 25]
    assert mirror_face(mirror_face(face, 100), 100).box == face.box
    assert np.array_equal(mirror_face(mirror_face(face, 100), 100).keypoints, kps)
    assert mirror_face(Face((0.0, 0.0, 10.0, 10.0), 0.5), 100).keypoints is None


def test_overlapping_faces_merge_into_the_best_scoring_one():
    a = Face((10.0, 10.0, 50.0, 50.0), 0.6)
    b = Face((12.0, 11.0, 52.0, 51.0), 0.8)  # the same face, seen better in the other pass
    c = Face((200.0, 10.0, 240.0, 50.0), 0.7)  # another face
    assert merge_faces([a, c, b], 0.3) == [b, c]
    assert merge_faces([], 0.3) == []
    # below the overlap threshold both stay
    d = Face((40.0, 10.0, 80.0, 50.0), 0.5)  # IoU with a = 10*40 / (2*1600 - 400) = 0.14
    assert merge_faces([a, d], 0.3) == [a, d]


class LeftHalfDetector:
    """Finds a bright square only in the left half of what it is given (a detector with a blind
    spot), and records the frames it saw."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []
        self.score_threshold = 0.42

    def detect(self, rgb):
        self.seen.append(rgb)
        ys, xs = np.nonzero(rgb[..., 0] > 200)
        if not len(xs) or xs.max() >= rgb.shape[1] // 2:
            return []
        return [Face((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), 0.9)]

    def describe(self) -> str:
        return "left-half 640x480"


def test_a_face_only_the_mirror_pass_sees_is_found_where_it_is():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:160, 500:560] = 255  # right half: the plain pass misses it
    inner = LeftHalfDetector()
    det = MirroredDetector(inner)
    assert inner.detect(frame) == []
    faces = det.detect(frame)
    assert [f.box for f in faces] == [(500.0, 100.0, 560.0, 160.0)]
    assert np.array_equal(inner.seen[-1], frame[:, ::-1]) and inner.seen[-1].flags.c_contiguous
    # a face the plain pass sees too is reported once
    frame[:] = 0
    frame[200:260, 20:80] = 255  # left half: the plain pass finds it, the mirror pass does not
    faces = det.detect(frame)
    assert [f.box for f in faces] == [(20.0, 200.0, 80.0, 260.0)]
    # what callers read off the detector it wraps
    assert det.score_threshold == 0.42 and det.describe() == "left-half 640x480 + mirror"
    with pytest.raises(ValueError, match="frame must be"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="iou_threshold"):
        MirroredDetector(inner, iou_threshold=0)


def test_yunet_with_the_mirror_pass_finds_each_real_face_once(yunet_int8_tflite, faces):
    frame = np.zeros((480, 640, 3), np.uint8)
    x = 10
    for face in faces[:2]:
        f = cv2.resize(face, (200, int(200 * face.shape[0] / face.shape[1])))[:400]
        frame[40:40 + f.shape[0], x:x + 200] = f
        x += 320
    plain = make_detector("yunet", yunet_int8_tflite, num_threads=1)
    both = make_detector("yunet", yunet_int8_tflite, num_threads=1, mirror=True)
    assert isinstance(both, MirroredDetector) and not isinstance(plain, MirroredDetector)
    p, m = plain.detect(frame), both.detect(frame)
    assert len(p) == 2 and len(m) == 2
    for a, b in zip(sorted(p, key=lambda f: f.box[0]), sorted(m, key=lambda f: f.box[0]), strict=True):
        assert np.allclose(a.box, b.box, atol=12)  # the same face, from either pass
        assert b.keypoints[0, 0] < b.keypoints[1, 0]  # right eye (subject's) left of the left eye


def test_the_daemon_cli_and_scene_benchmark_share_the_default(tmp_path):
    from device.config import config_from_dict
    from train.scenes.detector_specs import daemon_detector_options, parse_detector

    cfg = config_from_dict({}, env={})
    assert cfg.detector.mirror is DEFAULT_MIRROR is True
    assert config_from_dict({"detector": {"mirror": False}}, env={}).detector.mirror is False
    assert daemon_detector_options() == {"score_threshold": None, "mirror": True}
    assert parse_detector("yunet,mirror=0").options == {"mirror": 0}
