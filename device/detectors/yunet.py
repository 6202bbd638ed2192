"""YuNet (OpenCV's FaceDetectorYN) behind the same :class:`FaceDetector` interface.

The path for the zoo's ONNX file as it is: only OpenCV needed, no conversion, but about twice
as slow as the converted model on LiteRT (:mod:`device.detectors.yunet_litert`). YuNet gives
five landmarks (eyes, nose tip, mouth corners); they are mapped onto BlazeFace's six (mouth
centre = mean of the corners, ears unknown = NaN).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.detectors.base import Face, check_frame
from device.detectors.chins import drop_chins
from device.detectors.face_box import BoxCalibration

#: OpenCV's model-zoo demo uses 0.9, but masked faces score lower: on 300 faces-voc scenes
#: recall of masked faces >= 40 px is 0.45 at 0.9 and 0.93 at 0.7. On the faces-voc val scenes
#: (`python -m benchmarks.scenes --split val`: int8 640x480, mirror pass, the 3-label classifier)
#: 0.6 / 0.55 / 0.5 find 0.901 / 0.914 / 0.920 of the faces (masked >= 32 px: 0.900 / 0.915 /
#: 0.924) with 74 / 86 / 103 detections that match no annotated face, and flag 70 / 71 / 71 of
#: the 73 no-mask faces (flagged precision 0.97 / 0.96 / 0.95). Half of what 0.55 adds beyond 0.6
#: is faces the annotators skipped (small, blurred, in the background), the rest false; the one
#: false box that matters at a door, the chin and neck under a face, is dropped by
#: :mod:`device.detectors.chins`. Below 0.55 the false boxes grow faster than the faces found.
DEFAULT_SCORE_THRESHOLD = 0.55
DEFAULT_TOP_K = 5000
#: YuNet's box against faces-voc's annotated faces (:mod:`device.detectors.face_box`): the face's
#: centre 0.13 of the box's side lower, 0.81 x 0.90 of that side. Fitted on the 2,059 faces YuNet
#: found (int8 640x480, mirror pass) in the faces-voc TRAIN scenes of the benchmark dataset:
#: ``maskwatch evaluate-scenes --split train`` reports it as ``box_calibration``.
BOX_CALIBRATION = BoxCalibration(dx=0.015, dy=0.13, width=0.809, height=0.899)


def yunet_rows_to_faces(rows: np.ndarray | None, width: int, height: int, min_face: int = 0) -> list[Face]:
    """FaceDetectorYN output rows (x, y, w, h, 5 landmarks x/y, score) -> faces, best first.

    Boxes are clipped to the frame like BlazeFace's, so both detectors feed crops the same way.
    """
    if rows is None or len(rows) == 0:
        return []
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
    rows = rows[np.argsort(-rows[:, 14], kind="stable")]
    faces = []
    for r in rows:
        x0 = float(np.clip(r[0], 0, width))
        y0 = float(np.clip(r[1], 0, height))
        x1 = float(np.clip(r[0] + r[2], 0, width))
        y1 = float(np.clip(r[1] + r[3], 0, height))
        if min(x1 - x0, y1 - y0) < max(min_face, 1e-6):
            continue
        lm = r[4:14].reshape(5, 2)
        kps = np.full((6, 2), np.nan, dtype=np.float32)
        kps[0] = lm[0]  # subject's right eye
        kps[1] = lm[1]  # left eye
        kps[2] = lm[2]  # nose tip
        kps[3] = (lm[3] + lm[4]) / 2  # mouth centre from the two corners
        faces.append(Face((x0, y0, x1, y1), float(r[14]), kps))
    return faces


def model_and_threshold(model_path: Path, score_threshold: float | None) -> tuple[Path, float]:
    """The settings both YuNet backends check the same way: the model file exists, and the score
    threshold (None: :data:`DEFAULT_SCORE_THRESHOLD`)."""
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"YuNet model not found: {path}")
    return path, DEFAULT_SCORE_THRESHOLD if score_threshold is None else float(score_threshold)


class YuNetDetector:
    """cv2.FaceDetectorYN created once; its input size follows the frame size."""

    box_calibration = BOX_CALIBRATION

    def __init__(
        self,
        model_path: Path,
        score_threshold: float | None = None,
        min_face: int = 0,
        nms_threshold: float = 0.3,
        top_k: int = DEFAULT_TOP_K,
        num_threads: int | None = None,
    ) -> None:
        self.model_path, self.score_threshold = model_and_threshold(model_path, score_threshold)
        self.min_face = int(min_face)
        if num_threads is not None:
            # OpenCV has one process-wide thread pool; this is the only knob it offers.
            cv2.setNumThreads(int(num_threads))
        self._size = (320, 320)
        # OpenCV 5 warns on every create that its new DNN engine ignores the (default) target;
        # that line is noise for us, so warnings are muted for the call and restored after.
        # OpenCV 4.x wheels (what pip picks beside numpy 1.x, as on a Pi) have no cv2.utils.logging.
        logging_api = getattr(cv2.utils, "logging", None)
        level = logging_api.getLogLevel() if logging_api else None
        if logging_api:
            logging_api.setLogLevel(min(level, logging_api.LOG_LEVEL_ERROR))
        try:
            self._yn = cv2.FaceDetectorYN.create(str(self.model_path), "", self._size,
                                                 self.score_threshold, float(nms_threshold), int(top_k))
        except cv2.error as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise ValueError(f"{self.model_path}: OpenCV cannot load this YuNet model ({msg})") from None
        finally:
            if logging_api:
                logging_api.setLogLevel(level)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        check_frame(rgb)
        h, w = rgb.shape[:2]
        if (w, h) != self._size:
            self._yn.setInputSize((w, h))
            self._size = (w, h)
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        _, rows = self._yn.detect(bgr)
        return drop_chins(yunet_rows_to_faces(rows, w, h, self.min_face))

    def describe(self) -> str:
        # OpenCV runs the network on the frame's own size (padded to a multiple of 32): the
        # size shown is the last frame's.
        w, h = self._size
        return f"yunet-opencv {w}x{h} float32"

    def __repr__(self) -> str:
        return (f"YuNetDetector({self.describe()!r}, model={str(self.model_path)!r}, "
                f"score_threshold={self.score_threshold})")
