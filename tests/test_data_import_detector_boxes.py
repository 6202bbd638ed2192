"""`maskwatch data import --voc-boxes detector`: VOC faces cut with the detector's boxes.

Generated scenes and a stand-in detector with known boxes (no ../shared, no TensorFlow): the
crop must follow the detector's box where it found the face, keep the annotated box where it
did not, and leave which faces are imported, their groups and sources exactly as an import with
annotated boxes has them (so splits and --split-of work the same).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from device.contract import expand_box
from device.detectors import Face
from device.manifest import read_manifest
from train import cli
from train.data.detector_boxes import DetectorBoxes, pick_boxes
from train.data.imageio import pixels_sha256
from train.data.importer import REPORT, import_sources

from .test_data_import import smooth_image

PHOTO = (320, 240)  # filled onto 640x480: everything on the frame is 2x the photo
FACE_A = (40, 40, 100, 100)  # with_mask: the detector finds it, higher and a little wider
FACE_B = (200, 100, 260, 160)  # no_mask: the detector misses it
FACE_TINY = (10, 10, 14, 14)  # below --min-face: skipped either way
A_IN_PHOTO = (42.0, 28.0, 104.0, 86.0)  # IoU with FACE_A ~0.63


class FixedDetector:
    """Stands in for a face detector: fixed boxes (frame px); remembers the frames it was given."""

    def __init__(self, boxes: list[tuple[float, float, float, float]]):
        self.boxes = boxes
        self.frames: list[tuple[int, ...]] = []

    def detect(self, rgb):
        self.frames.append(rgb.shape)
        return [Face(tuple(float(v) for v in b), 0.9) for b in self.boxes]


def _frame_box(photo_box):
    return tuple(2.0 * v for v in photo_box)


def make_scene(root: Path) -> Path:
    voc = root / "voc"
    (voc / "images").mkdir(parents=True)
    (voc / "annotations").mkdir()
    smooth_image(7, PHOTO).save(voc / "images" / "scene.png")
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in [("with_mask", FACE_A), ("without_mask", FACE_B), ("with_mask", FACE_TINY)])
    (voc / "annotations" / "scene.xml").write_text(
        f"<annotation><filename>scene.png</filename><size><width>{PHOTO[0]}</width><height>{PHOTO[1]}</height>"
        f"</size>{objects}</annotation>")
    return voc


def _crop_sha(voc: Path, box) -> str:
    with Image.open(voc / "images" / "scene.png") as im:
        im = im.convert("RGB")
        return pixels_sha256(im.crop(expand_box(box, 0.2, im.width, im.height)))


def test_crop_follows_the_detector_box_and_a_missed_face_keeps_its_annotated_box(tmp_path):
    voc = make_scene(tmp_path)
    far_away = (500.0, 380.0, 560.0, 440.0)  # found nothing annotated: used for no face
    detector = FixedDetector([_frame_box(A_IN_PHOTO), far_away])
    report = import_sources([voc], tmp_path / "det", min_face=16,
                            voc_boxes=DetectorBoxes(detector, fit="fill", min_face=0))
    assert detector.frames == [(480, 640, 3)]  # the photo as the daemon's 640x480 frame
    rows = {r.source.rsplit("#", 1)[1]: r for r in read_manifest(tmp_path / "det")}
    assert sorted(rows) == ["box0", "box1"] and report.skipped_by_reason == {"too_small": 1}

    assert rows["box0"].sha256 == _crop_sha(voc, A_IN_PHOTO) != _crop_sha(voc, FACE_A)
    x0, y0, x1, y1 = expand_box(A_IN_PHOTO, 0.2, *PHOTO)  # the detected box with the contract's margin
    assert (rows["box0"].width, rows["box0"].height) == (x1 - x0, y1 - y0) == (86, 86)
    with Image.open(tmp_path / "det" / rows["box0"].path) as im:
        assert im.size == (86, 86)
    assert rows["box1"].sha256 == _crop_sha(voc, FACE_B)
    assert (rows["box0"].label, rows["box1"].label) == ("with_mask", "without_mask")
    assert report.voc_face_boxes == {"with_mask": {"annotation": 0, "detector": 1},
                                     "without_mask": {"annotation": 1, "detector": 0}}
    assert report.options["voc_boxes"] == "detector"
    assert report.options["voc_detector"]["fit"] == "fill"
    assert "cut with the detector's box: 1; with the annotated box (the detector missed them): 1" in report.summary()

    # Same faces, sources, names and groups as with the annotated boxes: the split is the same.
    plain = import_sources([voc], tmp_path / "ann", min_face=16)
    ann_rows = {r.source.rsplit("#", 1)[1]: r for r in read_manifest(tmp_path / "ann")}
    assert [(r.path, r.label, r.source, r.group) for r in ann_rows.values()] == \
           [(r.path, r.label, r.source, r.group) for r in rows.values()]
    assert ann_rows["box0"].sha256 == _crop_sha(voc, FACE_A)
    assert plain.options["voc_boxes"] == "annotation"
    assert plain.voc_face_boxes == {"with_mask": {"annotation": 1, "detector": 0},
                                    "without_mask": {"annotation": 1, "detector": 0}}


def test_a_poorly_overlapping_or_filtered_detection_is_not_used(tmp_path):
    voc = make_scene(tmp_path)
    # IoU with FACE_A = 20*60 / (3600 + 3600 - 1200) = 0.2 < 0.3
    poor = _frame_box((80.0, 40.0, 140.0, 100.0))
    report = import_sources([voc], tmp_path / "poor", min_face=16,
                            voc_boxes=DetectorBoxes(FixedDetector([poor]), min_face=0))
    assert report.voc_face_boxes["with_mask"] == {"annotation": 1, "detector": 0}
    # The daemon's face filter applies: a detection under detector.min_face never reaches the classifier.
    good = _frame_box(A_IN_PHOTO)  # 116 px high on the frame
    report = import_sources([voc], tmp_path / "small", min_face=16,
                            voc_boxes=DetectorBoxes(FixedDetector([good]), min_face=200))
    assert report.voc_face_boxes["with_mask"] == {"annotation": 1, "detector": 0}
    assert report.options["voc_detector"]["min_face"] == 200


def test_pick_boxes_is_one_to_one_best_iou_first_and_maps_back_to_the_photo():
    truth = [(0.0, 0.0, 100.0, 100.0), (60.0, 0.0, 160.0, 100.0)]
    # one detection overlapping both (IoU 0.82 with the first, 0.33 with the second) and one elsewhere
    detections = [(10.0, 0.0, 110.0, 100.0), (400.0, 400.0, 420.0, 420.0)]
    assert pick_boxes(truth, detections, scale=2.0) == [(5.0, 0.0, 55.0, 50.0), None]
    # one-to-one: the second face wins the detection (IoU 0.82); the first (IoU 0.67) gets none
    truth = [(0.0, 0.0, 100.0, 100.0), (30.0, 0.0, 130.0, 100.0)]
    assert pick_boxes(truth, [(20.0, 0.0, 120.0, 100.0)], scale=1.0) == [None, (20.0, 0.0, 120.0, 100.0)]
    assert pick_boxes(truth, [], scale=1.0) == [None, None]


def test_cli_needs_a_detector_for_detector_boxes_and_names_a_bad_one(tmp_path, capsys):
    voc = make_scene(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["data", "import", str(voc), "--out", str(out), "--voc-boxes", "detector"]) == 2
    assert "--voc-boxes detector needs --detector" in capsys.readouterr().err
    assert cli.main(["data", "import", str(voc), "--out", str(out), "--voc-boxes", "detector",
                     "--detector", "nosuch:x.onnx"]) == 2
    assert "unknown kind 'nosuch'" in capsys.readouterr().err
    missing = tmp_path / "missing.onnx"
    assert cli.main(["data", "import", str(voc), "--out", str(out), "--voc-boxes", "detector",
                     "--detector", f"yunet:{missing}"]) != 0
    assert "missing.onnx" in capsys.readouterr().err
    assert cli.main(["data", "import", str(voc), "--out", str(out), "--detector", "short"]) == 2
    assert "only with --voc-boxes detector" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["data", "import", str(voc), "--out", str(out)]) == 0
    assert (out / REPORT).exists()


@pytest.mark.parametrize("fit", ["shrink", "fill"])
def test_fit_decides_the_frame(tmp_path, fit):
    voc = make_scene(tmp_path)
    scale = 2.0 if fit == "fill" else 1.0  # a 320x240 photo is never enlarged by shrink
    detector = FixedDetector([tuple(scale * v for v in A_IN_PHOTO)])
    report = import_sources([voc], tmp_path / fit, min_face=16, voc_boxes=DetectorBoxes(detector, fit=fit, min_face=0))
    assert report.voc_face_boxes["with_mask"] == {"annotation": 0, "detector": 1}
    rows = {r.source.rsplit("#", 1)[1]: r for r in read_manifest(tmp_path / fit)}
    assert rows["box0"].sha256 == _crop_sha(voc, A_IN_PHOTO)
