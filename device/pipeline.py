"""One frame through the device: detect -> filter -> cap -> classify -> track.

Pure of I/O (no camera, no MQTT, no files) so the daemon, the benchmark and the tests run the
very same code; the daemon adds the capture before and the publishing after. Timings are
measured per stage with a monotonic clock and returned in milliseconds.

Two bounds keep one odd frame from costing the Pi its memory or its frame rate:

* a frame larger than the configured capture size (a USB camera that ignored the requested
  size, a 12 MP photo in an image folder) arrives downscaled to fit it
  (:func:`device.camera.capture.fit_frame`, in the capture thread, so the big picture is let
  go at once) together with its ``scale``; the detector and the classifier work on that
  picture and the boxes are scaled back, so the tracker and the events speak the source
  frame's own pixels;
* at most ``max_faces`` faces per frame reach the classifier, the largest first (a crowd, or a
  detector gone wild on a patterned wall, must not make a batch of 500).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.decision import alert_score
from device.detectors.face_box import calibration_of

Region = tuple[float, float, float, float]


def in_region(x: float, y: float, region: Region) -> bool:
    x0, y0, x1, y1 = region
    return min(x0, x1) <= x <= max(x0, x1) and min(y0, y1) <= y <= max(y0, y1)


def keep_face(box: Sequence[float], min_face: int, ignore_regions: Sequence[Region],
              entrance: Region | None = None) -> bool:
    """A face is kept when its shorter side is at least ``min_face`` px, its centre lies
    outside every ignore region (a poster or a TV screen in view raises no alerts) and, when an
    ``entrance`` region is set, inside it (people passing behind the door do not count)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if min(x1 - x0, y1 - y0) < min_face:
        return False
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if entrance is not None and not in_region(cx, cy, entrance):
        return False
    return not any(in_region(cx, cy, r) for r in ignore_regions)


def filter_faces(faces: Sequence[Any], min_face: int, ignore_regions: Sequence[Region],
                 entrance: Region | None = None) -> list[Any]:
    """Faces (anything with ``.box``) that :func:`keep_face` keeps, in their order."""
    return [f for f in faces if keep_face(f.box, min_face, ignore_regions, entrance)]


def largest_faces(faces: Sequence[Any], n: int | None) -> list[Any]:
    """At most ``n`` faces (anything with ``.box``): the largest by box area, in their order."""
    if n is None or len(faces) <= n:
        return list(faces)
    areas = [max(0.0, f.box[2] - f.box[0]) * max(0.0, f.box[3] - f.box[1]) for f in faces]
    keep = sorted(sorted(range(len(faces)), key=lambda i: -areas[i])[:n])
    return [faces[i] for i in keep]


@dataclass
class FrameResult:
    faces: list[Any]  # kept faces (detector Face objects), boxes in the source frame's pixels
    detected: int  # before filtering and the max_faces cap
    probs: np.ndarray  # (N, labels)
    alert_scores: np.ndarray  # (N,)
    events: list[Any]  # tracker events of this frame
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The picture the detector and the classifier saw (the downscaled frame, if it was).
    view: np.ndarray | None = None
    #: The kept faces' boxes in :attr:`view`'s pixels (N,4).
    view_boxes: np.ndarray | None = None
    #: view pixels per source-frame pixel along x and y (1.0 when it was not downscaled).
    scale: tuple[float, float] = (1.0, 1.0)
    #: Every detected face's box in :attr:`view`'s pixels, also those filtered out (N,4): the web
    #: page pixelates all of them, a face in an ignore region (a mirror) included.
    detected_boxes: np.ndarray | None = None
    #: The boxes the classifier cropped, in :attr:`view`'s pixels (N,4): :attr:`view_boxes` moved
    #: by the detector's box calibration (what a saved uncertain crop must show, to train on).
    crop_boxes: np.ndarray | None = None

    @property
    def boxes(self) -> np.ndarray:
        return np.array([f.box for f in self.faces], dtype=np.float32).reshape(-1, 4)

    def to_view(self, boxes: Any) -> np.ndarray:
        """Boxes (N,4) in the frame's pixels as boxes in :attr:`view`'s pixels."""
        sx, sy = self.scale
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)


