"""BlazeFace (MediaPipe's short- and full-range face detectors) on LiteRT with plain numpy.

Per frame: letterbox the frame into the square model input (aspect ratio kept, black bars,
pixels scaled to [-1, 1]), one invoke, then MediaPipe's post-processing: decode boxes and
keypoints relative to the SSD anchors, sigmoid of the clipped logits, score threshold,
weighted non-maximum suppression, and mapping back from the letterboxed square to the frame.
The decode is vectorised over all anchors; only NMS loops, and only over the output faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.contract import cv_view
from device.detectors.anchors import FULL_RANGE, SHORT_RANGE, AnchorOptions, generate_anchors
from device.detectors.base import Face, check_frame
from device.detectors.face_box import IDENTITY, BoxCalibration
from device.runtime import input_info, load_interpreter, output_info

NUM_KEYPOINTS = 6
#: MediaPipe clips raw logits to +-100 before the sigmoid (score_clipping_thresh).
SCORE_CLIP = 100.0
#: Bilinear, as MediaPipe's CPU ImageToTensor. INTER_AREA costs 10x more (about 1 ms for a
#: 640x480 frame into 192x144) and found no more faces on faces-voc.
RESIZE_INTERPOLATION = cv2.INTER_LINEAR


@dataclass(frozen=True)
class BlazeFaceConfig:
    anchors: AnchorOptions
    #: min_score_thresh of MediaPipe's face_detection_{short,full}_range graphs.
    score_threshold: float
    #: Its box against faces-voc's annotated faces (:mod:`device.detectors.face_box`), fitted on
    #: the faces it found (640x480, mirror pass) in the faces-voc TRAIN scenes of the benchmark
    #: dataset (``maskwatch evaluate-scenes --split train``, ``box_calibration``).
    box_calibration: BoxCalibration = IDENTITY

    @property
    def input_size(self) -> int:
        return self.anchors.input_size


CONFIGS: dict[str, BlazeFaceConfig] = {
    "short": BlazeFaceConfig(SHORT_RANGE, score_threshold=0.5,
                             box_calibration=BoxCalibration(dx=0.011, dy=0.067, width=0.878, height=0.993)),
    "full": BlazeFaceConfig(FULL_RANGE, score_threshold=0.6,
                            box_calibration=BoxCalibration(dx=0.013, dy=0.11, width=0.952, height=1.045)),
}


# --------------------------------------------------------------------------------------------
# Letterbox: frame <-> square model input
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where a frame sits inside the square model input (sizes and offsets in input pixels)."""

    size: int
    width: int  # frame
    height: int
    new_width: int  # frame resized, inside the square
    new_height: int
    pad_x: int
    pad_y: int

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Points (..., 2) normalized to the square input (0..1) -> frame pixels."""
        xy = np.asarray(xy, dtype=np.float32)
        sx = self.new_width / self.width
        sy = self.new_height / self.height
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] * self.size - self.pad_x) / sx
        out[..., 1] = (xy[..., 1] * self.size - self.pad_y) / sy
        return out

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixels (..., 2) -> normalized square-input coordinates (inverse of to_frame)."""
        xy = np.asarray(xy, dtype=np.float32)
        sx = self.new_width / self.width
        sy = self.new_height / self.height
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] * sx + self.pad_x) / self.size
        out[..., 1] = (xy[..., 1] * sy + self.pad_y) / self.size
        return out


