"""The scene benchmark's arithmetic on hand-made boxes with known answers (no models, no files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.data.voc import VocObject
from train.scenes.detector_specs import DetectorSpec, detector_name, input_size_of, parse_detector
from train.scenes.matching import (
    DetectionOutcome,
    FaceOutcome,
    SceneOutcome,
    TruthFace,
    alert_mistakes,
    match_faces,
    score_scene,
    size_bin,
    summarize,
    wilson_interval,
)
from train.scenes.voc_scenes import frame_scale, scene_key, splits_by_scene, truth_faces, why_not_in_split

LABELS = ("with_mask", "without_mask", "incorrect_mask")


def face(box, label="without_mask", counted=True):
    return TruthFace(tuple(float(v) for v in box), label, max(box[2] - box[0], box[3] - box[1]), counted)


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


def test_match_pairs_each_face_with_its_best_detection_once():
    truth = [(0, 0, 10, 10), (100, 100, 110, 110)]
    dets = [(101, 101, 111, 111), (0, 0, 10, 10), (1, 0, 11, 10)]
    # IoU: truth0-det1 = 1.0, truth0-det2 = 90/110, truth1-det0 = 81/119; det2 loses to det1.
    assert sorted(match_faces(truth, dets)) == [(0, 1), (1, 0)]


def test_match_threshold_is_inclusive_at_0_3():
    truth = [(0, 0, 8, 1)]
    assert match_faces(truth, [(5, 0, 10, 1)]) == [(0, 0)]  # overlap 3, union 8 + 5 - 3 = 10: IoU 0.3
    assert match_faces(truth, [(5.25, 0, 10.25, 1)]) == []  # 2.75 / 10.25 = 0.27


def test_greedy_by_iou_not_by_order():
    # det0 overlaps both faces; face1 is its better partner, so face0 goes to det1 (weaker but free).
    truth = [(0, 0, 10, 10), (4, 0, 14, 10)]
    dets = [(5, 0, 15, 10), (1, 0, 11, 10)]
    pairs = dict(match_faces(truth, dets))
    assert pairs == {1: 0, 0: 1}


def test_no_boxes_no_pairs():
    assert match_faces([], [(0, 0, 1, 1)]) == []
    assert match_faces([(0, 0, 1, 1)], []) == []


@pytest.mark.parametrize(("size", "name"), [(15.9, ""), (16, "16-32"), (31.9, "16-32"), (32, "32-64"),
                                            (64, "64-128"), (127.99, "64-128"), (128, "128+"), (900, "128+")])
def test_size_bins_include_their_lower_bound(size, name):
    assert size_bin(size) == name


def test_score_scene_found_flagged_unmatched_and_left_out():
    truth = [face((0, 0, 40, 40), "without_mask"), face((100, 0, 140, 40), "with_mask"),
             face((200, 0, 210, 10), "with_mask", counted=False), face((300, 0, 340, 40), "without_mask")]
    dets = [(0, 0, 40, 40), (100, 0, 140, 40), (200, 0, 210, 10), (500, 500, 540, 540)]
    out = score_scene(truth, dets, [True, True, False, True])
    assert out.faces == [FaceOutcome("without_mask", 40, True, True), FaceOutcome("with_mask", 40, True, True),
                         FaceOutcome("without_mask", 40, False, False)]
    assert out.detections == [DetectionOutcome(True, "without_mask"), DetectionOutcome(True, "with_mask"),
                              DetectionOutcome(False, None, on_left_out=True), DetectionOutcome(True, None)]


def test_alert_mistakes_are_the_flagged_masked_and_the_unflagged_bare_faces_found():
    truth = [face((0, 0, 40, 40), "without_mask"),  # found, flagged: right
             face((100, 0, 140, 40), "with_mask"),  # found, flagged: false alert
             face((200, 0, 240, 40), "without_mask"),  # found, not flagged: missed alert
             face((300, 0, 340, 40), "with_mask"),  # found, not flagged: right
             face((400, 0, 440, 40), "incorrect_mask"),  # found, not flagged: not this list's business
             face((500, 0, 510, 10), "with_mask", counted=False),  # left out, flagged: not listed
             face((600, 0, 640, 40), "without_mask")]  # never found: a detector miss, not the alert's
    dets = [(402, 0, 442, 40), (500, 0, 510, 10), (0, 0, 40, 40), (100, 0, 140, 40), (200, 0, 240, 40),
            (300, 0, 340, 40), (900, 900, 940, 940)]
    flagged = [False, True, True, True, False, False, True]
    assert alert_mistakes(truth, dets, flagged, "without_mask", "with_mask") == [
        (3, 1, "false_alert"), (4, 2, "missed_alert")]
    assert alert_mistakes([], [], [], "without_mask", "with_mask") == []
    with pytest.raises(ValueError, match="1 detections but 0 flagged"):
        alert_mistakes(truth, dets[:1], [], "without_mask", "with_mask")


def test_score_scene_rejects_mismatched_flags():
    with pytest.raises(ValueError, match="2 detections but 1 flagged"):
        score_scene([], [(0, 0, 1, 1), (2, 2, 3, 3)], [True])


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def test_summary_figures_on_a_hand_made_set():
    a = SceneOutcome(
        faces=[FaceOutcome("without_mask", 20, True, True),  # found + flagged
               FaceOutcome("without_mask", 70, True, False),  # found, not flagged
               FaceOutcome("without_mask", 200, False, False),  # missed
               FaceOutcome("with_mask", 40, True, False),
               FaceOutcome("with_mask", 30, False, False),  # masked but under 32 px
               FaceOutcome("incorrect_mask", 50, True, True)],
        detections=[DetectionOutcome(True, "without_mask"), DetectionOutcome(False, "without_mask"),
                    DetectionOutcome(False, "with_mask"), DetectionOutcome(True, "incorrect_mask"),
                    DetectionOutcome(True, None), DetectionOutcome(False, None),
                    DetectionOutcome(True, None, on_left_out=True)])
    b = SceneOutcome(faces=[FaceOutcome("with_mask", 130, True, True)],
                     detections=[DetectionOutcome(True, "with_mask")])
    s = summarize([a, b], LABELS, "without_mask", "with_mask", "incorrect_mask")
    assert (s["scenes"], s["faces"], s["found"], s["recall"]) == (2, 7, 5, 5 / 7)
    assert s["by_class"]["without_mask"] == {"faces": 3, "found": 2, "recall": 2 / 3}
    assert s["by_class"]["with_mask"] == {"faces": 3, "found": 2, "recall": 2 / 3}
    assert s["by_class"]["incorrect_mask"] == {"faces": 1, "found": 1, "recall": 1.0}
    assert s["by_size"] == {"16-32": {"faces": 2, "found": 1, "recall": 0.5},
                            "32-64": {"faces": 2, "found": 2, "recall": 1.0},
                            "64-128": {"faces": 1, "found": 1, "recall": 1.0},
                            "128+": {"faces": 2, "found": 1, "recall": 0.5}}
    assert s["with_mask_32px"] == {"faces": 2, "found": 2, "recall": 1.0}
    assert s["alert_recall"] == {"faces": 3, "found_and_flagged": 1, "recall": 1 / 3}
    # Flagged detections on with/without faces: a's without_mask one and b's with_mask one.
    assert s["flagged_precision"] == {"flagged": 2, "really_without_mask": 1, "precision": 0.5}
    assert s["incorrect_mask"] == {"faces": 1, "found": 1, "found_and_flagged": 1, "recall": 1.0}
    assert (s["detections"], s["unmatched"], s["flagged_unmatched"], s["on_left_out_faces"]) == (8, 2, 1, 1)


def test_summary_of_nothing_says_none_not_zero():
    s = summarize([SceneOutcome()], LABELS, "without_mask", "with_mask", "incorrect_mask")
    assert s["recall"] is None and s["alert_recall"]["recall"] is None
    assert s["flagged_precision"]["precision"] is None
    assert s["by_size"]["16-32"] == {"faces": 0, "found": 0, "recall": None}


# --------------------------------------------------------------------------------------------
# Scenes as frames, and the split filter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "h", "scale"), [(640, 480, 1.0), (400, 300, 1.0), (1280, 960, 0.5),
                                               (1280, 480, 0.5), (600, 960, 0.5), (100, 2400, 0.2)])
def test_photos_are_shrunk_to_fit_and_never_enlarged(w, h, scale):
    assert frame_scale(w, h, (640, 480)) == pytest.approx(scale)


def test_truth_faces_scale_clip_and_leave_out():
    objects = [VocObject("without_mask", (10, 10, 50, 70)),  # 60 px tall -> 30 px on a half-size frame
               VocObject("mask", (100, 100, 130, 120)),  # 30 px -> 15: under the 16 px minimum
               VocObject("hat", (0, 0, 100, 100)),  # not a mask label
               VocObject("with_mask", None, "empty box"),
               VocObject("with_mask", (500, 500, 600, 600)),  # outside the 400x400 photo
               VocObject("mask_weared_incorrect", (380, 0, 440, 40))]  # clipped at the right edge
    faces, left_out = truth_faces(objects, 0.5, (400, 400))
    assert left_out == {"too_small": 1, "unknown_class": 1, "bad_box": 2}
    assert faces == [TruthFace((5.0, 5.0, 25.0, 35.0), "without_mask", 30.0, True),
                     TruthFace((50.0, 50.0, 65.0, 60.0), "with_mask", 15.0, False),
                     TruthFace((0.0, 0.0, 50.0, 50.0), "", 50.0, False),
                     TruthFace((190.0, 0.0, 200.0, 20.0), "incorrect_mask", 30.0, True)]


def test_scene_key_survives_moves_and_archives():
    assert scene_key("/data/old/faces-voc/images/a.jpg") == "faces-voc/images/a.jpg"
    assert scene_key("C:\\x\\faces-voc\\images\\a.jpg") == "faces-voc/images/a.jpg"
    assert scene_key("masks.zip!/faces-voc/images/a.jpg") == "faces-voc/images/a.jpg"


def test_a_scene_belongs_to_a_split_only_when_all_its_faces_do():
    rows = [("/d/voc/images/a.jpg#box0", "test"), ("/d/voc/images/a.jpg#box2", "test"),
            ("/d/voc/images/b.jpg#box0", "test"), ("/d/voc/images/b.jpg#box1", "val"),
            ("/d/voc/images/c.jpg#box0", "train"), ("/d/classify/with_mask/x.jpg", "test")]
    by_scene = splits_by_scene(rows)
    assert by_scene == {"voc/images/a.jpg": {"test"}, "voc/images/b.jpg": {"test", "val"},
                        "voc/images/c.jpg": {"train"}}
    assert why_not_in_split(by_scene["voc/images/a.jpg"], "test") == ""
    assert why_not_in_split(by_scene["voc/images/b.jpg"], "test") == "mixed_splits"
    assert why_not_in_split(by_scene["voc/images/c.jpg"], "test") == "other_split"
    assert why_not_in_split(by_scene.get("voc/images/d.jpg"), "test") == "not_in_dataset"


# --------------------------------------------------------------------------------------------
# --detector settings
# --------------------------------------------------------------------------------------------


def test_detector_settings_parse_into_make_detector_arguments():
    assert parse_detector("short") == DetectorSpec("short", "short")
    spec = parse_detector("yunet:models/y.onnx,score_threshold=0.6")
    assert (spec.kind, spec.model_path, spec.options) == ("yunet", Path("models/y.onnx"), {"score_threshold": 0.6})


@pytest.mark.parametrize(("text", "message"), [("tiny", "unknown kind 'tiny'"), ("yunet:", "no model file"),
                                               ("full,speed=3", "option 'speed=3'"),
                                               ("full,num_threads=4", "option 'num_threads=4'")])
def test_bad_detector_settings_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_detector(text)


def test_detector_names_carry_the_input_size():
    class Config:
        input_size = 128

    class BlazeLike:
        config = Config()

    class FixedInput:
        input_size = (320, 240)

    assert input_size_of(BlazeLike(), (640, 480)) == (128, 128)
    assert input_size_of(FixedInput(), (640, 480)) == (320, 240)
    assert input_size_of(object(), (640, 480)) == (640, 480)  # runs at the frame's size
    assert detector_name(parse_detector("short"), (128, 128)) == "short 128x128"
    assert detector_name(parse_detector("yunet"), (640, 480), mirrored=True) == "yunet 640x480 + mirror"
    assert (detector_name(parse_detector("yunet:m/y.onnx,score_threshold=0.6"), (640, 480))
            == "yunet 640x480 (y.onnx) score_threshold=0.6")


@pytest.mark.parametrize(("w", "h", "scale"), [(640, 480, 1.0), (400, 300, 1.6), (320, 120, 2.0), (1280, 960, 0.5)])
def test_fill_scales_photos_up_or_down_to_fill_the_frame(w, h, scale):
    assert frame_scale(w, h, (640, 480), fit="fill") == pytest.approx(scale)


def test_fill_places_the_enlarged_photo_and_counts_no_face_the_import_skips():
    from train.scenes.voc_scenes import place_on_frame

    photo = np.full((150, 200, 3), 200, np.uint8)
    frame, scale = place_on_frame(photo, (640, 480), fit="fill")
    assert scale == pytest.approx(3.2) and frame.shape == (480, 640, 3)
    assert frame[479, 639].tolist() == [200, 200, 200]  # 200x150 fills 640x480 exactly
    objects = [VocObject("without_mask", (10, 10, 20, 20)),  # 10 px in the photo, 32 px on the frame
               VocObject("with_mask", (50, 50, 70, 70))]  # 20 px -> 64 px
    faces, left_out = truth_faces(objects, scale, (200, 150))
    assert [f.counted for f in faces] == [False, True]
    assert left_out == {"too_small": 1}
    assert faces[1].size == pytest.approx(64.0)


def test_an_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit must be one of shrink, fill"):
        frame_scale(400, 300, (640, 480), fit="zoom")


def test_a_face_split_between_the_alert_labels_is_flagged_as_the_daemon_would():
    from train.scenes.runner import alert_flags

    labels = ("with_mask", "without_mask", "incorrect_mask")
    probs = np.array([[0.4, 0.3, 0.3],    # 0.6 alert in all: flagged at 0.5, though no alert label leads
                      [0.6, 0.2, 0.2],    # 0.4: not flagged
                      [0.1, 0.9, 0.0]], np.float32)
    assert alert_flags(probs, labels, ("without_mask", "incorrect_mask"), 0.5).tolist() == [True, False, True]
    assert alert_flags(probs, labels, ("without_mask",), 0.5).tolist() == [False, False, True]
    two = np.array([[0.3, 0.7], [0.8, 0.2]], np.float32)
    assert alert_flags(two, ("with_mask", "without_mask"), ("without_mask",), 0.289).tolist() == [True, False]


def test_wilson_interval_matches_scipy_and_refuses_impossible_counts():
    """Reference values from scipy 1.17 (``binomtest(k, n).proportion_ci(0.95, "wilson")``),
    which the Pi env these tests also run in does not have."""
    scipy_wilson = {(77, 82): (0.8650795049984596, 0.973676044932184),
                    (428, 474): (0.8729755163839168, 0.9264528148093842),
                    (4, 7): (0.2504583645276572, 0.8417801447485302),
                    (0, 10): (0.0, 0.27753279986288926),
                    (10, 10): (0.7224672001371109, 1.0),
                    (1, 1): (0.20654931437723745, 1.0)}
    for (k, n), want in scipy_wilson.items():
        assert wilson_interval(k, n) == pytest.approx(want, abs=1e-12), (k, n)
    lo, hi = wilson_interval(77, 82)
    assert lo < 77 / 82 < hi  # around the share, and wider with fewer faces:
    assert hi - lo > (lambda i: i[1] - i[0])(wilson_interval(770, 820))
    assert wilson_interval(0, 0) is None
    for k, n in ((-1, 5), (6, 5)):
        with pytest.raises(ValueError, match=f"{k} hits of {n}"):
            wilson_interval(k, n)
