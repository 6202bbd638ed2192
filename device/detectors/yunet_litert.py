"""YuNet converted to TFLite (``maskwatch convert-detector``), run on LiteRT with plain numpy.

Why not OpenCV's FaceDetectorYN: YuNet finds ~0.9 of the faces at a door where BlazeFace finds
~0.35, but OpenCV's DNN runs it at ~8-15 ms per 640x480 frame on two cores; the same network on
LiteRT + XNNPACK takes about half that as float32 and a third as int8 (``--int8``).

The decoding follows OpenCV's ``modules/objdetect/src/face_detect.cpp`` exactly, so the faces are
OpenCV's: per stride 8/16/32 the model gives, for every cell of a (H/stride) x (W/stride) grid in
row-major order, sigmoid scores ``cls`` and ``obj``, a box (dx, dy, log w, log h) and five
landmarks (dx, dy) in units of the stride relative to the cell's top-left corner; the face score
is sqrt(cls * obj) (both clamped to 0..1); then ``cv2.dnn.NMSBoxes`` on the boxes truncated to
integers, as OpenCV does. The input is the frame scaled to fit the model's fixed input, placed
at the top-left and padded with black (OpenCV also pads at the bottom and right), as float
pixels 0..255 with no normalisation (an int8 model gets them quantized with its input's scale
and zero point, and its outputs are dequantized before decoding).

Each converted model has a card (``<model>.json``) saying its input size, colour order and
which TFLite output is which YuNet output; :class:`YuNetCard` reads and checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.contract import JsonCard, card_path, cv_view, dequantize, quantize
from device.detectors.base import Face, check_frame
from device.detectors.chins import drop_chins
from device.detectors.yunet import BOX_CALIBRATION, DEFAULT_TOP_K, model_and_threshold, yunet_rows_to_faces
from device.runtime import input_info, load_interpreter, output_info

#: Feature-map strides of YuNet's three heads; the input must be a multiple of the largest
#: (its feature maps halve five times and are added back after upsampling).
STRIDES: tuple[int, ...] = (8, 16, 32)
DIVISOR = 32
#: YuNet's outputs in OpenCV's order.
OUTPUT_NAMES: tuple[str, ...] = tuple(f"{head}_{s}" for head in ("cls", "obj", "bbox", "kps") for s in STRIDES)
#: The ONNX file the converted models come from (OpenCV model zoo, MIT).
SOURCE_STEM = "face_detection_yunet_2023mar"
#: The model ``make setup`` makes and ``make_detector("yunet")`` loads: a 640x480 camera frame
#: needs no scaling (smaller inputs miss more small faces: 512x384 finds 0.84 of faces-voc's
#: faces where 640x480 finds 0.88), and int8 runs it ~1.6x faster than float32 at the same recall.
DEFAULT_INPUT_SIZE: tuple[int, int] = (640, 480)
DEFAULT_QUANTIZATION = "int8"
CARD_FORMAT = "maskwatch-yunet-tflite/1"
#: Bilinear, as for BlazeFace; only used when the frame is not the model's input size.
RESIZE_INTERPOLATION = cv2.INTER_LINEAR


def converted_model_name(width: int, height: int, quantization: str = "float32", stem: str = SOURCE_STEM) -> str:
    """File name of a converted model: the source stem, input size and number format."""
    return f"{stem}_{width}x{height}_{quantization}.tflite"


def _round_up(value: int) -> int:
    return max(DIVISOR, -(-value // DIVISOR) * DIVISOR)


def check_input_size(width: int, height: int) -> None:
    """Raise ValueError unless width x height is an input YuNet can take."""
    if width <= 0 or height <= 0 or width % DIVISOR or height % DIVISOR:
        raise ValueError(
            f"YuNet input size must be positive multiples of {DIVISOR}, got {width}x{height}; "
            f"use {_round_up(width)}x{_round_up(height)} (a frame is scaled to fit and padded)"
        )


def default_model_path(models_dir: Path | None = None) -> Path:
    """The converted default model in the models folder, with a clear error when it is missing."""
    from device.detectors.model_files import DEFAULT_DIR, YUNET_ONNX

    folder = Path(models_dir or DEFAULT_DIR)
    w, h = DEFAULT_INPUT_SIZE
    path = folder / converted_model_name(w, h, DEFAULT_QUANTIZATION)
    if not path.is_file():
        int8 = " --int8" if DEFAULT_QUANTIZATION == "int8" else ""
        raise FileNotFoundError(
            f"{path} is missing: it is made on a workstation from the fetched {YUNET_ONNX.name} with "
            f"`maskwatch convert-detector {folder / YUNET_ONNX.name} --size {w}x{h}{int8} --out {folder}` "
            f"(`make setup` does both); copy it and its .json card to this folder"
        )
    return path


# --------------------------------------------------------------------------------------------
# The card beside a converted model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class YuNetCard(JsonCard):
    """What the device must know about a converted YuNet model, written by the converter."""

    input_width: int
    input_height: int
    #: YuNet output name (``cls_8`` ... ``kps_32``) -> name of the TFLite output tensor.
    outputs: dict[str, str]
    colour_order: str = "RGB"  # channel order the model takes (the converter folds BGR->RGB in)
    input_layout: str = "NHWC"
    normalisation: str = "none: float32 pixels 0..255"
    quantization: str = "float32"
    detector: str = "yunet"
    #: The ONNX it was made from: file, sha256, url, licence.
    source: dict[str, Any] = field(default_factory=dict)
    #: Tool versions that made it.
    converter: dict[str, Any] = field(default_factory=dict)
    #: How closely the TFLite outputs matched the ONNX ones at conversion.
    parity: dict[str, Any] = field(default_factory=dict)
    #: int8 only: the images its ranges were calibrated on.
    calibration: dict[str, Any] = field(default_factory=dict)
    format: str = CARD_FORMAT

    def validate(self, where: str) -> None:
        if self.format != CARD_FORMAT:
            raise ValueError(f"{where}: format is {self.format!r}, expected {CARD_FORMAT!r}")
        if self.detector != "yunet":
            raise ValueError(f"{where}: detector is {self.detector!r}, expected 'yunet'")
        for name, value in (("input_width", self.input_width), ("input_height", self.input_height)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
        try:
            check_input_size(self.input_width, self.input_height)
        except ValueError as exc:
            raise ValueError(f"{where}: input_width/input_height: {exc}") from None
        if self.colour_order not in ("RGB", "BGR"):
            raise ValueError(f"{where}: colour_order must be 'RGB' or 'BGR', got {self.colour_order!r}")
        if self.quantization not in ("float32", "int8"):
            raise ValueError(f"{where}: quantization must be 'float32' or 'int8', got {self.quantization!r}")
        if self.input_layout != "NHWC":
            raise ValueError(f"{where}: input_layout must be 'NHWC', got {self.input_layout!r}")
        if not isinstance(self.outputs, dict) or set(self.outputs) != set(OUTPUT_NAMES):
            got = sorted(self.outputs) if isinstance(self.outputs, dict) else self.outputs
            raise ValueError(f"{where}: outputs must map each of {list(OUTPUT_NAMES)} to a tensor name, got {got!r}")


    @classmethod
    def load(cls, path: Path) -> YuNetCard:
        data = cls.read_object(path, "detector card",
                               " (it is written beside the model by `maskwatch convert-detector`)")
        known = set(cls.__dataclass_fields__)
        missing = sorted(k for k in ("input_width", "input_height", "outputs") if k not in data)
        if missing:
            raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.validate(str(path))
        return card


# --------------------------------------------------------------------------------------------
# Frame <-> model input
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """Where a frame sits in the model input: scaled to fit, aspect ratio kept, top-left."""

    width: int  # frame
    height: int
    new_width: int  # the scaled frame inside the input
    new_height: int
    input_width: int
    input_height: int

    @property
    def identity(self) -> bool:
        return (self.width, self.height) == (self.new_width, self.new_height)

    @property
    def scale_x(self) -> float:
        return self.new_width / self.width

    @property
    def scale_y(self) -> float:
        return self.new_height / self.height

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Points (..., 2) in input pixels -> frame pixels."""
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0] /= self.scale_x
        out[..., 1] /= self.scale_y
        return out

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixels (..., 2) -> input pixels (inverse of :meth:`to_frame`)."""
        out = np.array(xy, dtype=np.float32, copy=True)
        out[..., 0] *= self.scale_x
        out[..., 1] *= self.scale_y
        return out


def fit_params(width: int, height: int, input_width: int, input_height: int) -> Fit:
    """Fit a width x height frame into the input: scaled (up or down) to touch two sides."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    scale = min(input_width / width, input_height / height)
    nw = min(input_width, max(1, int(round(width * scale))))
    nh = min(input_height, max(1, int(round(height * scale))))
    return Fit(width, height, nw, nh, input_width, input_height)


