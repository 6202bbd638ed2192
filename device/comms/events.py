"""The event message: what a face track tells the world, and the one place its shape is defined.

``device/schemas/event.schema.json`` is the published contract for consumers (Home Assistant,
Node-RED, the ``alerts`` command); :class:`Event` enforces the same rules when an event is made,
so a daemon bug shows up as a ``ValueError`` naming the field on the device instead of as a
message that subscribers silently drop. The Pi has no ``jsonschema``, hence the small checks
here; ``tests/test_events_schema.py`` proves both agree.

Times are UNIX seconds (what ``time.time()`` returns), rounded to milliseconds: unambiguous,
time-zone free and cheap to produce on the device; the ``alerts`` command renders local time.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from device.contract import THREE_CLASS_LABELS

#: "test": sent by the web page's test-alert button (``Event.test``) to check an automation end to
#: end; no person behind it, never counted.
EVENT_TYPES: tuple[str, ...] = ("new", "update", "end", "test")
MODEL_KEYS = ("name", "sha256", "quantization", "threshold")
FIELD_ORDER = (
    "event_id", "type", "device_id", "track_id", "label", "score", "top_score", "box",
    "frame_time", "start_time", "end_time", "model",
)

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOPIC_UNSAFE = re.compile(r"[/+#]")


def new_event_id() -> str:
    return uuid.uuid4().hex


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event, from the installed package."""
    return json.loads(resources.files("device").joinpath("schemas/event.schema.json").read_text("utf-8"))


def model_info(name: str, sha256: str, quantization: str, threshold: float) -> dict[str, Any]:
    """The ``model`` block of an event (e.g. from a ModelCard and ``sha256_file(model)``)."""
    info = {"name": name, "sha256": sha256, "quantization": quantization, "threshold": threshold}
    return _check_model(info)


