"""Shared fixtures: ../shared for the real-data tests, a real Mosquitto broker, a tiny int8
classifier and real face photos, the last two built once and cached for the Pi-like run.

The skip policy (``MASKWATCH_FAIL_ON_SKIP``) and the per-environment summary line live in
:mod:`tests.skip_policy`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from train.broker import INSTALL_HINT, Broker, find_mosquitto

#: The skip policy and summary line, and pytester for the test of that plugin.
pytest_plugins = ["tests.skip_policy", "pytester"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKWATCH_SHARED", ROOT.parent / "shared"))
MODELS = ROOT / "models"
# Files built with TensorFlow or scikit-image in the workstation run are kept here so that the
# device-only run (numpy 1.x, neither of them: the Raspberry Pi OS check) uses the very same files.
ASSETS = ROOT / ".cache" / "test-assets"
WORKSTATION_FIRST = "run the workstation tests first (make test does)"


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (real data), for the tests whose subject is that data; they skip when it is absent."""
    if not (SHARED / "README.md").exists():
        from tests.skip_policy import REAL_DATA_ABSENT  # a plugin: imported by pytest, not before

        pytest.skip(f"{REAL_DATA_ABSENT}: {SHARED} (see ../shared/README.md)")
    return SHARED


@pytest.fixture(scope="session")
def detector_model() -> Path:
    from device.detectors.model_files import model_path

    try:
        return model_path("short", MODELS)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def yunet_onnx() -> Path:
    """OpenCV's YuNet 2023mar: the copy in ../shared/models, else the one `make setup` fetched into
    models/ (both checked against the pinned sha256 by `fetch-models`)."""
    for path in (SHARED / "models" / "face_detection_yunet_2023mar.onnx",
                 MODELS / "face_detection_yunet_2023mar.onnx"):
        if path.is_file():
            return path
    from tests.skip_policy import REAL_DATA_ABSENT

    pytest.skip(f"{REAL_DATA_ABSENT} and models/ has no face_detection_yunet_2023mar.onnx "
                "(`make setup` fetches it)")


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
        pytest.skip(f"{INSTALL_HINT}; .ci/run installs it")
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
        pytest.skip(f"TensorFlow is absent and no cached tiny model: {WORKSTATION_FIRST}")
    from convert.tiny_model import build_tiny_classifier

    path = build_tiny_classifier(tmp_path_factory.mktemp("tiny_classifier") / "tiny_int8.tflite")
    ASSETS.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(path.read_bytes())
    cached.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())
    return path


@pytest.fixture(scope="session")
def faces() -> list[np.ndarray]:
    """Real unmasked faces without ../shared: the public-domain portraits ``maskwatch data synth``
    uses (astronaut, Grace Hopper), cropped to the face, as RGB uint8, in that order.

    They ship inside scikit-image and matplotlib (workstation only); the workstation run writes
    them to ``.cache`` as PNG, lossless, so the Pi-like run pastes the very same pixels.
    """
    import cv2

    from train.data.synth import PORTRAIT_CROPS

    folder = ASSETS / "faces"
    if importlib.util.find_spec("skimage") is not None:
        from train.data.synth import portraits

        crops = portraits()
        folder.mkdir(parents=True, exist_ok=True)
        for name, rgb in crops.items():
            if not cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {folder / name}.png")
        return list(crops.values())
    out = []
    for name, (x0, y0, x1, y1) in PORTRAIT_CROPS.items():
        bgr = cv2.imread(str(folder / f"{name}.png"))
        if bgr is None or bgr.shape[:2] != (y1 - y0, x1 - x0):  # absent, or cut with other crops
            pytest.skip(f"scikit-image is absent and no cached face {name}.png in {folder}: {WORKSTATION_FIRST}")
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


@pytest.fixture(scope="session")
def face_tree(tmp_path_factory, detector_model) -> Path:
    """A folder-per-class tree (``with_mask/``, ``without_mask/``, 60 JPEGs each) of the faces
    ``maskwatch data synth`` makes from the public-domain photos: a dataset on any workstation."""
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image is absent: the sample faces are made on the workstation")
    from device.detectors import make_detector
    from train.data.synth import load_backgrounds, load_sources, write_tree

    tree = tmp_path_factory.mktemp("face_tree")
    write_tree(tree, load_sources(make_detector("short", detector_model)), 120, 0, load_backgrounds())
    return tree
