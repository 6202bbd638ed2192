"""The one factory the rest of the device uses: a detector by name (``yunet``, ``short``, ``full``).

Each backend module (and its OpenCV / LiteRT imports) loads only when a detector of its kind is
built; the backends import only the interface in :mod:`device.detectors.base`.
"""

from __future__ import annotations

from pathlib import Path

from device.detectors.base import DEFAULT_KIND, KINDS, FaceDetector


def make_detector(
    kind: str = DEFAULT_KIND,
    model_path: Path | None = None,
    score_threshold: float | None = None,
    min_face: int = 0,
    num_threads: int | None = None,
    iou_threshold: float = 0.3,
    mirror: bool = False,
) -> FaceDetector:
    """A ready detector of ``kind``; ``score_threshold`` None means the model's usual default.

    ``mirror`` also runs it on the mirror image and keeps the union (:mod:`device.detectors.mirror`;
    the daemon's ``detector.mirror`` defaults to :data:`~device.detectors.base.DEFAULT_MIRROR`).

    ``min_face`` drops faces whose box is smaller than that many pixels on its shorter side
    (far-away faces are too small for the mask classifier to judge anyway).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {', '.join(KINDS)}")
    if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(f"score_threshold must be within 0..1, got {score_threshold!r}")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be within (0, 1], got {iou_threshold!r}")
    if min_face < 0:
        raise ValueError(f"min_face must be >= 0, got {min_face!r}")
    detector = _build(kind, model_path, score_threshold, min_face, num_threads, iou_threshold)
    if not mirror:
        return detector
    from device.detectors.mirror import MirroredDetector

    return MirroredDetector(detector, iou_threshold=iou_threshold)


def _build(kind: str, model_path: Path | None, score_threshold: float | None, min_face: int,
           num_threads: int | None, iou_threshold: float) -> FaceDetector:
    if kind == "yunet":
        # The backend follows the file: a converted .tflite runs on LiteRT, the zoo's .onnx on
        # OpenCV's DNN (slower, but needs no conversion).
        if model_path is None:
            from device.detectors.yunet_litert import default_model_path

            model_path = default_model_path()
        if Path(model_path).suffix.lower() == ".onnx":
            from device.detectors.yunet import YuNetDetector

            return YuNetDetector(Path(model_path), score_threshold=score_threshold, min_face=min_face,
                                 nms_threshold=iou_threshold, num_threads=num_threads)
        from device.detectors.yunet_litert import YuNetLiteRTDetector

        return YuNetLiteRTDetector(Path(model_path), score_threshold=score_threshold, min_face=min_face,
                                   nms_threshold=iou_threshold, num_threads=num_threads)

    from device.detectors.blazeface import BlazeFaceDetector

    if model_path is None:
        from device.detectors.model_files import model_path as fetched_model_path

        model_path = fetched_model_path(kind)
    return BlazeFaceDetector(Path(model_path), kind=kind, score_threshold=score_threshold,
                             min_face=min_face, num_threads=num_threads, iou_threshold=iou_threshold)