def _number(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    # numbers.Real also admits numpy scalars (float32 scores straight from the model).
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not _finite(value):
        raise ValueError(f"event field {name!r} must be a finite number, got {value!r}")
    value = float(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"event field {name!r} must be within {lo}..{hi}, got {value!r}")
    return value


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float (400 digits in a received event)
        return False


def _missing_and_extra(data: dict, keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Keys of ``keys`` absent from ``data``, and keys of ``data`` not in ``keys`` (sorted)."""
    return [k for k in keys if k not in data], sorted(set(data) - set(keys))


def _check_model(model: Any) -> dict[str, Any]:
    if not isinstance(model, dict):
        raise ValueError(f"event field 'model' must be an object with {MODEL_KEYS}, got {model!r}")
    missing, extra = _missing_and_extra(model, MODEL_KEYS)
    if missing or extra:
        raise ValueError(f"event field 'model' must have exactly {MODEL_KEYS} (missing {missing}, extra {extra})")
    if not isinstance(model["name"], str) or not model["name"]:
        raise ValueError(f"event field 'model.name' must be a non-empty string, got {model['name']!r}")
    if not isinstance(model["sha256"], str) or not _HEX64.match(model["sha256"]):
        raise ValueError(f"event field 'model.sha256' must be 64 lower-case hex digits, got {model['sha256']!r}")
    if not isinstance(model["quantization"], str) or not model["quantization"]:
        raise ValueError(f"event field 'model.quantization' must be a non-empty string, got {model['quantization']!r}")
    return {
        "name": model["name"],
        "sha256": model["sha256"],
        "quantization": model["quantization"],
        "threshold": _number("model.threshold", model["threshold"], 0.0, 1.0),
    }


@dataclass
class Event:
    """One event of one face track. Construct it with keyword arguments; it validates itself.

    ``box`` is rounded to integers and negative coordinates (a face at the frame edge) are
    clipped to 0; everything else out of contract raises ``ValueError`` naming the field.
    """

    type: str
    label: str
    score: float
    top_score: float
    box: list[int]
    frame_time: float
    start_time: float
    device_id: str
    model: dict[str, Any]
    track_id: int
    end_time: float | None = None
    event_id: str = field(default_factory=new_event_id)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"event field 'type' must be one of {EVENT_TYPES}, got {self.type!r}")
        if self.label not in THREE_CLASS_LABELS:
            raise ValueError(f"event field 'label' must be one of {THREE_CLASS_LABELS}, got {self.label!r}")
        if not isinstance(self.event_id, str) or not _HEX32.match(self.event_id):
            raise ValueError(f"event field 'event_id' must be 32 lower-case hex digits, got {self.event_id!r}")
        if not isinstance(self.device_id, str) or not self.device_id or _TOPIC_UNSAFE.search(self.device_id):
            raise ValueError(f"event field 'device_id' must be a non-empty string without / + #, got {self.device_id!r}")
        if isinstance(self.track_id, bool) or not isinstance(self.track_id, numbers.Integral) or self.track_id < 0:
            raise ValueError(f"event field 'track_id' must be an integer >= 0, got {self.track_id!r}")
        self.track_id = int(self.track_id)
        self.score = round(_number("score", self.score, 0.0, 1.0), 4)
        self.top_score = round(_number("top_score", self.top_score, 0.0, 1.0), 4)
        try:
            box = [int(round(float(v))) for v in self.box]
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"event field 'box' must be 4 numbers [x0, y0, x1, y1], got {self.box!r}") from None
        if len(box) != 4:
            raise ValueError(f"event field 'box' must be 4 numbers [x0, y0, x1, y1], got {self.box!r}")
        self.box = [max(0, v) for v in box]
        self.frame_time = round(_number("frame_time", self.frame_time, 0.0), 3)
        self.start_time = round(_number("start_time", self.start_time, 0.0), 3)
        if self.type == "end":
            if self.end_time is None:
                raise ValueError("event field 'end_time' is required when type is 'end'")
            self.end_time = round(_number("end_time", self.end_time, 0.0), 3)
        elif self.end_time is not None:
            raise ValueError(f"event field 'end_time' must be null unless type is 'end' (type {self.type!r})")
        self.model = _check_model(self.model)

    @classmethod
    def from_track(cls, track_event: Any, *, device_id: str, model: dict[str, Any]) -> Event:
        """The message for one tracker event (:class:`device.tracking.tracker.TrackEvent`: its
        scores are already those of its own label), from the device and model that made it."""
        e = track_event
        return cls(
            type=e.type, label=e.label, score=e.score, top_score=e.top_score, box=list(e.box),
            frame_time=e.frame_time, start_time=e.start_time, end_time=e.end_time if e.type == "end" else None,
            device_id=device_id, model=model, track_id=e.track_id,
        )

    @classmethod
    def test(cls, *, device_id: str, model: dict[str, Any], label: str, now: float) -> Event:
        """A clearly marked test alert: type ``test``, track 0, an empty box, score 1."""
        return cls(type="test", label=label, score=1.0, top_score=1.0, box=[0, 0, 0, 0], frame_time=now,
                   start_time=now, device_id=device_id, model=model, track_id=0)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_ORDER} | {
            "box": list(self.box), "model": dict(self.model),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Event:
        """Parse a received or hand-made event; exactly the schema's fields, or ValueError.

        Stricter than the constructor where the schema is: ``box`` must already be 4 integers
        >= 0 (the constructor rounds and clips values straight from the detector).
        """
        if not isinstance(data, dict):
            raise ValueError(f"an event must be a JSON object, got {type(data).__name__}")
        missing, extra = _missing_and_extra(data, FIELD_ORDER)
        if missing or extra:
            raise ValueError(f"event fields: missing {missing}, unknown {extra}")
        box = data["box"]
        if not (isinstance(box, list) and len(box) == 4 and all(type(v) is int and v >= 0 for v in box)):
            raise ValueError(f"event field 'box' must be 4 integers >= 0 [x0, y0, x1, y1], got {box!r}")
        return cls(**{k: data[k] for k in FIELD_ORDER})

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"event is not valid JSON ({exc})") from None
        return cls.from_dict(data)