def rows_to_frame(rows: np.ndarray, fit: Fit) -> np.ndarray:
    """OpenCV-layout rows (x, y, w, h, 5 landmarks, score) from input pixels to frame pixels."""
    out = np.array(rows, dtype=np.float32, copy=True).reshape(-1, 15)
    out[:, 0:14] = fit.to_frame(out[:, 0:14].reshape(-1, 7, 2)).reshape(-1, 14)
    return out


# --------------------------------------------------------------------------------------------
# Decoding and non-maximum suppression (pure functions, input pixels)
# --------------------------------------------------------------------------------------------


def decode(outputs: dict[str, np.ndarray], input_width: int, input_height: int,
           score_threshold: float) -> np.ndarray:
    """Raw YuNet outputs -> rows (N, 15) scoring at least ``score_threshold``, in input pixels.

    A row is OpenCV's: x0, y0, w, h, right eye, left eye, nose tip, right and left mouth corner
    (x, y each), score; rows come stride by stride, cells in row-major order, as OpenCV's.
    """
    chunks = []
    for stride in STRIDES:
        cols, rows = input_width // stride, input_height // stride
        n = cols * rows
        cls = np.asarray(outputs[f"cls_{stride}"], dtype=np.float32).reshape(-1)
        obj = np.asarray(outputs[f"obj_{stride}"], dtype=np.float32).reshape(-1)
        bbox = np.asarray(outputs[f"bbox_{stride}"], dtype=np.float32).reshape(-1, 4)
        kps = np.asarray(outputs[f"kps_{stride}"], dtype=np.float32).reshape(-1, 10)
        if not (len(cls) == len(obj) == len(bbox) == len(kps) == n):
            raise ValueError(
                f"stride {stride}: outputs hold {len(cls)}/{len(obj)}/{len(bbox)}/{len(kps)} cells, "
                f"a {input_width}x{input_height} input has {n} ({cols}x{rows})"
            )
        score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
        keep = np.flatnonzero(score >= np.float32(score_threshold))
        if not keep.size:
            continue
        r, c = np.divmod(keep, cols)
        cell = np.stack([c, r], axis=1).astype(np.float32)  # (k, 2) as x, y
        s = np.float32(stride)
        b = bbox[keep]
        centre = (cell + b[:, 0:2]) * s
        size = np.exp(b[:, 2:4]) * s
        landmarks = (kps[keep].reshape(-1, 5, 2) + cell[:, None, :]) * s
        chunks.append(np.concatenate(
            [centre - size / 2, size, landmarks.reshape(-1, 10), score[keep, None]], axis=1))
    if not chunks:
        return np.zeros((0, 15), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


def nms(rows: np.ndarray, score_threshold: float, nms_threshold: float, top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """Rows kept by OpenCV's own ``cv2.dnn.NMSBoxes``, best first, as FaceDetectorYN calls it.

    Boxes are truncated to integers first and a single row is returned as it is, both as in
    face_detect.cpp, so the survivors are the very faces OpenCV would report.
    """
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 15)
    if len(rows) <= 1:
        return rows
    boxes = np.trunc(rows[:, 0:4]).astype(np.int32)
    keep = cv2.dnn.NMSBoxes(boxes, rows[:, 14].copy(), float(score_threshold), float(nms_threshold),
                            1.0, int(top_k))
    return rows[np.asarray(keep, dtype=np.int64).reshape(-1)]


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


class YuNetLiteRTDetector:
    """A converted YuNet model loaded once; :meth:`detect` runs it on one frame."""

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
        if not card_path(self.model_path).is_file():
            # Most likely a config from before YuNet was the default, naming a BlazeFace model.
            raise FileNotFoundError(
                f"{self.model_path}: no YuNet card {card_path(self.model_path).name} beside it, so not a model "
                f"made by `maskwatch convert-detector`; for a BlazeFace model set the detector kind to "
                f"'short' or 'full'")
        self.card = YuNetCard.load(card_path(self.model_path))
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.min_face = int(min_face)
        self.interpreter, self.backend = load_interpreter(self.model_path, num_threads)
        self._check_model()
        self._fit: Fit | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input_width, self.card.input_height

    def _check_model(self) -> None:
        w, h = self.input_size
        where = f"{self.model_path} (card {card_path(self.model_path)})"
        inp = input_info(self.interpreter)
        dtype = np.dtype(np.float32 if self.card.quantization == "float32" else np.int8)
        if inp.shape != (1, h, w, 3) or inp.dtype != dtype:
            raise ValueError(f"{where}: input is {inp.shape} {inp.dtype}, the card says (1, {h}, {w}, 3) {dtype} "
                             f"({self.card.quantization})")
        by_name = {d["name"]: i for i, d in enumerate(self.interpreter.get_output_details())}
        self._outputs = {}
        for yunet_name, tensor_name in self.card.outputs.items():
            if tensor_name not in by_name:
                raise ValueError(f"{where}: the card maps {yunet_name} to output {tensor_name!r}, "
                                 f"which the model does not have ({sorted(by_name)})")
            out = output_info(self.interpreter, by_name[tensor_name])
            stride = int(yunet_name.split("_")[1])
            depth = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}[yunet_name.split("_")[0]]
            want = (1, (w // stride) * (h // stride), depth)
            if out.shape != want:
                raise ValueError(f"{where}: output {tensor_name} ({yunet_name}) has shape {out.shape}, expected {want}")
            self._outputs[yunet_name] = out
        self._input_index = inp.index
        self._input = np.zeros((1, h, w, 3), dtype=dtype)
        # Pixels 0..255 -> input values, one table lookup per frame (identity for float32).
        levels = np.arange(256, dtype=np.float32)
        self._lut = quantize(levels, inp.scale, inp.zero_point, dtype) if inp.quantized else None

    def _fit_for(self, width: int, height: int) -> Fit:
        if self._fit is None or (self._fit.width, self._fit.height) != (width, height):
            self._fit = fit_params(width, height, *self.input_size)
            self._input.fill(0 if self._lut is None else self._lut[0])  # the padding stays black
        return self._fit

    def _raw_outputs(self) -> dict[str, np.ndarray]:
        raw = {}
        for name, out in self._outputs.items():
            value = self.interpreter.get_tensor(out.index)
            raw[name] = dequantize(value, out.scale, out.zero_point) if out.quantized else value
        return raw

    def detect(self, rgb: np.ndarray) -> list[Face]:
        check_frame(rgb)
        h, w = rgb.shape[:2]
        fit = self._fit_for(w, h)
        src = rgb if fit.identity else cv2.resize(cv_view(rgb), (fit.new_width, fit.new_height),
                                                  interpolation=RESIZE_INTERPOLATION)
        if self.card.colour_order == "BGR":
            src = src[..., ::-1]
        if self._lut is not None:
            src = cv2.LUT(cv_view(src), self._lut.view(np.uint8)).view(np.int8)
        self._input[0, :fit.new_height, :fit.new_width] = src
        self.interpreter.set_tensor(self._input_index, self._input)
        self.interpreter.invoke()
        rows = decode(self._raw_outputs(), *self.input_size, self.score_threshold)
        rows = nms(rows, self.score_threshold, self.nms_threshold, self.top_k)
        return drop_chins(yunet_rows_to_faces(rows_to_frame(rows, fit), w, h, self.min_face))

    def describe(self) -> str:
        w, h = self.input_size
        return f"yunet-litert {w}x{h} {self.card.quantization}"

    def __repr__(self) -> str:
        return (f"YuNetLiteRTDetector({self.describe()!r}, model={str(self.model_path)!r}, "
                f"score_threshold={self.score_threshold}, backend={self.backend!r})")
