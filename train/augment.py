"""Training-only augmentation, as Keras preprocessing layers inside the model.

Every layer here returns its input unchanged unless it is called with ``training=True``, so
``tf.lite.TFLiteConverter.from_keras_model`` (which traces inference) drops them, and the saved
inference model (see :func:`train.model.inference_model`) leaves them out altogether.

Besides the usual flips, small rotations, zoom, shifts and colour jitter, two layers mimic what
the entrance camera sees and web photos rarely show: faces under 32 px that the contract
upscales to the model input (:class:`LowResolution`) and dim, badly exposed scenes
(:class:`RandomGamma`). :class:`keras.layers.RandomPerspective` stands in for partly turned
faces, :class:`keras.layers.RandomGrayscale` for cameras that switch to black and white at night.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class AugmentConfig:
    """Strengths of the augmentations; 0 switches one off."""

    flip: bool = True
    rotation: float = 0.03  # fraction of a full turn: +-11 degrees
    zoom: float = 0.15  # +-15 % (the crop margin varies between detectors and datasets)
    translation: float = 0.08  # fraction of the side
    perspective: float = 0.3  # probability of a perspective warp (partly turned face)
    perspective_scale: float = 0.3  # how far the corners move
    brightness: float = 0.2
    contrast: float = 0.25
    grayscale: float = 0.05  # probability
    gamma_rate: float = 0.3  # probability of a gamma change (low light / over exposure)
    gamma_range: tuple[float, float] = (0.6, 2.2)  # gamma > 1 darkens
    low_res_rate: float = 0.3  # probability of downscale-then-upscale (faces far from the camera)
    low_res_min: int = 12  # smallest simulated face side in pixels
    blur: float = 0.0  # probability-like strength of a Gaussian blur (optional, off by default)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gamma_range"] = list(self.gamma_range)
        return d


@functools.cache
def custom_layers() -> tuple[type, type]:
    """(LowResolution, RandomGamma): defined on first use so importing this module stays TF-free.

    Registered as ``maskwatch>LowResolution`` / ``maskwatch>RandomGamma`` so a training model
    saved with them loads again once this function has run.
    """
    import keras
    from keras import ops

    class _LowResolution(keras.layers.Layer):
        """Downscale a random share of the batch to a small size and upscale it back.

        One small size per batch (drawn between ``min_size`` and half the input), applied to
        each image with probability ``rate``: a face 12-64 px wide in the camera frame is
        exactly this after ``crop_face`` resizes it to the model input.
        """

        def __init__(self, rate: float = 0.3, min_size: int = 12, seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.rate = float(rate)
            self.min_size = int(min_size)
            self.seed = seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=None):
            if not training or self.rate <= 0:
                return images
            import tensorflow as tf

            h, w = int(images.shape[1]), int(images.shape[2])
            top = max(self.min_size + 1, min(h, w) // 2 + 1)
            side = keras.random.randint((), self.min_size, top, seed=self.seed_generator, dtype="int32")
            small = tf.image.resize(images, tf.stack([side, side]), method="area")
            back = tf.image.resize(small, (h, w), method="bilinear")
            n = ops.shape(images)[0]
            pick = keras.random.uniform((n, 1, 1, 1), seed=self.seed_generator) < self.rate
            return ops.where(pick, ops.cast(back, images.dtype), images)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "rate": self.rate, "min_size": self.min_size, "seed": self.seed}

    class _RandomGamma(keras.layers.Layer):
        """Per-image gamma on 0..255 pixels with probability ``rate`` (dim or washed-out scenes)."""

        def __init__(self, rate: float = 0.3, gamma_range=(0.6, 2.2), seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.rate = float(rate)
            self.gamma_range = (float(gamma_range[0]), float(gamma_range[1]))
            self.seed = seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=None):
            if not training or self.rate <= 0:
                return images
            n = ops.shape(images)[0]
            lo, hi = np.log(self.gamma_range[0]), np.log(self.gamma_range[1])
            gamma = ops.exp(keras.random.uniform((n, 1, 1, 1), lo, hi, seed=self.seed_generator))
            out = 255.0 * ops.power(ops.clip(images, 0.0, 255.0) / 255.0, gamma)
            pick = keras.random.uniform((n, 1, 1, 1), seed=self.seed_generator) < self.rate
            return ops.where(pick, ops.cast(out, images.dtype), images)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "rate": self.rate, "gamma_range": list(self.gamma_range),
                    "seed": self.seed}

    register = keras.saving.register_keras_serializable(package="maskwatch")
    _LowResolution.__name__ = _LowResolution.__qualname__ = "LowResolution"
    _RandomGamma.__name__ = _RandomGamma.__qualname__ = "RandomGamma"
    return register(_LowResolution), register(_RandomGamma)


def build_augmentation(config: AugmentConfig | None = None, seed: int = 0, name: str = "augment"):
    """A ``keras.Sequential`` of augmentation layers for raw RGB 0..255 float images."""
    import keras

    low_res_cls, gamma_cls = custom_layers()
    c = config or AugmentConfig()
    layers: list = []

    def s(i: int) -> int:  # distinct, reproducible seed per layer
        return int(seed) * 1000 + i

    if c.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=s(1)))
    if c.rotation > 0:
        layers.append(keras.layers.RandomRotation(c.rotation, fill_mode="reflect", seed=s(2)))
    if c.zoom > 0:
        layers.append(keras.layers.RandomZoom((-c.zoom, c.zoom), fill_mode="reflect", seed=s(3)))
    if c.translation > 0:
        layers.append(keras.layers.RandomTranslation(c.translation, c.translation, fill_mode="reflect",
                                                     seed=s(4)))
    if c.perspective > 0:
        layers.append(keras.layers.RandomPerspective(factor=c.perspective, scale=c.perspective_scale, seed=s(5)))
    if c.low_res_rate > 0:
        layers.append(low_res_cls(rate=c.low_res_rate, min_size=c.low_res_min, seed=s(6), name="low_resolution"))
    if c.blur > 0:
        layers.append(keras.layers.RandomGaussianBlur(factor=c.blur, kernel_size=5, sigma=(0.1, 1.5),
                                                      value_range=(0, 255), seed=s(7)))
    if c.brightness > 0:
        layers.append(keras.layers.RandomBrightness(c.brightness, value_range=(0, 255), seed=s(8)))
    if c.contrast > 0:
        layers.append(keras.layers.RandomContrast(c.contrast, value_range=(0, 255), seed=s(9)))
    if c.gamma_rate > 0:
        layers.append(gamma_cls(rate=c.gamma_rate, gamma_range=c.gamma_range, seed=s(10), name="random_gamma"))
    if c.grayscale > 0:
        layers.append(keras.layers.RandomGrayscale(factor=c.grayscale, seed=s(11)))
    return keras.Sequential(layers, name=name)
