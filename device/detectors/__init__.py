"""Face detectors: BlazeFace and YuNet on LiteRT, YuNet on OpenCV's DNN.

Only the light interface is imported here; a detector's module (and its OpenCV / LiteRT
imports) loads when :func:`make_detector` builds one.
"""

from device.detectors.base import DEFAULT_KIND, DEFAULT_MIRROR, KEYPOINT_NAMES, KINDS, Face, FaceDetector
from device.detectors.factory import make_detector

__all__ = ["DEFAULT_KIND", "DEFAULT_MIRROR", "KEYPOINT_NAMES", "KINDS", "Face", "FaceDetector", "make_detector"]
