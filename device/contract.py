"""The one preprocessing-and-labels contract shared by train, convert and device.

Everything that must be identical on the workstation and on the Raspberry Pi lives here:
label names and their aliases, how a face box becomes a classifier input, how pixels are
quantized for an int8 model, and the model card that travels beside every model file.
Training crops made with :func:`crop_face` are exactly what the daemon feeds the model, so a
difference between the two cannot creep in.

Only numpy and OpenCV are used: this module is imported on the Pi, where TensorFlow is absent.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------

WITH_MASK = "with_mask"
WITHOUT_MASK = "without_mask"
INCORRECT_MASK = "incorrect_mask"

#: The default two-class model. Order is the model's output order.
BINARY_LABELS: tuple[str, ...] = (WITH_MASK, WITHOUT_MASK)
#: Optional three-class mode.
THREE_CLASS_LABELS: tuple[str, ...] = (WITH_MASK, WITHOUT_MASK, INCORRECT_MASK)
#: The class that raises an alert at the entrance (a model card's ``alert_label``).
ALERT_LABEL = WITHOUT_MASK
#: The classes that raise an alert by default: no mask, and a mask worn wrong (under the nose, on
#: the chin). A model's own labels decide which of them it can tell (a 2-label model: only the first).
DEFAULT_ALERT_LABELS: tuple[str, ...] = (WITHOUT_MASK, INCORRECT_MASK)


def alert_labels_for(labels: list[str] | tuple[str, ...], wanted: list[str] | tuple[str, ...] | None = None,
                     where: str = "alert labels") -> tuple[str, ...]:
    """The alert labels a model with ``labels`` uses, in the model's order.

    ``wanted`` None means :data:`DEFAULT_ALERT_LABELS` as far as the model has them (a 2-label
    model alerts on ``without_mask`` alone, as it always did). Labels asked for explicitly must
    all be the model's; at least one label must stay a non-alert one.
    """
    labels = list(labels)
    if wanted is None:
        chosen = [lb for lb in labels if lb in DEFAULT_ALERT_LABELS]
    else:
        unknown = [lb for lb in wanted if lb not in labels]
        if unknown:
            raise ValueError(f"{where}: {unknown} not among the model's labels {labels}")
        chosen = [lb for lb in labels if lb in wanted]
    if not chosen:
        raise ValueError(f"{where}: none of {list(wanted or DEFAULT_ALERT_LABELS)} is a label of the model {labels}")
    if len(chosen) == len(labels):
        raise ValueError(f"{where}: every label of the model {labels} would alert; leave at least one out")
    return tuple(chosen)

# Keys are folded names (lower case, letters and digits only). Real datasets spell the same
# class many ways; anything not listed here is "not a class" rather than a guess.
_ALIASES: dict[str, str] = {}
for _canonical, _names in {
    WITH_MASK: [
        "with_mask", "withmask", "mask", "masked", "masks", "wearingmask", "facemask",
        "withfacemask", "mask_on", "maskon", "yes_mask",
    ],
    WITHOUT_MASK: [
        "without_mask", "withoutmask", "no_mask", "nomask", "nomasks", "unmasked", "notmasked",
        "mask_off", "maskoff", "nofacemask", "withoutfacemask", "no_face_mask",
    ],
    INCORRECT_MASK: [
        "incorrect_mask", "mask_weared_incorrect", "mask_worn_incorrect", "with_incorrect_mask",
        "incorrectmask", "incorrectly_masked", "mask_incorrect", "improper_mask",
        "mask_worn_incorrectly", "partial_mask",
    ],
}.items():
    for _n in _names:
        _ALIASES[re.sub(r"[^a-z0-9]", "", _n.lower())] = _canonical


def normalize_label(name: str) -> str | None:
    """Map a dataset's class name (folder or VOC ``<name>``) to a canonical label, or None."""
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


# --------------------------------------------------------------------------------------------
# Face crops
# --------------------------------------------------------------------------------------------

#: Default input size of the classifier. 128 px keeps MobileNetV2 at about a third of its
#: 224 px cost (the Pi runs it once per face per frame) while faces at an entrance are rarely
#: larger than that on a 640x480 frame anyway.
DEFAULT_INPUT_SIZE = 128
#: Margin added around a detector box on every side, as a fraction of the box's longer side.
#: BlazeFace boxes are tight (brows to chin); the mask's edges and straps sit outside them.
DEFAULT_MARGIN = 0.2


