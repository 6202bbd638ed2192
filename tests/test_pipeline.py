"""One frame through detect -> filter -> classify -> track, on real faces with the real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.classifier import MaskClassifier
from device.config import TrackerConfig
from device.detectors.base import Face, make_detector
from device.pipeline import Pipeline, filter_faces, keep_face
from device.tracking.tracker import Tracker
from tests.daemon_helpers import Walk, face_photos, render, two_people_walks


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


def test_two_people_walking_make_one_new_and_one_end_each(shared, parts):
    det, clf = parts
    frames = render(face_photos(shared, 2), two_people_walks(), 36)
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


def test_faces_in_an_ignore_region_or_too_small_raise_nothing(shared, parts):
    det, clf = parts
    faces = face_photos(shared, 2)
    walks = two_people_walks()
    frames = render(faces, walks, 36)
    # A poster at the right of the door: person B's centre stays inside it all the way.
    p = Pipeline(det, clf, tracker(), min_face=24, ignore_regions=[(300, 100, 640, 480)])
    events, results = run(p, frames)
    assert [e.type for e in events] == ["new", "end"]
    assert max(r.detected for r in results) == 2 and max(len(r.faces) for r in results) == 1

    far = render(faces, [Walk(face=0, first=0, last=11, x0=200, x1=260, width=100)], 12)
    p = Pipeline(det, clf, tracker(), min_face=130)  # the detector finds these ~110 px faces
    events, results = run(p, far)
    assert all(r.detected == 1 for r in results)
    assert events == [] and all(len(r.faces) == 0 for r in results)


def test_empty_frames_end_people_by_timeout(shared, parts):
    det, clf = parts
    frames = render(face_photos(shared, 1), [Walk(face=0, first=0, last=5, x0=100, x1=160)], 20)
    p = Pipeline(det, clf, tracker(), min_face=24)
    events = []
    for i, f in enumerate(frames):  # 0.2 s apart: gone for 1.2 s > timeout_s 1.0
        events += p.process(f, 1000.0 + i * 0.2).events
    assert [e.type for e in events] == ["new", "end"]
    assert events[1].end_time == pytest.approx(1000.0 + 5 * 0.2)
    assert p.flush(2000.0) == []


def test_pipeline_on_real_photos_counts_their_faces(shared, parts):
    det, clf = parts
    from tests.daemon_helpers import read_rgb

    crowd = read_rgb(Path(shared) / "media" / "pic2.jpg")  # three people
    p = Pipeline(det, clf, tracker(), min_face=24)
    events, results = run(p, [crowd] * 4)
    assert len(results[0].faces) == 3
    assert sum(e.type == "new" for e in events) == 3