def letterbox_params(width: int, height: int, size: int) -> Letterbox:
    """Fit a width x height frame into size x size, centred, aspect ratio kept."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    scale = size / max(width, height)
    nw = min(size, max(1, int(round(width * scale))))
    nh = min(size, max(1, int(round(height * scale))))
    return Letterbox(size, width, height, nw, nh, (size - nw) // 2, (size - nh) // 2)


def letterbox(rgb: np.ndarray, size: int, out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """The frame resized into a black size x size uint8 square (``out`` is reused if given)."""
    h, w = rgb.shape[:2]
    lb = letterbox_params(w, h, size)
    if out is None:
        out = np.zeros((size, size, 3), dtype=np.uint8)
    else:
        out.fill(0)
    # Frames with padded rows are used as they are; only views OpenCV rejects (negative or odd
    # strides, e.g. a mirrored frame) are copied.
    resized = cv2.resize(cv_view(rgb), (lb.new_width, lb.new_height), interpolation=RESIZE_INTERPOLATION)
    out[lb.pad_y:lb.pad_y + lb.new_height, lb.pad_x:lb.pad_x + lb.new_width] = resized
    return out, lb


# --------------------------------------------------------------------------------------------
# Decoding and non-maximum suppression (all coordinates normalized to the square input)
# --------------------------------------------------------------------------------------------


def sigmoid_scores(raw_scores: np.ndarray, clip: float = SCORE_CLIP) -> np.ndarray:
    """Scores 0..1 from the model's logits, clipped first as MediaPipe does."""
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(-1), -clip, clip)
    return 1.0 / (1.0 + np.exp(-logits))


