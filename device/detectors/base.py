"""What every face detector returns, and the one factory the rest of the device uses.

The daemon, the CLI and the benchmarks only see :class:`Face` and :class:`FaceDetector`, so a
detector can be swapped by name (``short``, ``full``, ``yunet``) without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

#: Detector kinds :func:`make_detector` understands.
KINDS: tuple[str, ...] = ("short", "full", "yunet")
#: YuNet finds ~0.9 of the faces at a door (BlazeFace short range ~0.35, full range ~0.5) and,
#: converted to int8 TFLite, costs ~2-3 ms per 640x480 frame on two cores. Short range stays for
#: close-up kiosks (faces filling the frame), where it is cheaper still.
DEFAULT_KIND = "yunet"

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


def make_detector(
    kind: str = DEFAULT_KIND,
    model_path: Path | None = None,
    score_threshold: float | None = None,
    min_face: int = 0,
    num_threads: int | None = None,
    iou_threshold: float = 0.3,
) -> FaceDetector:
    """A ready detector of ``kind``; ``score_threshold`` None means the model's usual default.

    ``min_face`` drops faces whose box is smaller than that many pixels on its shorter side
    (far-away faces are too small for the mask classifier to judge anyway).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {', '.join(KINDS)}")
    if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(f"score_threshold must be within 0..1, got {score_threshold!r}")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be within (0, 1], got {iou_threshold!r}")
    if min_face < 0:
        raise ValueError(f"min_face must be >= 0, got {min_face!r}")
    if kind == "yunet":
        # The backend follows the file: a converted .tflite runs on LiteRT, the zoo's .onnx on
        # OpenCV's DNN (slower, but needs no conversion).
        if model_path is None:
            from device.detectors.yunet_litert import default_model_path

            model_path = default_model_path()
        if Path(model_path).suffix.lower() == ".onnx":
            from device.detectors.yunet import YuNetDetector

            return YuNetDetector(Path(model_path), score_threshold=score_threshold, min_face=min_face,
                                 nms_threshold=iou_threshold, num_threads=num_threads)
        from device.detectors.yunet_litert import YuNetLiteRTDetector

        return YuNetLiteRTDetector(Path(model_path), score_threshold=score_threshold, min_face=min_face,
                                   nms_threshold=iou_threshold, num_threads=num_threads)

    from device.detectors.blazeface import BlazeFaceDetector

    if model_path is None:
        from device.detectors.model_files import model_path as fetched_model_path

        model_path = fetched_model_path(kind)
    return BlazeFaceDetector(Path(model_path), kind=kind, score_threshold=score_threshold,
                             min_face=min_face, num_threads=num_threads, iou_threshold=iou_threshold)
