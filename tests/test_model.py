"""train.model and train.augment: the model contract, augmentation, backbones and weights."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from tests import test_train as shared_runs  # noqa: E402

keras_home = shared_runs.keras_home


@pytest.fixture(scope="module")
def small_model():
    import keras

    from train.model import build_model

    keras.utils.set_random_seed(0)
    return build_model("mobilenet_v2", input_size=64, n_classes=2, alpha=0.35, weights="none", augment=True)


def _faces(n: int = 4, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_model_takes_raw_pixels_and_returns_softmax(small_model):
    from train.model import parts

    assert small_model.input_shape == (None, 64, 64, 3) and small_model.output_shape == (None, 2)
    p = parts(small_model)
    assert p.augment is not None and p.base.name == "backbone"
    # normalization is inside: 0..255 in, MobileNet's -1..1 out of the preprocess layer
    out = np.asarray(p.preprocess(np.array([[[[0.0, 127.5, 255.0]]]], np.float32)))
    np.testing.assert_allclose(out.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)
    probs = np.asarray(small_model(_faces(), training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_inference_model_shares_weights_and_drops_augmentation(small_model):
    from train.model import inference_model

    inf = inference_model(small_model)
    names = [layer.name for layer in inf.layers]
    assert "augment" not in names and names[-1] == "predictions"
    x = _faces()
    np.testing.assert_allclose(np.asarray(inf(x)), np.asarray(small_model(x, training=False)), atol=1e-6)


def test_feature_and_head_models_compose_to_the_model(small_model):
    from train.model import feature_model, head_model

    x = _faces()
    feats = feature_model(small_model).predict(x, verbose=0)
    assert feats.shape == (4, 1280)
    np.testing.assert_allclose(head_model(small_model)(feats), small_model(x, training=False), atol=1e-5)


def test_augmentation_is_identity_at_inference_and_varies_in_training(small_model):
    from train.model import parts

    aug = parts(small_model).augment
    layer_names = [layer.name for layer in aug.layers]
    assert "low_resolution" in layer_names and "random_gamma" in layer_names
    x = _faces(8)
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
    y1, y2 = np.asarray(aug(x, training=True)), np.asarray(aug(x, training=True))
    assert y1.shape == x.shape and not np.allclose(y1, x) and not np.allclose(y1, y2)
    assert y1.min() >= -1e-3 and y1.max() <= 255.0 + 1e-3


def test_low_resolution_layer_blurs_away_fine_detail():
    from train.augment import custom_layers

    low_res, _ = custom_layers()
    layer = low_res(rate=1.0, min_size=8, seed=1)
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255.0).astype(np.float32)
    x = np.repeat(checker[None, :, :, None], 3, axis=3).repeat(2, axis=0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape
    assert np.abs(np.diff(y, axis=2)).mean() < 0.2 * np.abs(np.diff(x, axis=2)).mean()  # pixel-level detail gone


def test_random_gamma_keeps_pixel_order_and_range():
    from train.augment import custom_layers

    _, gamma = custom_layers()
    layer = gamma(rate=1.0, gamma_range=(1.5, 2.0), seed=3)
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    x = np.broadcast_to(ramp[None, None, :, None], (1, 64, 64, 3)).copy()
    y = np.asarray(layer(x, training=True))[0, 0, :, 0]
    assert np.all(np.diff(y) >= -1e-4) and y[0] == pytest.approx(0, abs=1e-3) and y[-1] == pytest.approx(255, abs=1e-2)
    assert y[32] < ramp[32] * 0.75  # gamma > 1 darkens the mid tones: a dim entrance
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_finetune_unfreezes_only_the_top_layers_and_keeps_batchnorm_frozen(small_model):
    import keras

    from train.model import parts, set_finetune

    base = parts(small_model).base
    set_finetune(small_model, 12)
    try:
        flags = [(layer.trainable, isinstance(layer, keras.layers.BatchNormalization)) for layer in base.layers]
        assert not any(t for t, _ in flags[:-12])
        assert all(t != bn for t, bn in flags[-12:])
        assert any(bn for _, bn in flags[-12:])
    finally:
        base.trainable = False


def test_options_the_backbone_cannot_take(tmp_path):
    from train.model import check_options

    with pytest.raises(ValueError, match="--input-size 24: mobilenet_v2 takes square inputs of 32"):
        check_options("mobilenet_v2", 24, 1.0, "none")
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        check_options("alexnet", 128, 1.0, "none")
    with pytest.raises(ValueError, match="no width multiplier"):
        check_options("resnet50", 128, 0.5, "none")
    with pytest.raises(ValueError, match="ImageNet weights only for alpha"):
        check_options("mobilenet_v3_small", 128, 0.5, "imagenet")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        check_options("mobilenet_v2", 128, 1.0, str(tmp_path / "missing.h5"))
    assert check_options("mobilenet_v2", 32, 0.35, "none").name == "mobilenet_v2"


def test_caffe_backbones_get_bgr_mean_subtraction_as_a_builtin_layer():
    import keras

    from train.model import BACKBONES, _preprocess_layer

    layer = _preprocess_layer(BACKBONES["resnet50"], keras)
    assert isinstance(layer, keras.layers.Conv2D) and not layer.trainable
    out = np.asarray(layer(np.array([[[[10.0, 20.0, 30.0]]]], np.float32))).ravel()
    np.testing.assert_allclose(out, [30 - 103.939, 20 - 116.779, 10 - 123.68], atol=1e-4)


def test_imagenet_weights_come_from_the_cache_at_any_input_size(keras_home):
    import h5py

    from train.model import build_model, imagenet_weights_path, parts

    path = imagenet_weights_path("mobilenet_v2", 1.0)
    assert path == keras_home / "models" / shared_runs.KERAS_CACHE_FILE
    model = build_model("mobilenet_v2", input_size=96, weights="imagenet", augment=False, dropout=0.0)
    with h5py.File(path, "r") as f:
        expected = np.asarray(f["Conv1"]["Conv1/kernel"])
    got = parts(model).base.get_layer("Conv1").kernel.numpy()
    np.testing.assert_array_equal(got, expected)
    assert model.input_shape == (None, 96, 96, 3)
    from_path = build_model("mobilenet_v2", input_size=64, weights=str(path), augment=False)  # --weights PATH
    np.testing.assert_array_equal(parts(from_path).base.get_layer("Conv1").kernel.numpy(), expected)
    # pretrained BatchNorm stays in inference mode even in a training step
    x = _faces(4, 96)
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-6)


def test_from_scratch_batchnorm_learns_batch_statistics():
    """With --weights none BatchNorm has no statistics to keep, so a training step uses the batch's."""
    from train.model import build_model, set_finetune

    model = build_model("mobilenet_v2", input_size=64, alpha=0.35, weights="none", augment=False, dropout=0.0)
    x = _faces(4)
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), atol=1e-6)  # frozen
    set_finetune(model, 10**6, train_batchnorm=True)
    assert not np.allclose(model(x, training=True), model(x, training=False), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "efficientnet_b0"])
def test_other_backbones_follow_the_same_contract(backbone):
    from train.model import build_model, inference_model

    model = build_model(backbone, input_size=64, weights="none", augment=True)
    probs = np.asarray(inference_model(model)(_faces(2)))
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