def decode(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    input_size: int,
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (M, 4) x0 y0 x1 y1, keypoints (M, 6, 2) and scores (M,) of anchors scoring at least
    ``score_threshold``; coordinates normalized to the model input.

    Each regressor row is (dx, dy, w, h, kx0, ky0, ...) in input pixels: centre and keypoints
    are offsets from the anchor centre, w and h are absolute (anchors are 1x1).
    """
    raw_boxes = np.asarray(raw_boxes, dtype=np.float32).reshape(len(anchors), -1)
    scores = sigmoid_scores(raw_scores)
    keep = np.flatnonzero(scores >= score_threshold)
    sel = raw_boxes[keep] / np.float32(input_size)
    centre = anchors[keep]
    cx = sel[:, 0] + centre[:, 0]
    cy = sel[:, 1] + centre[:, 1]
    half_w = sel[:, 2] / 2
    half_h = sel[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    keypoints = sel[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + centre[:, None, :]
    valid = (half_w > 0) & (half_h > 0)
    return boxes[valid], keypoints[valid], scores[keep][valid].astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one x0 y0 x1 y1 box with each of ``boxes`` (0 when empty)."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Take the best remaining detection, gather every remaining one that overlaps it by more
    than ``iou_threshold`` (itself included), and replace the group by its score-weighted
    mean box and keypoints, keeping the best score. BlazeFace fires on many neighbouring
    anchors per face; averaging them is steadier from frame to frame than keeping one.
    Returns the merged detections sorted by score, highest first.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out_boxes, out_kps, out_scores = [], [], []
    remaining = np.arange(len(scores))
    while remaining.size:
        group = iou(boxes[remaining[0]], boxes[remaining]) > iou_threshold
        group[0] = True  # a degenerate box still stands for itself
        members = remaining[group]
        weights = scores[members].astype(np.float64)
        total = weights.sum()
        out_boxes.append((boxes[members] * weights[:, None]).sum(axis=0) / total)
        out_kps.append((keypoints[members] * weights[:, None, None]).sum(axis=0) / total)
        out_scores.append(scores[remaining[0]])
        remaining = remaining[~group]
    if not out_scores:
        return (np.zeros((0, 4), np.float32), np.zeros((0,) + keypoints.shape[1:], np.float32),
                np.zeros((0,), np.float32))
    return (np.asarray(out_boxes, np.float32), np.asarray(out_kps, np.float32),
            np.asarray(out_scores, np.float32))


def to_faces(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, lb: Letterbox, min_face: int = 0
) -> list[Face]:
    """Normalized detections -> :class:`Face` objects in frame pixels.

    Boxes are clipped to the frame (consumers crop and draw them); keypoints are not, since
    an ear tragion can lie outside a face cut by the frame edge.
    """
    if not len(scores):
        return []
    corners = lb.to_frame(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
    np.clip(corners[:, 0::2], 0, lb.width, out=corners[:, 0::2])
    np.clip(corners[:, 1::2], 0, lb.height, out=corners[:, 1::2])
    kps = lb.to_frame(keypoints)
    faces = []
    for box, kp, score in zip(corners, kps, scores, strict=True):
        if min(box[2] - box[0], box[3] - box[1]) < max(min_face, 1e-6):
            continue
        faces.append(Face(tuple(float(v) for v in box), float(score), kp.astype(np.float32)))
    return faces


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


class BlazeFaceDetector:
    """A MediaPipe BlazeFace model loaded once; :meth:`detect` runs it on one frame."""

    def __init__(
        self,
        model_path: Path,
        kind: str = "short",
        score_threshold: float | None = None,
        min_face: int = 0,
        num_threads: int | None = None,
        iou_threshold: float = 0.3,
    ) -> None:
        if kind not in CONFIGS:
            raise ValueError(f"unknown BlazeFace kind {kind!r}; choose one of {', '.join(CONFIGS)}")
        self.kind = kind
        self.config = CONFIGS[kind]
        self.box_calibration = self.config.box_calibration
        self.model_path = Path(model_path)
        self.score_threshold = self.config.score_threshold if score_threshold is None else float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.min_face = int(min_face)
        self.interpreter, self.backend = load_interpreter(self.model_path, num_threads)
        self.anchors = generate_anchors(self.config.anchors)
        self._check_model()
        size = self.config.input_size
        self._canvas = np.zeros((size, size, 3), dtype=np.uint8)
        self._input = np.zeros((1, size, size, 3), dtype=np.float32)

    def _check_model(self) -> None:
        size = self.config.input_size
        inp = input_info(self.interpreter)
        if inp.shape != (1, size, size, 3) or inp.dtype != np.float32:
            raise ValueError(
                f"{self.model_path}: input is {inp.shape} {inp.dtype}, but the {self.kind!r} BlazeFace "
                f"detector needs (1, {size}, {size}, 3) float32 (wrong model for this kind?)"
            )
        outs = [output_info(self.interpreter, i) for i in range(len(self.interpreter.get_output_details()))]
        n = len(self.anchors)
        reg = [o for o in outs if o.shape == (1, n, 4 + 2 * NUM_KEYPOINTS)]
        cls = [o for o in outs if o.shape == (1, n, 1)]
        if len(reg) != 1 or len(cls) != 1:
            raise ValueError(
                f"{self.model_path}: outputs {[o.shape for o in outs]} do not match the {self.kind!r} "
                f"BlazeFace layout (1, {n}, 16) regressors + (1, {n}, 1) scores (wrong model for this kind?)"
            )
        self._input_index = inp.index
        self._boxes_index = reg[0].index
        self._scores_index = cls[0].index

    def detect(self, rgb: np.ndarray) -> list[Face]:
        check_frame(rgb)
        size = self.config.input_size
        canvas, lb = letterbox(rgb, size, self._canvas)
        np.multiply(canvas, np.float32(1 / 127.5), out=self._input[0])
        self._input -= np.float32(1.0)
        self.interpreter.set_tensor(self._input_index, self._input)
        self.interpreter.invoke()
        raw_boxes = self.interpreter.get_tensor(self._boxes_index)[0]
        raw_scores = self.interpreter.get_tensor(self._scores_index)[0]
        boxes, kps, scores = decode(raw_boxes, raw_scores, self.anchors, size, self.score_threshold)
        boxes, kps, scores = weighted_nms(boxes, kps, scores, self.iou_threshold)
        return to_faces(boxes, kps, scores, lb, self.min_face)

    def describe(self) -> str:
        size = self.config.input_size
        return f"blazeface-{self.kind} {size}x{size} float32"

    def __repr__(self) -> str:
        return (f"BlazeFaceDetector({self.describe()!r}, model={str(self.model_path)!r}, "
                f"score_threshold={self.score_threshold}, backend={self.backend!r})")
