"""VOC faces cut with the box the daemon's face detector finds for them (``--voc-boxes detector``).

Why: the classifier only ever sees, on the device, crops around the *detector's* boxes. A
detector draws its boxes its own way (YuNet's take in the forehead: against the faces-voc
annotation their centre sits 0.13 of their side higher and they are ~10 % larger), and misses
a face's edges in its own way from one face to the next. The box calibration
(:mod:`device.detectors.face_box`) takes out the systematic part on the device; the rest is
what a classifier trained on crops around the annotated boxes would meet only there. With this
option the import cuts every annotated face it can with the box the detector finds for it,
exactly as the daemon would get it:

* the scene photo goes on a camera frame the scene benchmark's way
  (:func:`train.scenes.voc_scenes.place_on_frame`, ``fill`` by default: scaled to fill 640x480);
* the detector runs on that frame, then the daemon's face filter (``detector.min_face`` and
  ``ignore_regions``, the config defaults unless given);
* detections are matched to the annotated faces (all of them, tiny ones and unknown classes
  included, so none of them lends its detection to a neighbour) with the scene benchmark's
  matching (:func:`train.scenes.matching.match_faces`: one-to-one, best IoU first, IoU >= 0.3);
* a matched face is cut with its detection (mapped back to photo pixels), moved by the detector's
  box calibration as the daemon moves it before its crops (:mod:`device.detectors.face_box`), and
  the contract's margin; the label stays the annotation's. A face the detector misses keeps its
  annotated box.

Which faces are imported, and their grouping, do not change (see the importer): only the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from train.data import voc
from train.scenes.matching import MATCH_IOU, Box, match_faces
from train.scenes.voc_scenes import FITS, FRAME_SIZE, place_on_frame, truth_faces

#: Where a VOC face's crop box came from (the import report counts faces by these).
FROM_ANNOTATION = "annotation"
FROM_DETECTOR = "detector"
VOC_BOX_SOURCES: tuple[str, ...] = (FROM_ANNOTATION, FROM_DETECTOR)


@dataclass(frozen=True)
class DetectorBoxes:
    """How to find the detector's box of each annotated face.

    ``detector`` is a ``--detector`` setting (``KIND[:MODEL][,OPTION=VALUE]``, as the scene
    benchmark takes it) or a ready detector object (anything with ``detect(rgb) -> faces with
    .box``). ``min_face`` None and ``ignore_regions`` None mean the daemon's config defaults.
    """

    detector: Any
    fit: str = "fill"
    frame_size: tuple[int, int] = FRAME_SIZE
    min_face: int | None = None
    ignore_regions: tuple[tuple[float, float, float, float], ...] | None = None
    threads: int = 1  # per import worker: the import runs one worker process per core
    iou_threshold: float = MATCH_IOU
    _options: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"--detector-fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.min_face is not None and self.min_face < 0:
            raise ValueError(f"--detector-min-face must be >= 0, got {self.min_face}")
        if isinstance(self.detector, str):
            from train.scenes.detector_specs import parse_detector

            parse_detector(self.detector)  # ValueError naming what is wrong, before any work

    def filter_options(self) -> dict[str, Any]:
        """The daemon's face-filter settings (``min_face``, ``ignore_regions``) this import uses."""
        if not self._options:
            from train.scenes.runner import daemon_pipeline_options

            options = daemon_pipeline_options(self.min_face)
            if self.ignore_regions is not None:
                options["ignore_regions"] = [tuple(r) for r in self.ignore_regions]
            self._options.update(options)
        return dict(self._options)

    def describe(self) -> dict[str, Any]:
        """The settings as the import report records them."""
        from device.detectors.face_box import calibration_of

        options = self.filter_options()
        return {"detector": self.detector if isinstance(self.detector, str) else repr(self.detector),
                "fit": self.fit, "frame_size": list(self.frame_size), "match_iou": self.iou_threshold,
                "min_face": options.get("min_face"), "ignore_regions": options.get("ignore_regions", []),
                "box_calibration": calibration_of(detector_of(self)).as_dict()}


#: Detectors built in this process, by setting: each import worker loads its model once.
_BUILT: dict[tuple[str, int, int], Any] = {}


def detector_of(settings: DetectorBoxes) -> Any:
    """The ready detector of ``settings`` (built once per process for a setting's text)."""
    if not isinstance(settings.detector, str):
        return settings.detector
    min_face = int(settings.filter_options().get("min_face", 0))
    key = (settings.detector, min_face, settings.threads)
    if key not in _BUILT:
        from train.scenes.detector_specs import parse_detector

        _BUILT[key] = parse_detector(settings.detector).build(min_face=min_face, num_threads=settings.threads)
    return _BUILT[key]


def pick_boxes(truth: Sequence[Box], detections: Sequence[Box], scale: float,
               iou_threshold: float = MATCH_IOU) -> list[Box | None]:
    """For every annotated face (``truth``, frame px) the detection matched to it, mapped back to
    photo px (frame px / ``scale``), or None when no detection matched it."""
    out: list[Box | None] = [None] * len(truth)
    for t, d in match_faces(truth, detections, iou_threshold):
        out[t] = tuple(float(v) / scale for v in detections[d])  # type: ignore[assignment]
    return out


def detected_boxes(rgb: np.ndarray, objects: Sequence[voc.VocObject], settings: DetectorBoxes
                   ) -> list[Box | None]:
    """For every object of a scene photo (``rgb``, as the import decoded it) the detector's box of
    it in photo px, or None (malformed box, outside the photo, or not found by the detector)."""
    from device.detectors.face_box import calibration_of
    from device.pipeline import filter_faces

    h, w = rgb.shape[:2]
    valid = [k for k, o in enumerate(objects) if o.box is not None and voc.clip_box(o.box, w, h) is not None]
    out: list[Box | None] = [None] * len(objects)
    if not valid:
        return out
    frame, scale = place_on_frame(np.ascontiguousarray(rgb), settings.frame_size, settings.fit)
    options = settings.filter_options()
    detector = detector_of(settings)
    faces = filter_faces(detector.detect(frame), int(options.get("min_face", 0)), options.get("ignore_regions", ()))
    truth, _ = truth_faces([objects[k] for k in valid], scale, (w, h))
    if len(truth) != len(valid):  # truth_faces keeps every valid box; a change there must not mislabel faces
        raise RuntimeError(f"internal error: {len(valid)} annotated boxes but {len(truth)} faces on the frame")
    picked = pick_boxes([t.box for t in truth], [f.box for f in faces], scale, settings.iou_threshold)
    # Matched with the detector's own boxes (as the scene benchmark matches), cut where the
    # daemon cuts its crops: the detector's box calibration applied (device.pipeline).
    found = [(k, box) for k, box in zip(valid, picked, strict=True) if box is not None]
    if found:
        moved = calibration_of(detector).apply(np.array([box for _, box in found]))
        for (k, _), box in zip(found, moved, strict=True):
            out[k] = tuple(float(v) for v in box)
    return out
