"""A weak box under a face is that face's chin and neck, not a second person."""

from __future__ import annotations

import cv2
import numpy as np

from device.detectors import Face, make_detector
from device.detectors.chins import CHIN_MAX_SCORE, drop_chins, is_chin_of
from device.detectors.mirror import MirroredDetector

FACE = Face((221.0, 47.0, 332.0, 183.0), 0.89)  # demo2.jpg's face, as YuNet boxes it
CHIN = Face((149.0, 142.0, 344.0, 318.0), 0.58)  # and the box YuNet puts over its mask, chin and neck


def test_a_weak_box_starting_inside_a_face_and_reaching_below_it_is_its_chin():
    assert is_chin_of(CHIN, FACE)
    assert drop_chins([FACE, CHIN]) == [FACE]
    assert drop_chins([CHIN, FACE]) == [FACE]  # whatever the order it comes in


def test_boxes_that_are_not_a_chin_stay():
    confident = Face(CHIN.box, CHIN_MAX_SCORE)  # a confident detection is a face wherever it sits
    beside = Face((300.0, 142.0, 420.0, 318.0), 0.58)  # shares 32 columns, under half the narrower box
    above = Face((221.0, 0.0, 332.0, 60.0), 0.58)  # starts above the face: a taller person behind
    inside = Face((230.0, 100.0, 320.0, 180.0), 0.58)  # ends within the face: NMS's business, not ours
    touching = Face((221.0, 183.0, 332.0, 300.0), 0.58)  # starts at the face's bottom edge: the next person
    for box in (confident, beside, above, inside, touching):
        assert not is_chin_of(box, FACE) or box is confident
        assert drop_chins([FACE, box]) == [FACE, box]
    # the stronger of two boxes is never dropped for the weaker one, and nothing is dropped alone
    assert drop_chins([Face(FACE.box, 0.57), CHIN]) == [Face(FACE.box, 0.57), CHIN]
    assert drop_chins([CHIN]) == [CHIN] and drop_chins([]) == []
    assert not is_chin_of(CHIN, Face((0.0, 0.0, 0.0, 0.0), 0.9))  # an empty box


class ScriptedDetector:
    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces

    def detect(self, rgb):
        return list(self.faces)

    def describe(self) -> str:
        return "scripted"


def test_the_mirror_pass_drops_a_chin_the_other_pass_brought():
    # the plain pass finds only the face, the mirror pass only the chin (mirrored back it is CHIN)
    width = 640
    mirrored_chin = Face((width - CHIN.box[2], CHIN.box[1], width - CHIN.box[0], CHIN.box[3]), CHIN.score)

    class TwoPasses(ScriptedDetector):
        calls = 0

        def detect(self, rgb):
            TwoPasses.calls += 1
            return [FACE] if TwoPasses.calls % 2 else [mirrored_chin]

    faces = MirroredDetector(TwoPasses([])).detect(np.zeros((480, width, 3), np.uint8))
    assert [f.box for f in faces] == [FACE.box]


def test_yunet_reports_one_face_on_demo2_where_it_also_boxes_the_chin(shared, yunet_int8_tflite, monkeypatch):
    rgb = cv2.cvtColor(cv2.imread(str(shared / "media" / "demo2.jpg")), cv2.COLOR_BGR2RGB)
    detector = make_detector("yunet", yunet_int8_tflite, min_face=16, num_threads=1, mirror=True)
    faces = detector.detect(rgb)
    assert len(faces) == 1 and faces[0].score > 0.8
    # without the rule the default threshold lets the chin box through, under the face
    import device.detectors.mirror as mirror
    import device.detectors.yunet_litert as yunet_litert

    monkeypatch.setattr(yunet_litert, "drop_chins", lambda faces: faces)
    monkeypatch.setattr(mirror, "drop_chins", lambda faces: faces)
    raw = detector.detect(rgb)
    assert len(raw) == 2
    face, chin = sorted(raw, key=lambda f: -f.score)
    assert chin.score < CHIN_MAX_SCORE and is_chin_of(chin, face)
