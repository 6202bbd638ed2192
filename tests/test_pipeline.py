"""One frame through detect -> filter -> classify -> track, on real faces (the public-domain
portraits of ``maskwatch data synth``, pasted into generated frames) with the real models."""

from __future__ import annotations

import numpy as np
import pytest

from device.classifier import MaskClassifier
from device.config import TrackerConfig
from device.detectors import Face, make_detector
from device.pipeline import Pipeline, filter_faces, keep_face
from device.tracking.tracker import Tracker
from train.data.walks import Walk, background, paste, render, two_people_walks


def test_keep_face_by_size_and_ignore_region_centre():
    assert keep_face((0, 0, 30, 40), min_face=30, ignore_regions=[])
    assert not keep_face((0, 0, 29, 40), min_face=30, ignore_regions=[])  # the shorter side counts
    poster = [(100, 100, 200, 200)]
    assert not keep_face((90, 90, 150, 150), 0, poster)  # centre (120, 120) inside
    assert keep_face((0, 0, 150, 150), 0, poster)  # overlaps, but centre (75, 75) outside
    faces = [Face((0, 0, 50, 50), 0.9), Face((120, 120, 160, 160), 0.8), Face((0, 0, 10, 10), 0.7)]
    assert filter_faces(faces, 20, poster) == faces[:1]


@pytest.fixture(scope="module")
def parts(detector_model, tiny_classifier):
    det = make_detector("short", detector_model, min_face=0, num_threads=1)
    clf = MaskClassifier(tiny_classifier, num_threads=1)
    return det, clf


def run(pipeline: Pipeline, frames: list[np.ndarray], dt: float = 0.1):
    events, results = [], []
    for i, f in enumerate(frames):
        r = pipeline.process(f, 1000.0 + i * dt)
        results.append(r)
        events += r.events
    events += pipeline.flush(1000.0 + len(frames) * dt)
    return events, results


def tracker(threshold: float = 0.0) -> Tracker:
    # threshold 0: every person is "without_mask", whatever the random tiny model says.
    return Tracker(TrackerConfig(evidence_frames=2, timeout_s=1.0), ["with_mask", "without_mask"], "without_mask",
                   threshold)


def test_two_people_walking_make_one_new_and_one_end_each(faces, parts):
    det, clf = parts
    frames = render(faces, two_people_walks(), 36)
    p = Pipeline(det, clf, tracker(), min_face=24)
    events, results = run(p, frames)
    new = [e for e in events if e.type == "new"]
    end = [e for e in events if e.type == "end"]
    assert len(new) == 2 and len({e.track_id for e in new}) == 2
    assert sorted(e.track_id for e in end) == sorted(e.track_id for e in new)
    assert all(e.label == "without_mask" for e in events)
    two = [r for r in results if len(r.faces) == 2]
    assert len(two) >= 10  # both people in view at once for a while
    assert two[0].probs.shape == (2, 2) and two[0].alert_scores.shape == (2,)
    np.testing.assert_allclose(two[0].probs.sum(axis=1), 1.0, atol=0.02)
    assert set(results[0].timings_ms) == {"detect", "classify", "track"}
    # The second person starts right of the first: the new events' boxes say so.
    first, second = sorted(new, key=lambda e: e.track_id)
    assert first.box[0] < second.box[0]


def test_faces_in_an_ignore_region_or_too_small_raise_nothing(faces, parts):
    det, clf = parts
    walks = two_people_walks()
    frames = render(faces, walks, 36)
    # A poster at the right of the door: person B's centre stays inside it all the way.
    p = Pipeline(det, clf, tracker(), min_face=24, ignore_regions=[(300, 100, 640, 480)])
    events, results = run(p, frames)
    assert [e.type for e in events] == ["new", "end"]
    assert max(r.detected for r in results) == 2 and max(len(r.faces) for r in results) == 1

    far = render(faces, [Walk(face=0, first=0, last=11, x0=200, x1=260, width=130)], 12)
    p = Pipeline(det, clf, tracker(), min_face=130)  # the detector finds these faces, ~95 px
    events, results = run(p, far)
    assert all(r.detected == 1 for r in results)
    assert events == [] and all(len(r.faces) == 0 for r in results)


def test_empty_frames_end_people_by_timeout(faces, parts):
    det, clf = parts
    frames = render(faces[:1], [Walk(face=0, first=0, last=5, x0=100, x1=160)], 20)
    p = Pipeline(det, clf, tracker(), min_face=24)
    events = []
    for i, f in enumerate(frames):  # 0.2 s apart: gone for 1.2 s > timeout_s 1.0
        events += p.process(f, 1000.0 + i * 0.2).events
    assert [e.type for e in events] == ["new", "end"]
    assert events[1].end_time == pytest.approx(1000.0 + 5 * 0.2)
    assert p.flush(2000.0) == []


def test_pipeline_counts_three_people_standing_in_one_frame(faces, parts):
    det, clf = parts
    group = background(5)
    # The third person is the first one mirrored: three different faces to the detector.
    for face, x in zip((faces[0], faces[1], faces[0][:, ::-1]), (20, 230, 440), strict=True):
        paste(group, face, x, 150, 170)
    p = Pipeline(det, clf, tracker(), min_face=24)
    events, results = run(p, [group] * 4)
    assert len(results[0].faces) == 3
    assert sum(e.type == "new" for e in events) == 3


# --------------------------------------------------------------------------------------------
# Bounds on one frame: faces per frame, frame size (no faces from ../shared needed: the
# detector is scripted, the classifier is the real tiny int8 model)
# --------------------------------------------------------------------------------------------


