"""The mask classifier: a pretrained backbone with the contract's input and a small softmax head.

Layout of every model built here (layer names matter, :func:`parts` finds them)::

    image (raw RGB 0..255 float) -> augment (training only) -> preprocess (the backbone's own
    normalization) -> backbone (called with training=False: BatchNorm stays in inference mode)
    -> pool -> head_dropout -> predictions (softmax, one output per label)

Normalization is a layer, so raw pixels go in on the workstation and on the Pi alike, and the
saved/converted model needs nothing from outside to be used correctly.
ImageNet weights are resolved here with a clear error when they are not cached and cannot be
downloaded, before any training work starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WEIGHTS_ROOT = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications
    #: "tf": scale to -1..1 here; "caffe": RGB->BGR minus ImageNet mean here;
    #: "builtin": the Keras application normalizes 0..255 itself.
    preprocessing: str
    alphas: tuple[float, ...] = (1.0,)  # width multipliers with published ImageNet weights
    min_size: int = 32

    def weights_file(self, alpha: float) -> str:
        """File name Keras caches the no-top ImageNet weights under (in $KERAS_HOME/models/)."""
        a = float(alpha)
        if self.name == "mobilenet_v2":
            # The 224 px file for every input size: the conv weights do not depend on it.
            return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{a}_224_no_top.h5"
        if self.name.startswith("mobilenet_v3"):
            kind = self.name.rsplit("_", 1)[1]
            return f"weights_mobilenet_v3_{kind}_224_{a}_float_no_top_v2.h5"
        return {
            "efficientnet_b0": "efficientnetb0_notop.h5",
            "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        }[self.name]

    def origin(self, alpha: float) -> str:
        folder = {
            "mobilenet_v2": "mobilenet_v2/",
            "mobilenet_v3_small": "mobilenet_v3/",
            "mobilenet_v3_large": "mobilenet_v3/",
            "resnet50": "resnet/",
            "vgg16": "vgg16/",
        }
        if self.name == "efficientnet_b0":
            return "https://storage.googleapis.com/keras-applications/" + self.weights_file(alpha)
        return WEIGHTS_ROOT + folder[self.name] + self.weights_file(alpha)

    def file_hash(self, alpha: float) -> str | None:
        """The hash Keras itself checks these files against (md5), where it has one."""
        a = float(alpha)
        return {
            ("mobilenet_v3_small", 1.0): "d3e8ec802a04aa4fc771ee12a9a9b836",
            ("mobilenet_v3_small", 0.75): "ebdb5cc8e0b497cd13a7c275d475c819",
            ("mobilenet_v3_large", 1.0): "07fb09a5933dd0c8eaafa16978110389",
            ("mobilenet_v3_large", 0.75): "40af19a13ebea4e2ee0c676887f69a2e",
            ("efficientnet_b0", 1.0): "50bc09e76180e00e4465e1a485ddc09d",
            ("resnet50", 1.0): "4d473c1dd8becc155b73f8504c6f6626",
            ("vgg16", 1.0): "6d6bbae143d832006294945121d1f1fc",
        }.get((self.name, a))


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("mobilenet_v2", "MobileNetV2", "tf", alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
        Backbone("mobilenet_v3_small", "MobileNetV3Small", "builtin", alphas=(0.75, 1.0)),
        Backbone("mobilenet_v3_large", "MobileNetV3Large", "builtin", alphas=(0.75, 1.0)),
        Backbone("efficientnet_b0", "EfficientNetB0", "builtin"),
        Backbone("resnet50", "ResNet50", "caffe"),
        Backbone("vgg16", "VGG16", "caffe"),
    )
}

#: EfficientNet's extra input scaling that Keras adds only when it loads ImageNet weights itself.
_EFFICIENTNET_STDDEV_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
MAX_INPUT_SIZE = 1024


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


def check_options(backbone: str, input_size: int, alpha: float, weights: str) -> Backbone:
    """Reject what the backbone cannot take, before anything is built or loaded."""
    bb = get_backbone(backbone)
    if not isinstance(input_size, int) or not bb.min_size <= input_size <= MAX_INPUT_SIZE:
        raise ValueError(
            f"--input-size {input_size}: {backbone} takes square inputs of {bb.min_size}..{MAX_INPUT_SIZE} px"
        )
    if not alpha > 0:
        raise ValueError(f"--alpha must be > 0, got {alpha}")
    if bb.alphas == (1.0,) and float(alpha) != 1.0:
        raise ValueError(f"--alpha {alpha}: {backbone} has no width multiplier (use 1.0)")
    if weights == "imagenet" and float(alpha) not in bb.alphas:
        raise ValueError(
            f"--alpha {alpha}: {backbone} has ImageNet weights only for alpha "
            f"{', '.join(str(a) for a in bb.alphas)}; use one of those or --weights none"
        )
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: file not found (use imagenet, none or a weights file)")
    return bb


def keras_home() -> Path:
    """Keras's cache folder as Keras resolves it: $KERAS_HOME, else ~/.keras."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def imagenet_weights_path(backbone: str, alpha: float = 1.0) -> Path:
    """The cached ImageNet file for ``backbone``, downloading it if that works; else a clear error."""
    bb = get_backbone(backbone)
    fname = bb.weights_file(alpha)
    cached = keras_home() / "models" / fname
    if cached.is_file():
        return cached
    import keras

    try:
        got = keras.utils.get_file(fname, bb.origin(alpha), cache_subdir="models",
                                   cache_dir=str(keras_home()), file_hash=bb.file_hash(alpha))
    except Exception as exc:  # offline, proxy, disk: all end the same way for the user
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RuntimeError(
            f"ImageNet weights for {backbone} (alpha {float(alpha)}) are not cached and could not be "
            f"downloaded ({reason}). Expected file: {cached} ($KERAS_HOME/models/{fname}). "
            f"Put the file there (or set KERAS_HOME to a cache holding it), pass a weights file with "
            f"--weights PATH, or train from scratch with --weights none."
        ) from None
    return Path(got)


