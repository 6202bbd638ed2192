"""One frame through the device: detect -> filter -> classify -> track.

Pure of I/O (no camera, no MQTT, no files) so the daemon, the benchmark and the tests run the
very same code; the daemon adds the capture before and the publishing after. Timings are
measured per stage with a monotonic clock and returned in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Region = tuple[float, float, float, float]


def in_region(x: float, y: float, region: Region) -> bool:
    x0, y0, x1, y1 = region
    return min(x0, x1) <= x <= max(x0, x1) and min(y0, y1) <= y <= max(y0, y1)


def keep_face(box: Sequence[float], min_face: int, ignore_regions: Sequence[Region]) -> bool:
    """A face is kept when its shorter side is at least ``min_face`` px and its centre lies
    outside every ignore region (a poster or a TV screen in view raises no alerts)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if min(x1 - x0, y1 - y0) < min_face:
        return False
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return not any(in_region(cx, cy, r) for r in ignore_regions)


def filter_faces(faces: Sequence[Any], min_face: int, ignore_regions: Sequence[Region]) -> list[Any]:
    """Faces (anything with ``.box``) that :func:`keep_face` keeps, in their order."""
    return [f for f in faces if keep_face(f.box, min_face, ignore_regions)]


@dataclass
class FrameResult:
    faces: list[Any]  # kept faces (detector Face objects)
    detected: int  # before filtering
    probs: np.ndarray  # (N, labels)
    alert_scores: np.ndarray  # (N,)
    events: list[Any]  # tracker events of this frame
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def boxes(self) -> np.ndarray:
        return np.array([f.box for f in self.faces], dtype=np.float32).reshape(-1, 4)


class Pipeline:
    """Detector, classifier and tracker wired together for one frame at a time."""

    def __init__(self, detector: Any, classifier: Any, tracker: Any, *, min_face: int = 0,
                 ignore_regions: Sequence[Region] = (), clock: Callable[[], float] = time.perf_counter):
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.min_face = int(min_face)
        self.ignore_regions = [tuple(float(v) for v in r) for r in ignore_regions]
        self.clock = clock
        self.labels = list(classifier.card.labels)
        self.n_labels = len(self.labels)
        self.alert_index = self.labels.index(classifier.card.alert_label)

    def process(self, rgb: np.ndarray, now: float) -> FrameResult:
        """Run one frame taken at wall time ``now`` (what the tracker's timeouts count in)."""
        t0 = self.clock()
        detected = self.detector.detect(rgb)
        faces = filter_faces(detected, self.min_face, self.ignore_regions)
        t1 = self.clock()
        boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        if len(faces):
            probs = self.classifier.classify(rgb, boxes)  # every face of the frame in one batch
            scores = self.classifier.alert_scores(probs)
        else:
            probs = np.zeros((0, self.n_labels), np.float32)
            scores = np.zeros((0,), np.float32)
        t2 = self.clock()
        size = (rgb.shape[1], rgb.shape[0])
        if self.n_labels > 2 and len(faces):
            # Three labels: the tracker smooths P(alert) and votes on which other label it is.
            other = [i for i in range(self.n_labels) if i != self.alert_index]
            picks = np.asarray(other)[np.argmax(probs[:, other], axis=1)]
            events = list(self.tracker.update(boxes, scores, now, other_labels=[self.labels[i] for i in picks],
                                              frame_size=size))
        else:
            events = list(self.tracker.update(boxes, scores, now, frame_size=size))
        t3 = self.clock()
        timings = {"detect": (t1 - t0) * 1e3, "classify": (t2 - t1) * 1e3, "track": (t3 - t2) * 1e3}
        return FrameResult(faces, len(detected), probs, scores, events, timings)

    def expire(self, now: float) -> list[Any]:
        """No frame this time: the ``end`` events of people not seen for the tracker's timeout."""
        return list(self.tracker.expire(now))

    def flush(self, now: float) -> list[Any]:
        """End every open track (clean shutdown): their ``end`` events."""
        return list(self.tracker.flush(now))

    @property
    def tracks(self) -> list[Any]:
        """The tracker's active tracks (``id``, ``label``, ...; tentative ones have label None)."""
        return self.tracker.tracks
