"""``--detector`` settings: text -> :func:`device.detectors.make_detector` arguments, and names.

A setting is ``KIND[:MODEL][,OPTION=VALUE...]``: ``short``, ``full``,
``yunet:models/face_detection_yunet_2023mar.onnx``, ``full,score_threshold=0.5``. OPTION is any
keyword of ``make_detector`` other than those the benchmark sets itself (the model, the thread
count and the minimum face size, which are the daemon's), so a new detector option is usable
here the day it exists.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.detectors import KINDS, make_detector

#: make_detector arguments the benchmark sets for every detector (as the daemon does).
RESERVED = ("kind", "model_path", "min_face", "num_threads")


@dataclass(frozen=True)
class DetectorSpec:
    text: str
    kind: str
    model_path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, min_face: int, num_threads: int):
        """The detector as a daemon with a default config builds it, but for what this spec sets."""
        options = {**daemon_detector_options(), **self.options}
        return make_detector(self.kind, self.model_path, min_face=min_face, num_threads=num_threads, **options)


def daemon_detector_options() -> dict[str, Any]:
    """The ``detector.*`` settings the daemon hands :func:`make_detector` (``mirror``,
    ``score_threshold``, ...), at their config defaults, so a setting measures what a daemon with
    that setting would do; the reserved ones are the benchmark's."""
    from device.config import DetectorConfig

    defaults = DetectorConfig()
    return {name: getattr(defaults, name) for name in option_names() if hasattr(defaults, name)}


def option_names() -> list[str]:
    return [p for p in inspect.signature(make_detector).parameters if p not in RESERVED]


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_detector(text: str) -> DetectorSpec:
    """``KIND[:MODEL][,OPTION=VALUE...]`` -> a spec; ValueError naming what is wrong."""
    head, *opts = [p.strip() for p in str(text).split(",")]
    kind, sep, model = head.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise ValueError(f"--detector {text!r}: unknown kind {kind!r}; use KIND[:MODEL][,OPTION=VALUE], "
                         f"KIND one of {', '.join(KINDS)}")
    if sep and not model.strip():
        raise ValueError(f"--detector {text!r}: no model file after ':'")
    known = option_names()
    options: dict[str, Any] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in known:
            raise ValueError(f"--detector {text!r}: option {opt!r} is not OPTION=VALUE with OPTION one of "
                             f"{', '.join(known)}")
        options[key] = _value(value.strip())
    return DetectorSpec(str(text), kind, Path(model.strip()) if sep else None, options)


def input_size_of(detector: Any, frame_size: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) the detector's network sees: its ``input_size`` (or its config's), else
    the frame's own size (detectors that run at the frame's size, as OpenCV's FaceDetectorYN)."""
    for obj in (detector, getattr(detector, "config", None)):
        size = getattr(obj, "input_size", None)
        if isinstance(size, int):
            return size, size
        if isinstance(size, (tuple, list)) and len(size) == 2:
            return int(size[0]), int(size[1])
    return int(frame_size[0]), int(frame_size[1])


def detector_name(spec: DetectorSpec, input_size: tuple[int, int], mirrored: bool = False) -> str:
    """``short 128x128``, ``yunet 640x480 + mirror``, ``yunet 640x480 (face_detection_yunet_2023mar.onnx)``,
    options after."""
    name = f"{spec.kind} {input_size[0]}x{input_size[1]}" + (" + mirror" if mirrored else "")
    if spec.model_path is not None:
        name += f" ({spec.model_path.name})"
    if spec.options:
        name += " " + ",".join(f"{k}={v}" for k, v in spec.options.items())
    return name
