"""Shared fixtures: paths to ../shared, a real Mosquitto broker, a tiny int8 classifier."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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
    from device.detectors.fetch import model_path

    try:
        return model_path("short", MODELS)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


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
    try:
        import tensorflow as tf
    except ImportError:
        if cached.exists() and cached.with_suffix(".json").exists():
            return cached
        pytest.skip("TensorFlow is absent and no cached tiny model: run the workstation tests first")
    import keras

    from device.contract import BINARY_LABELS, ModelCard

    size = 64
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(BINARY_LABELS), activation="softmax")(x)
    model = keras.Model(inp, out)

    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.integers(0, 256, (1, size, size, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    out_dir = tmp_path_factory.mktemp("tiny_classifier")
    path = out_dir / "tiny_int8.tflite"
    path.write_bytes(conv.convert())
    ModelCard(name="tiny", backbone="tiny_cnn", input_size=size, quantization="int8").save(path.with_suffix(".json"))
    ASSETS.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(path.read_bytes())
    cached.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())
    return path
