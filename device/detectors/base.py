"""What every face detector returns: the interface the daemon, the CLI and the benchmarks see.

They only see :class:`Face` and :class:`FaceDetector`, so a detector can be swapped by name
(``yunet``, ``short``, ``full``; :func:`device.detectors.factory.make_detector`) without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: Detector kinds :func:`make_detector` understands.
KINDS: tuple[str, ...] = ("short", "full", "yunet")
#: YuNet finds ~0.9 of the faces at a door (BlazeFace short range ~0.35, full range ~0.5) and,
#: converted to int8 TFLite, costs ~2-3 ms per 640x480 frame on two cores. Short range stays for
#: close-up kiosks (faces filling the frame), where it is cheaper still.
DEFAULT_KIND = "yunet"
#: Detect on the mirror image too and keep the union (device/detectors/mirror.py): on the faces-voc
#: scenes it finds 1.5-3 points more faces, most of them masked, for twice the detection time.
DEFAULT_MIRROR = True

#: Names of the six keypoints, in the order of :attr:`Face.keypoints` (MediaPipe's order;
#: "right" and "left" are the subject's, so in a non-mirrored photo the right eye has the
#: smaller x).
KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion",
)


@dataclass(frozen=True)
class Face:
    """One detected face in frame pixels.

    ``keypoints`` is left out of equality and hashing: numpy arrays have neither, and two
    detections with the same box and score are the same face for every consumer we have.
    """

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    keypoints: np.ndarray | None = field(default=None, compare=False)  # (6, 2) float32, may hold NaN

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB frame, sorted by score, highest first."""
        ...

    def describe(self) -> str:
        """Which detector at which input size, e.g. ``yunet-litert 640x480 float32``, for
        benchmark tables and logs."""
        ...


def check_frame(rgb: np.ndarray) -> None:
    """Reject what would otherwise fail deep inside OpenCV with an unreadable message."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}".strip()
        raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got {got}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"frame is empty: shape {rgb.shape}")
