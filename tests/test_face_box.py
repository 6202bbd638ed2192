"""Box calibration: a detector's box moved onto the annotated face before the classifier's crop.

Hand-made boxes with answers worked out on paper; the pipeline and the VOC import (both users of
the one rule) checked with stand-in detectors and a recording classifier. No ../shared needed.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from device.detectors import Face
from device.detectors.face_box import IDENTITY, BoxCalibration, calibration_of, fit_calibration
from device.detectors.mirror import MirroredDetector
from device.detectors.yunet import BOX_CALIBRATION
from device.pipeline import Pipeline

# 100 x 80 box: longer side 100, centre (50, 40).
BOX = (0.0, 0.0, 100.0, 80.0)
CAL = BoxCalibration(dx=0.1, dy=0.2, width=0.5, height=0.8)
# centre moves to (50 + 10, 40 + 20); 50 x 80 around it.
CALIBRATED = (35.0, 20.0, 85.0, 100.0)


def test_apply_moves_and_resizes_in_units_of_the_longer_side():
    np.testing.assert_allclose(CAL.apply(np.array([BOX])), [CALIBRATED], atol=1e-5)


def test_apply_uses_each_box_own_side_and_keeps_the_order():
    tall = (10.0, 10.0, 30.0, 50.0)  # side 40 (the height), centre (20, 30)
    out = CAL.apply(np.array([BOX, tall]))
    np.testing.assert_allclose(out[0], CALIBRATED, atol=1e-5)
    # centre (24, 38); 20 x 32
    np.testing.assert_allclose(out[1], (14.0, 22.0, 34.0, 54.0), atol=1e-5)


def test_identity_returns_the_boxes_exactly_and_a_copy():
    boxes = np.array([[1.25, 2.5, 33.75, 40.125]], np.float32)
    out = IDENTITY.apply(boxes)
    assert out.tolist() == boxes.tolist() and out is not boxes
    assert IDENTITY.is_identity and not CAL.is_identity
    assert IDENTITY.apply(np.zeros((0, 4))).shape == (0, 4)


def test_describe_says_what_the_crop_is():
    assert IDENTITY.describe() == "the detector's box as it is"
    assert CAL.describe() == "the detector's box moved by +0.100, +0.200 and made 0.500 x 0.800 of its longer side"


def test_fit_recovers_a_known_calibration_from_matched_pairs():
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, 500, 50), rng.uniform(0, 400, 50)
    w, h = rng.uniform(20, 120, 50), rng.uniform(20, 120, 50)
    detected = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
    annotated = CAL.apply(detected)
    fitted = fit_calibration(detected, annotated)
    for name in ("dx", "dy", "width", "height"):
        assert getattr(fitted, name) == pytest.approx(getattr(CAL, name), abs=1e-5)


def test_fit_averages_offsets_and_takes_the_geometric_mean_of_sizes():
    detected = [(0, 0, 100, 100), (0, 0, 100, 100)]
    # centres 10 right / 30 down and 30 right / 10 down; widths 50 and 200, heights 100 both
    annotated = [(35, 30, 85, 130), (-20, 10, 180, 110)]
    fitted = fit_calibration(detected, annotated)
    assert (fitted.dx, fitted.dy) == pytest.approx((0.2, 0.2))
    assert (fitted.width, fitted.height) == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize(("detected", "annotated", "message"), [
    ([], [], "at least one matched pair"),
    ([(0, 0, 10, 10)], [], "1 detected boxes but 0 annotated"),
    ([(0, 0, 0, 0)], [(0, 0, 10, 10)], "positive width and height"),
    ([(0, 0, 10, 10)], [(5, 5, 5, 9)], "positive width and height"),
])
def test_fit_refuses_what_it_cannot_fit(detected, annotated, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(detected, annotated)


@pytest.mark.parametrize(("fields", "message"), [
    ({"width": 0.0}, "width and height must be > 0"),
    ({"height": -1.0}, "width and height must be > 0"),
    ({"dy": float("nan")}, "dy must be a finite number"),
])
def test_a_calibration_with_impossible_numbers_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        BoxCalibration(**fields)


def test_a_detector_without_a_calibration_gets_the_identity():
    assert calibration_of(SimpleNamespace()) is IDENTITY
    assert calibration_of(SimpleNamespace(box_calibration="0.1")) is IDENTITY
    assert calibration_of(SimpleNamespace(box_calibration=CAL)) is CAL


def test_the_mirror_pass_crops_like_the_detector_it_wraps():
    inner = SimpleNamespace(box_calibration=CAL, detect=lambda rgb: [], describe=lambda: "fake")
    assert calibration_of(MirroredDetector(inner)) is CAL


def test_both_yunet_backends_carry_yunet_calibration():
    from device.detectors.yunet import YuNetDetector
    from device.detectors.yunet_litert import YuNetLiteRTDetector

    assert YuNetDetector.box_calibration is BOX_CALIBRATION
    assert YuNetLiteRTDetector.box_calibration is BOX_CALIBRATION
    # YuNet's box takes in the forehead: the face sits lower and is smaller than the box.
    assert BOX_CALIBRATION.dy > 0.05 and BOX_CALIBRATION.width < 1 and BOX_CALIBRATION.height < 1


def test_each_blazeface_kind_crops_with_its_own_calibration(detector_model):
    from device.detectors.blazeface import CONFIGS, BlazeFaceDetector

    det = BlazeFaceDetector(detector_model, kind="short")
    assert det.box_calibration is CONFIGS["short"].box_calibration
    assert CONFIGS["short"].box_calibration != CONFIGS["full"].box_calibration
    assert not any(c.box_calibration.is_identity for c in CONFIGS.values())


class OneFace:
    box_calibration = CAL

    def detect(self, rgb):
        return [Face(BOX, 0.9)]


class RecordingClassifier:
    """Remembers the boxes it was asked to crop; says 'no mask' for every face."""

    def __init__(self):
        self.card = SimpleNamespace(labels=("with_mask", "without_mask"), alert_label="without_mask",
                                    alerts=("without_mask",))
        self.boxes: list[np.ndarray] = []

    def classify(self, rgb, boxes):
        self.boxes.append(np.array(boxes))
        return np.tile(np.array([[0.1, 0.9]], np.float32), (len(boxes), 1))


class NoTracker:
    def update(self, *args, **kwargs):
        return []


def test_the_pipeline_crops_the_calibrated_box_and_reports_the_detector_box():
    clf = RecordingClassifier()
    result = Pipeline(OneFace(), clf, NoTracker()).process(np.zeros((120, 160, 3), np.uint8), 0.0)
    np.testing.assert_allclose(clf.boxes[0], [CALIBRATED], atol=1e-5)
    assert result.faces[0].box == BOX
    np.testing.assert_allclose(result.view_boxes, [BOX])
    # what the daemon saves as an uncertain crop is what was classified
    np.testing.assert_allclose(result.crop_boxes, [CALIBRATED], atol=1e-5)


def test_the_voc_import_cuts_where_the_pipeline_crops(monkeypatch):
    """train.data.detector_boxes matches with the detector's box and returns the calibrated one."""
    from train.data import detector_boxes, voc
    from train.data.detector_boxes import DetectorBoxes

    # A 320x240 photo filled onto 640x480 (x2); the annotated face is the detector's box, halved.
    rgb = np.zeros((240, 320, 3), np.uint8)
    obj = voc.VocObject(name="with_mask", box=(0.0, 0.0, 50.0, 40.0))
    settings = DetectorBoxes(detector=OneFace(), min_face=0, ignore_regions=())
    got = detector_boxes.detected_boxes(rgb, [obj], settings)
    np.testing.assert_allclose(got[0], np.array(CALIBRATED) / 2, atol=1e-4)
    assert settings.describe()["box_calibration"] == CAL.as_dict()


def test_the_scene_benchmark_fits_on_the_counted_faces_it_found():
    from train.scenes.matching import TruthFace
    from train.scenes.runner import matched_boxes

    truth = [TruthFace((0.0, 0.0, 50.0, 50.0), "with_mask", 50.0, True),
             TruthFace((200.0, 0.0, 260.0, 60.0), "with_mask", 60.0, False),  # left out: not fitted on
             TruthFace((400.0, 0.0, 440.0, 40.0), "without_mask", 40.0, True)]  # not found
    boxes = [(202.0, 0.0, 262.0, 62.0), (2.0, -5.0, 52.0, 50.0), (600.0, 400.0, 620.0, 420.0)]
    assert matched_boxes(truth, boxes) == [((2.0, -5.0, 52.0, 50.0), (0.0, 0.0, 50.0, 50.0))]
    assert matched_boxes(truth, []) == []