class ScriptedDetector:
    """Returns ``faces(view)`` for every frame and remembers the shape of each picture it saw."""

    def __init__(self, faces):
        self.faces = faces
        self.seen: list[tuple[int, ...]] = []

    def detect(self, rgb):
        self.seen.append(rgb.shape)
        return self.faces(rgb)


class CountingClassifier:
    """The real classifier, recording the batch size and picture of every call."""

    def __init__(self, clf: MaskClassifier):
        self.clf, self.card = clf, clf.card
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def classify(self, rgb, boxes):
        self.calls.append((len(boxes), rgb.shape))
        return self.clf.classify(rgb, boxes)

    def alert_scores(self, probs):
        return self.clf.alert_scores(probs)


def test_a_crowd_is_capped_to_max_faces_largest_first(tiny_classifier):
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 440, (500, 2)).astype(float)  # top-left corners inside the frame
    sides = rng.permutation(np.arange(10, 510)).astype(float)  # 500 faces, all sizes different
    crowd = [Face((x, y, x + s, y + s), 0.9) for (x, y), s in zip(xy, sides, strict=True)]
    clf = CountingClassifier(MaskClassifier(tiny_classifier, num_threads=1))
    p = Pipeline(ScriptedDetector(lambda rgb: crowd), clf, tracker(), max_faces=16)
    r = p.process(np.zeros((480, 640, 3), np.uint8), 1000.0)
    assert r.detected == 500 and len(r.faces) == 16 and r.probs.shape == (16, 2)
    assert clf.calls == [(16, (480, 640, 3))]
    kept = sorted(f.box[2] - f.box[0] for f in r.faces)
    assert kept == sorted(sides)[-16:]  # the 16 largest
    assert [f for f in crowd if f in r.faces] == r.faces  # in the detector's order
    assert clf.clf._batch == 16  # the interpreter was never resized to the crowd
    # The config's default: 64, within 1..256.
    from device.config import config_from_dict

    assert config_from_dict({}, env={}).detector.max_faces == 64
    with pytest.raises(ValueError, match="detector.max_faces"):
        config_from_dict({"detector": {"max_faces": 0}}, env={})


class BigPhotos:
    """A camera source handing out ``n`` frames of ``shape`` (a 12 MP photo folder, say)."""

    name, live = "big-photos", False

    def __init__(self, shape: tuple[int, int, int], n: int):
        self.shape, self.n, self.read_count = shape, n, 0

    def open(self) -> None:
        pass

    def read(self):
        self.read_count += 1
        return np.full(self.shape, 90, np.uint8) if self.read_count <= self.n else None

    def close(self) -> None:
        pass


def captured(shape: tuple[int, int, int], n: int, **camera) -> list:
    """The frames the daemon's grabber hands over for a source of ``shape`` frames."""
    from device.camera.capture import LatestFrameGrabber
    from device.config import CameraConfig

    grabber = LatestFrameGrabber(CameraConfig(realtime=False, **camera), source_factory=lambda: BigPhotos(shape, n))
    grabber.start()
    try:
        frames = [grabber.get(timeout=10.0) for _ in range(n)]
    finally:
        grabber.stop()
    assert all(f is not None for f in frames)
    return frames


def test_a_frame_larger_than_the_capture_size_is_downscaled_on_capture_and_boxes_scaled_back(tiny_classifier):
    frames = captured((3000, 4000, 3), 3, width=640, height=480)
    assert [(f.rgb.shape, f.scale) for f in frames] == [((480, 640, 3), (0.16, 0.16))] * 3
    # The detector finds a face at (100, 50)-(200, 150) in whatever picture it is given.
    det = ScriptedDetector(lambda rgb: [Face((100.0, 50.0, 200.0, 150.0), 0.9)])
    clf = CountingClassifier(MaskClassifier(tiny_classifier, num_threads=1))
    p = Pipeline(det, clf, tracker())
    events = []
    for i, f in enumerate(frames):
        r = p.process(f.rgb, 1000.0 + i * 0.1, f.scale)
        events += r.events
    assert det.seen == [(480, 640, 3)] * 3  # detected at the capture size
    assert clf.calls == [(1, (480, 640, 3))] * 3  # and cropped from it
    assert r.view is frames[-1].rgb and r.scale == (0.16, 0.16)
    np.testing.assert_allclose(r.view_boxes, [[100, 50, 200, 150]])
    np.testing.assert_allclose(r.boxes, [[625, 312.5, 1250, 937.5]], rtol=1e-5)  # in the source's pixels
    assert [e.type for e in events] == ["new"] and events[0].box == (625, 312, 1250, 938)
    assert p.tracker.frame_size == (4000, 3000)
    np.testing.assert_allclose(r.to_view(r.boxes), r.view_boxes, rtol=1e-5)

    # Portrait (a camera on its side) fits the same size turned; a smaller frame is left alone.
    assert [(f.rgb.shape, f.scale) for f in captured((1280, 960, 3), 1)] == [((640, 480, 3), (0.5, 0.5))]
    small = captured((240, 320, 3), 1)[0]
    assert small.rgb.shape == (240, 320, 3) and small.scale == (1.0, 1.0)


def test_fit_size():
    from device.camera.capture import fit_size

    assert fit_size(4000, 3000, (640, 480)) == (640, 480)
    assert fit_size(1920, 1080, (640, 480)) == (640, 360)
    assert fit_size(3000, 4000, (640, 480)) == (480, 640)
    assert fit_size(640, 480, (640, 480)) == (640, 480)
    assert fit_size(5000, 10, (640, 480)) == (640, 1)