def _preprocess_layer(bb: Backbone, keras: Any):
    if bb.preprocessing == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    if bb.preprocessing == "caffe":
        # RGB->BGR and mean subtraction as a frozen 1x1 convolution: a built-in layer, so the
        # saved model loads anywhere without our code and converts to TFLite as one op.
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_c in range(3):
            kernel[0, 0, 2 - out_c, out_c] = 1.0
        layer = keras.layers.Conv2D(3, 1, name="preprocess", trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([kernel, -np.array(_CAFFE_MEAN_BGR, np.float32)])
        return layer
    return keras.layers.Identity(name="preprocess")


def _make_base(bb: Backbone, input_size: int, alpha: float, weights: str):
    import keras

    ctor = getattr(keras.applications, bb.constructor)
    kwargs: dict[str, Any] = {"input_shape": (input_size, input_size, 3), "include_top": False,
                              "weights": None, "name": "backbone"}
    if bb.alphas != (1.0,):
        kwargs["alpha"] = float(alpha)
    base = ctor(**kwargs)
    if weights == "none":
        return base
    path = imagenet_weights_path(bb.name, alpha) if weights == "imagenet" else Path(weights)
    log.info("loading %s weights from %s", bb.name, path)
    try:
        base.load_weights(str(path))
    except Exception as exc:
        raise ValueError(f"--weights {path}: cannot load into {bb.name} alpha {alpha} ({exc})") from None
    if weights == "imagenet" and bb.name == "efficientnet_b0":
        _fold_efficientnet_scaling(base)
    return base


def _fold_efficientnet_scaling(base) -> None:
    """Fold the Rescaling Keras adds after EfficientNet's Normalization into its variance.

    Keras's own ``weights="imagenet"`` path divides once more by sqrt(stddev); building with
    weights=None and loading the file ourselves skips that layer, and (x-m)/sqrt(v)/sqrt(s)
    equals (x-m)/sqrt(v*s).
    """
    import keras

    norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    var = np.asarray(norm.adapt_variance.numpy()) * np.array(_EFFICIENTNET_STDDEV_RGB, np.float32)
    norm.adapt_variance.assign(var)
    norm.finalize_state()


def build_model(
    backbone: str = "mobilenet_v2",
    input_size: int = 128,
    n_classes: int = 2,
    alpha: float = 1.0,
    weights: str = "imagenet",
    augment: bool = True,
    dropout: float = 0.2,
    augment_config=None,
    seed: int = 0,
):
    """A Keras model taking raw RGB 0..255 float (N, S, S, 3) and returning softmax (N, n_classes).

    ``weights``: "imagenet" (Keras cache, clear error when offline without it), "none" or a
    path to a weights file of the backbone. Augmentation layers act in training only.
    """
    import keras

    bb = check_options(backbone, input_size, alpha, weights)
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    base = _make_base(bb, input_size, alpha, weights)
    base.trainable = False

    inp = keras.Input((input_size, input_size, 3), name="image")
    x = inp
    if augment:
        from train.augment import build_augmentation

        x = build_augmentation(augment_config, seed=seed)(x)
    x = _preprocess_layer(bb, keras)(x)
    # Pretrained: BatchNorm keeps its ImageNet statistics (inference mode, also while fine-tuning).
    # From scratch there are no statistics to keep: BatchNorm must learn them from batches.
    x = base(x) if weights == "none" else base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout", seed=seed)(x)
    out = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name=f"maskwatch_{bb.name}")


