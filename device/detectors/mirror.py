"""Detect on the frame and on its mirror image, keep the union: a face one pass scores just under
the threshold is often over it in the other.

Why: most faces YuNet misses at a door are masked faces it sees but scores 0.1-0.6 (masks,
glasses, bowed heads; it learnt faces on WIDER FACE, nearly all unmasked). Looking at the
mirror image too found 1.5-3 points more faces on the faces-voc val and test scenes for twice
the detection time (README, "Finding the faces"), where lowering the threshold instead brings
mostly false detections.

The two lists are merged the way the detectors themselves merge overlapping boxes
(``cv2.dnn.NMSBoxes``, highest score first), so a face both passes find is reported once, and
a weak box under a face is dropped as its chin (:mod:`device.detectors.chins`) as each pass does.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.contract import cv_view
from device.detectors.base import Face, FaceDetector, check_frame
from device.detectors.chins import drop_chins

#: Keypoint order after mirroring (base.KEYPOINT_NAMES): the subject's right eye becomes the
#: image's left one, so right/left pairs swap places.
MIRRORED_KEYPOINTS = (1, 0, 2, 3, 5, 4)


def mirror_face(face: Face, width: int) -> Face:
    """``face`` found on the mirror image of a frame ``width`` px wide, in the frame's pixels."""
    x0, y0, x1, y1 = face.box
    keypoints = None
    if face.keypoints is not None:
        keypoints = face.keypoints[list(MIRRORED_KEYPOINTS)].copy()
        keypoints[:, 0] = width - keypoints[:, 0]
    return Face((width - x1, y0, width - x0, y1), face.score, keypoints)


def merge_faces(faces: list[Face], iou_threshold: float) -> list[Face]:
    """Overlapping faces (IoU above ``iou_threshold``) reduced to the highest-scoring one, by
    score, highest first."""
    if not faces:
        return []
    boxes = [[f.box[0], f.box[1], f.box[2] - f.box[0], f.box[3] - f.box[1]] for f in faces]
    scores = [float(f.score) for f in faces]
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, 0.0, float(iou_threshold))).reshape(-1)
    return sorted((faces[int(i)] for i in keep), key=lambda f: f.score, reverse=True)


class MirroredDetector:
    """Wraps any :class:`FaceDetector`: both passes, one merged list."""

    def __init__(self, inner: FaceDetector, iou_threshold: float = 0.3) -> None:
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must be within (0, 1], got {iou_threshold!r}")
        self.inner = inner
        self.iou_threshold = float(iou_threshold)

    def __getattr__(self, name: str):
        # input_size, config, min_face, card...: what callers read off the detector it wraps.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        check_frame(rgb)
        width = rgb.shape[1]
        faces = list(self.inner.detect(rgb))
        # cv2.flip: ~0.1 ms for a 640x480 frame where numpy's copy of a reversed view takes ~1 ms
        faces += [mirror_face(f, width) for f in self.inner.detect(cv2.flip(cv_view(rgb), 1))]
        return drop_chins(merge_faces(faces, self.iou_threshold))

    def describe(self) -> str:
        return f"{self.inner.describe()} + mirror"

    def __repr__(self) -> str:
        return f"MirroredDetector({self.inner!r})"
