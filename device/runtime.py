"""Load a .tflite model with whatever interpreter this machine has.

Order: ``ai_edge_litert`` (LiteRT, our default; works with numpy 1.x and 2.x), then
``tflite_runtime`` (the last release, 2.14, is what some Raspberry Pi images still carry), then
``tensorflow.lite`` (workstation only; deprecated, so it is the last resort).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_BACKENDS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def interpreter_class() -> tuple[str, Any]:
    """(backend name, Interpreter class) of the first interpreter that imports here.

    ``MASKWATCH_TFLITE_BACKEND`` forces one (for tests of the fallback order).
    """
    forced = os.environ.get("MASKWATCH_TFLITE_BACKEND")
    errors = []
    for name, module in _BACKENDS:
        if forced and name != forced:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            errors.append(f"{module}: {exc}")
            continue
        return name, mod.Interpreter
    raise RuntimeError(
        "no TFLite interpreter found; install ai-edge-litert (pip install 'ai-edge-litert==2.3.*'). "
        "Tried: " + "; ".join(errors)
    )


@dataclass(frozen=True)
class TensorInfo:
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.int8, np.uint8, np.int16) and self.scale != 0.0


def _info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(int(d["index"]), tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]), float(scale), int(zp))


def load_interpreter(path: Path, num_threads: int | None = None) -> tuple[Any, str]:
    """A ready (allocated) interpreter for ``path`` and the backend's name.

    A missing, empty or corrupt file is a ValueError naming it, raised before anything else runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    data = path.read_bytes()
    # A FlatBuffer TFLite model carries the identifier "TFL3" at byte 4.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite model (no TFL3 identifier; empty, truncated or another format)")
    backend, cls = interpreter_class()
    try:
        interp = cls(model_path=str(path), num_threads=num_threads)
        interp.allocate_tensors()
    except Exception as exc:  # the interpreters raise bare RuntimeError/ValueError with C++ text
        raise ValueError(f"{path}: {backend} cannot load this model ({exc})") from None
    return interp, backend


def input_info(interp: Any, i: int = 0) -> TensorInfo:
    return _info(interp.get_input_details()[i])


def output_info(interp: Any, i: int = 0) -> TensorInfo:
    return _info(interp.get_output_details()[i])