@dataclass
class Parts:
    augment: Any | None
    preprocess: Any
    base: Any
    pool: Any
    dropout: Any
    head: Any
    input_size: int


def parts(model) -> Parts:
    """The named pieces of a model made by :func:`build_model` (also after save/load)."""
    import keras

    names = {layer.name: layer for layer in model.layers}
    base = names.get("backbone") or next(
        (la for la in model.layers if isinstance(la, keras.Model) and la.name != "augment"), None)
    missing = [n for n in ("preprocess", "pool", "head_dropout", "predictions") if n not in names]
    if base is None or missing:
        raise ValueError(f"model {model.name!r} was not built by train.model.build_model (missing {missing or 'backbone'})")
    return Parts(augment=names.get("augment"), preprocess=names["preprocess"], base=base, pool=names["pool"],
                 dropout=names["head_dropout"], head=names["predictions"], input_size=int(model.input_shape[1]))


def inference_model(model):
    """The same layers (shared weights) without augmentation: what gets saved and converted."""
    import keras

    p = parts(model)
    inp = keras.Input((p.input_size, p.input_size, 3), name="image")
    x = p.preprocess(inp)
    x = p.base(x, training=False)
    x = p.pool(x)
    x = p.dropout(x)
    out = p.head(x)
    return keras.Model(inp, out, name=model.name)


def feature_model(model):
    """Raw pixels -> pooled backbone features (no augmentation): computed once for the head phase."""
    import keras

    p = parts(model)
    inp = keras.Input((p.input_size, p.input_size, 3), name="image")
    x = p.base(p.preprocess(inp), training=False)
    return keras.Model(inp, p.pool(x), name="features")


def head_model(model):
    """Pooled features -> softmax, sharing the head's layers with ``model``."""
    import keras

    p = parts(model)
    inp = keras.Input((int(p.head.kernel.shape[0]),), name="features")
    return keras.Model(inp, p.head(p.dropout(inp)), name="head")


def set_finetune(model, n_layers: int, train_batchnorm: bool = False) -> int:
    """Unfreeze the top ``n_layers`` layers of the backbone; BatchNorm layers stay frozen.

    With pretrained weights BatchNorm also runs in inference mode (the backbone is called with
    training=False), so its ImageNet statistics are not disturbed by small, mixed batches.
    ``train_batchnorm`` is for training from scratch. Returns the number of trainable weight
    tensors in the backbone.
    """
    import keras

    base = parts(model).base
    base.trainable = True
    cut = max(0, len(base.layers) - int(n_layers))
    for i, layer in enumerate(base.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= cut and (train_batchnorm or not is_bn)
    return len(base.trainable_weights)


def load_model(path: Path):
    """Load a saved ``.keras`` classifier (our custom augmentation layers registered first)."""
    import keras

    from train.augment import custom_layers

    custom_layers()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot load as a Keras model ({exc})") from None