def expand_box(
    box: tuple[float, float, float, float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """Square box around ``box`` (x0, y0, x1, y1 in pixels), grown by ``margin`` and clipped.

    A square crop keeps the face's aspect ratio when resized to the square model input.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    half = side / 2.0
    nx0 = int(round(max(0.0, cx - half)))
    ny0 = int(round(max(0.0, cy - half)))
    nx1 = int(round(min(float(width), cx + half)))
    ny1 = int(round(min(float(height), cy + half)))
    return nx0, ny0, max(nx1, nx0 + 1), max(ny1, ny0 + 1)


def resize_face(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to ``size``x``size`` the one way train and device both use."""
    import cv2

    h, w = image_rgb.shape[:2]
    interp = cv2.INTER_AREA if (h > size or w > size) else cv2.INTER_LINEAR
    out = cv2.resize(cv_view(image_rgb), (size, size), interpolation=interp)
    return out.astype(np.uint8, copy=False)


def cv_view(image: np.ndarray) -> np.ndarray:
    """``image`` as OpenCV can take it without a copy when possible.

    A crop of a frame is a view whose rows are strided: OpenCV reads that as a sub-matrix, so
    copying it (some 200 KB per face) is wasted time on the Pi. Only views OpenCV rejects
    (negative or element-gapped strides, e.g. a mirrored frame) are copied.
    """
    a = np.asarray(image)
    s = a.strides
    if a.ndim >= 2 and s[0] > 0 and s[1] == a.itemsize * (a.shape[2] if a.ndim == 3 else 1) and (
            a.ndim == 2 or s[2] == a.itemsize):
        return a
    return np.ascontiguousarray(a)


def crop_face(
    image_rgb: np.ndarray,
    box: tuple[float, float, float, float],
    size: int = DEFAULT_INPUT_SIZE,
    margin: float = DEFAULT_MARGIN,
) -> np.ndarray:
    """Classifier input (size x size x 3, RGB uint8) for one face box in a frame."""
    h, w = image_rgb.shape[:2]
    x0, y0, x1, y1 = expand_box(box, margin, w, h)
    return resize_face(image_rgb[y0:y1, x0:x1], size)


# --------------------------------------------------------------------------------------------
# Quantization of the model input and output
# --------------------------------------------------------------------------------------------


def quantize(values: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Real values -> integer tensor values, as TFLite defines it: q = round(x / s) + z."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(values, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor values -> real values: x = s * (q - z)."""
    return (np.asarray(values, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------

#: What the model expects as input: raw RGB pixels 0..255; the backbone's normalization is a
#: layer inside the model, so nobody outside it has to know it.
PREPROCESSING = "rgb_uint8_0_255"


class JsonCard:
    """What every card (a JSON file beside its model) does with itself: its JSON, saving and reading it."""

    @staticmethod
    def read_object(path: Path, what: str, missing_hint: str = "") -> dict[str, Any]:
        """The JSON object in ``path``; FileNotFoundError or ValueError naming the file otherwise."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} not found: {path}{missing_hint}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a {what} must be a JSON object")
        return data

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def save(self, path: Path) -> Path:
        from device.safe_write import write_file

        write_file(Path(path), (self.to_json() + "\n").encode("utf-8"), mode=0o644)
        return Path(path)


@dataclass
class ModelCard(JsonCard):
    """Small JSON document that sits beside every model file (``<model stem>.json``).

    The device reads input size, margin, labels and threshold from here instead of from its
    own config, so a new model cannot be run with the wrong crop or label order.
    """

    name: str = "maskwatch"
    backbone: str = "mobilenet_v2"
    input_size: int = DEFAULT_INPUT_SIZE
    labels: list[str] = field(default_factory=lambda: list(BINARY_LABELS))
    alert_label: str = ALERT_LABEL
    #: The labels whose summed probability ``threshold`` applies to (empty: ``alert_label`` alone,
    #: as in every card written before models had a third label).
    alert_labels: list[str] = field(default_factory=list)
    preprocessing: str = PREPROCESSING
    margin: float = DEFAULT_MARGIN
    #: Probability of the alert labels (summed) at or above which a face counts as an alert.
    threshold: float = 0.5
    #: "float32", "float16", "int8", "uint8" (tflite) or "none" (Keras model).
    quantization: str = "none"
    #: Input/output tensor quantization {"input": {"scale", "zero_point", "dtype"}, "output": ...}
    quantization_params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_manifest_sha256: str | None = None
    source_model_sha256: str | None = None
    calibration_size: int | None = None
    #: int8 models: the layers left float32 because int8 got them badly wrong (convert.float_layers),
    #: each {"layer", "op", "rmse_steps", "tensor"}; empty: every layer int8.
    float_layers: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str = "model card") -> None:
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 1024:
            raise ValueError(f"{where}: input_size must be an integer 16..1024, got {self.input_size!r}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{where}: labels must be a non-empty list of distinct names, got {self.labels!r}")
        if self.alert_label not in self.labels:
            raise ValueError(f"{where}: alert_label {self.alert_label!r} is not one of labels {self.labels!r}")
        if self.alert_labels:
            alert_labels_for(self.labels, self.alert_labels, f"{where}: alert_labels")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"{where}: threshold must be within 0..1, got {self.threshold!r}")
        if not 0.0 <= float(self.margin) <= 1.0:
            raise ValueError(f"{where}: margin must be within 0..1, got {self.margin!r}")


    @property
    def alerts(self) -> tuple[str, ...]:
        """The labels the card's threshold was chosen for (see :attr:`alert_labels`)."""
        return tuple(self.alert_labels) if self.alert_labels else (self.alert_label,)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model card") -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        card = cls(**{k: v for k, v in data.items() if k in known})
        if unknown:
            card.extra.setdefault("unknown_fields", unknown)
        card.validate(where)
        return card

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        return cls.from_dict(cls.read_object(path, "model card"), where=str(path))


def card_path(model_path: Path) -> Path:
    """Where the card of a model file lives: same folder, same stem, ``.json``."""
    model_path = Path(model_path)
    return model_path.with_suffix(".json")


def load_card_for(model_path: Path) -> ModelCard:
    """The card beside ``model_path``; a clear error naming both files when it is missing."""
    path = card_path(model_path)
    if not path.exists():
        raise FileNotFoundError(f"{model_path}: its model card {path.name} is missing beside it")
    return ModelCard.load(path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
