"""Shared fixtures: paths to ../shared, a real Mosquitto broker, a tiny int8 classifier."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.mosquitto import Broker, find_mosquitto

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKWATCH_SHARED", ROOT.parent / "shared"))
MODELS = ROOT / "models"
# Models built with TensorFlow in the workstation run are kept here so that the device-only run
# (numpy 1.x, no TensorFlow: the Raspberry Pi OS check) can use the very same files.
ASSETS = ROOT / ".cache" / "test-assets"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real data); tests that need it skip with the reason when it is absent."""
    if not (SHARED / "README.md").exists():
        pytest.skip(f"real data folder {SHARED} is absent (see ../shared/README.md)")
    return SHARED


@pytest.fixture(scope="session")
def detector_model() -> Path:
    from device.detectors.model_files import model_path

    try:
        return model_path("short", MODELS)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def yunet_onnx(shared) -> Path:
    """OpenCV's YuNet 2023mar from ../shared/models (the file `fetch-models` downloads)."""
    path = shared / "models" / "face_detection_yunet_2023mar.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def _converted_yunet(onnx: Path, quantization: str) -> Path:
    """YuNet converted at 640x480 by `maskwatch convert-detector`, card beside it.

    Converted afresh in the workstation run (TensorFlow + onnx2tf) and reused from ``.cache``
    by the device-only run, as :func:`tiny_classifier` is.
    """
    from device.detectors.yunet_litert import converted_model_name

    cached = ASSETS / converted_model_name(640, 480, quantization)
    if importlib.util.find_spec("tensorflow") is None:
        if cached.exists() and cached.with_suffix(".json").exists():
            return cached
        pytest.skip(f"TensorFlow is absent and no cached {cached.name}: run the workstation tests first")
    from convert.detector import BUILTIN_CALIBRATION, convert_detector

    calibration = BUILTIN_CALIBRATION if quantization == "int8" else None
    return convert_detector(onnx, 640, 480, ASSETS, calibration=calibration).path


@pytest.fixture(scope="session")
def yunet_tflite(yunet_onnx) -> Path:
    """YuNet as float32 TFLite at 640x480 (the one to compare with OpenCV)."""
    return _converted_yunet(yunet_onnx, "float32")


@pytest.fixture(scope="session")
def yunet_int8_tflite(yunet_onnx) -> Path:
    """YuNet as int8 TFLite at 640x480, calibrated on the built-in photos (the default model)."""
    return _converted_yunet(yunet_onnx, "int8")


@pytest.fixture
def broker(tmp_path):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto); .ci/run installs it")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A small int8 TFLite mask classifier that follows the contract (raw RGB in, softmax out).

    Its weights are random: it is for plumbing tests (shapes, dtypes, cards, the daemon), not
    for accuracy. Built with TensorFlow in the workstation run and reused from ``.cache`` by the
    device-only run, where TensorFlow is absent.
    """
    cached = ASSETS / "tiny_int8.tflite"
    if importlib.util.find_spec("tensorflow") is None:
        if cached.exists() and cached.with_suffix(".json").exists():
            return cached
        pytest.skip("TensorFlow is absent and no cached tiny model: run the workstation tests first")
    from tests.daemon_helpers import build_tiny_classifier

    path = build_tiny_classifier(tmp_path_factory.mktemp("tiny_classifier") / "tiny_int8.tflite")
    ASSETS.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(path.read_bytes())
    cached.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())
    return path