class Pipeline:
    """Detector, classifier and tracker wired together for one frame at a time.

    ``max_faces`` caps the faces classified per frame (None: no cap; the daemon passes
    ``detector.max_faces``).
    """

    def __init__(self, detector: Any, classifier: Any, tracker: Any, *, min_face: int = 0,
                 ignore_regions: Sequence[Region] = (), max_faces: int | None = None,
                 clock: Callable[[], float] = time.perf_counter, entrance_region: Region | None = None):
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces!r}")
        self.detector = detector
        self.classifier = classifier
        #: Moves the detector's boxes onto the face the classifier was trained to see (crops only).
        self.crop_calibration = calibration_of(detector)
        self.tracker = tracker
        self.min_face = int(min_face)
        self.set_zones(ignore_regions, entrance_region)
        self.max_faces = max_faces
        self.clock = clock
        self.labels = list(classifier.card.labels)
        self.n_labels = len(self.labels)
        self.alert_index = self.labels.index(classifier.card.alert_label)
        #: The labels whose summed probability is the alert score (the tracker's, else the card's).
        alerts = getattr(tracker, "alert_labels", None) or classifier.card.alerts
        self.alert_indices = [self.labels.index(lb) for lb in alerts]

    def process(self, rgb: np.ndarray, now: float, scale: tuple[float, float] = (1.0, 1.0)) -> FrameResult:
        """Run one frame taken at wall time ``now`` (what the tracker's timeouts count in).

        ``scale``: ``rgb``'s pixels per pixel of the source frame along x and y, when it was
        downscaled on capture (:attr:`device.camera.capture.Frame.scale`); boxes handed to the
        tracker, and so the events' boxes, are in the source frame's pixels.
        """
        t0 = self.clock()
        detected = self.detector.detect(rgb)
        regions = self._regions(scale, [*self.ignore_regions, *([self.entrance_region] if self.entrance_region else [])])
        entrance = regions.pop() if self.entrance_region else None
        faces = largest_faces(filter_faces(detected, self.min_face, regions, entrance), self.max_faces)
        t1 = self.clock()
        view_boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        crop_boxes = self.crop_calibration.apply(view_boxes)
        if len(faces):
            # every face of the frame in one batch, each cropped where the training faces were
            probs = self.classifier.classify(rgb, crop_boxes)
            scores = alert_score(probs, self.alert_indices)
        else:
            probs = np.zeros((0, self.n_labels), np.float32)
            scores = np.zeros((0,), np.float32)
        t2 = self.clock()
        if scale != (1.0, 1.0):
            faces = [_scaled_face(f, 1.0 / scale[0], 1.0 / scale[1]) for f in faces]
        boxes = view_boxes if scale == (1.0, 1.0) else np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        size = (round(rgb.shape[1] / scale[0]), round(rgb.shape[0] / scale[1]))
        if self.n_labels > 2 and len(faces):
            # Three labels: the tracker smooths P(alert) and each label's probability, which
            # picks the label within the alert and the non-alert group.
            events = list(self.tracker.update(boxes, scores, now, frame_size=size, label_probs=probs))
        else:
            events = list(self.tracker.update(boxes, scores, now, frame_size=size))
        t3 = self.clock()
        timings = {"detect": (t1 - t0) * 1e3, "classify": (t2 - t1) * 1e3, "track": (t3 - t2) * 1e3}
        detected_boxes = np.array([f.box for f in detected], dtype=np.float32).reshape(-1, 4)
        return FrameResult(faces, len(detected), probs, scores, events, timings, rgb, view_boxes, scale,
                           detected_boxes, crop_boxes)

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

    def set_zones(self, ignore_regions: Sequence[Region], entrance_region: Region | None = None) -> None:
        """Replace the ignore regions and the entrance region (frame pixels); the web page's zone
        editor has the daemon call this between two frames, so no restart is needed."""
        self.ignore_regions = [tuple(float(v) for v in r) for r in ignore_regions]
        self.entrance_region = None if entrance_region is None else tuple(float(v) for v in entrance_region)

    @staticmethod
    def _regions(scale: tuple[float, float], regions: Sequence[Region]) -> list[Region]:
        """Regions (frame pixels) in the pixels of the detector's view."""
        if scale == (1.0, 1.0):
            return list(regions)
        sx, sy = scale
        return [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in regions]


def _scaled_face(face: Any, sx: float, sy: float) -> Any:
    """A detector Face with its box (and keypoints) multiplied by (sx, sy)."""
    x0, y0, x1, y1 = face.box
    kp = getattr(face, "keypoints", None)
    if kp is not None:
        kp = np.asarray(kp, dtype=np.float32) * np.array([sx, sy], np.float32)
    return dataclasses.replace(face, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy), keypoints=kp)
