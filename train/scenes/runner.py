"""Scene photos through the daemon's own per-frame code, for several detectors side by side.

Each detector gets what a daemon with that detector would have: a :class:`device.pipeline.Pipeline`
(detect, the daemon's face filter with its default ``min_face``, every kept face classified in
one batch by its own :class:`device.classifier.MaskClassifier`) on the same ``--threads``. The
tracker is left out: scene photos are unrelated stills, so a face is flagged on its one frame by
the card's rule (:func:`device.decision.decide`, P(alert) >= threshold), which is what the
tracker applies to a person's score. Time per frame is the pipeline's own detect and classify
timings, measured in this run with the detectors interleaved (each photo visits every detector,
starting at a rotating one) so a busy moment on the machine slows all of them alike.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.contract import INCORRECT_MASK, THREE_CLASS_LABELS, WITH_MASK, crop_face, sha256_file
from device.decision import decide
from device.metrics import latency_summary
from train.data import voc
from train.scenes import voc_scenes
from train.scenes.detector_specs import DetectorSpec, detector_name, input_size_of
from train.scenes.matching import (
    MASKED_MIN_SIZE,
    MATCH_IOU,
    SIZE_BINS,
    SceneOutcome,
    alert_mistakes,
    match_faces,
    score_scene,
    summarize,
)

log = logging.getLogger(__name__)

#: Untimed passes of every detector over the first photo (first invokes allocate and warm caches).
WARMUP = 3
#: mistakes.png: at most this many crops per detector (all mistakes are listed in report.json),
#: each this many px, as the classifier saw it (its crop box and the card's margin).
MAX_MISTAKE_CROPS = 48
MISTAKE_CROP_PX = 96
#: Where run_scenes' result holds those crops, by detector name, until write_outputs draws them.
MISTAKE_CROPS_KEY = "_mistake_crops"


class NoTracker:
    """Stands in for the tracker: unrelated stills have nobody to follow from one to the next."""

    tracks: list = []

    def update(self, *args: Any, **kwargs: Any) -> list:
        return []


@dataclass
class SceneConfig:
    voc: list[Path]
    model: Path
    detectors: list[DetectorSpec]
    threads: int = 2
    split_of: Path | None = None
    split: str = "test"
    min_face: int | None = None  # the daemon's detector.min_face; None = its default
    limit: int | None = None
    frame_size: tuple[int, int] = voc_scenes.FRAME_SIZE
    fit: str = "shrink"  # how a photo becomes a frame: voc_scenes.FITS
    default_kind: str | None = None  # marks the daemon's default detector in the report


@dataclass
class Lane:
    """One detector setting and everything measured with it."""

    spec: DetectorSpec
    name: str
    input_size: tuple[int, int]
    pipeline: Any
    outcomes: list[SceneOutcome] = field(default_factory=list)
    #: (detector box, annotated box) of every counted face it found: what box_calibration is fitted on.
    matched: list[tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=list)
    #: Found faces the alert got wrong (report.json) and the first crops of them (mistakes.png).
    mistakes: list[dict[str, Any]] = field(default_factory=list)
    mistake_crops: list[np.ndarray] = field(default_factory=list)
    ms: dict[str, list[float]] = field(default_factory=lambda: {"detect": [], "classify": [], "total": []})


def daemon_pipeline_options(min_face: int | None) -> dict[str, Any]:
    """The [detector] settings the daemon hands its Pipeline, at their defaults (device.config).

    Every keyword option of :class:`device.pipeline.Pipeline` that is also a ``detector.*`` setting
    (``min_face``, ``ignore_regions``, and any the pipeline gains later) takes the config's default,
    so the benchmark filters faces exactly as a daemon with a default config; ``min_face`` may be
    overridden.
    """
    import inspect

    from device.config import DetectorConfig
    from device.pipeline import Pipeline

    defaults = DetectorConfig()
    options = {name: getattr(defaults, name) for name, p in inspect.signature(Pipeline).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and hasattr(defaults, name)}
    if min_face is not None:
        options["min_face"] = int(min_face)
    return options


def alert_flags(probs: np.ndarray, labels: Sequence[str], alert_labels: Sequence[str], threshold: float) -> np.ndarray:
    """Which faces the daemon alerts on: P(alert labels), summed, at or above the threshold (a
    3-label model flags a face split between "no mask" and "mask under the nose")."""
    indices = [list(labels).index(label) for label in alert_labels]
    return np.isin(decide(probs, indices, threshold), indices)


def daemon_default_kind() -> str:
    from device.config import DetectorConfig

    return str(DetectorConfig().kind)


def progress(items: Sequence, desc: str) -> Iterable:
    """The project's progress bar (tqdm, shown on a terminal only); plain iteration without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="photo", disable=None, mininterval=2.0)


def build_lanes(cfg: SceneConfig, options: dict[str, Any]) -> list[Lane]:
    from device.classifier import MaskClassifier
    from device.detectors.mirror import MirroredDetector
    from device.pipeline import Pipeline

    lanes = []
    names: set[str] = set()
    for spec in cfg.detectors:
        # errors name the model file
        detector = spec.build(min_face=int(options.get("min_face", 0)), num_threads=cfg.threads)
        clf = MaskClassifier(cfg.model, num_threads=cfg.threads)
        size = input_size_of(detector, cfg.frame_size)
        name = detector_name(spec, size, mirrored=isinstance(detector, MirroredDetector))
        if name in names:
            raise ValueError(f"--detector {spec.text!r} is given twice")
        names.add(name)
        lanes.append(Lane(spec, name, size, Pipeline(detector, clf, NoTracker(), **options)))
    return lanes


def run_scenes(cfg: SceneConfig) -> dict:
    """Measure every detector on the scenes; returns the ``report.json`` document."""
    if not cfg.detectors:
        raise ValueError("no --detector given")
    if cfg.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {cfg.threads}")
    model = Path(cfg.model)
    if not model.is_file():
        raise FileNotFoundError(f"classifier model not found: {model}")
    found = voc_scenes.find_scenes(cfg.voc)
    annotated = len(found.scenes) + len(found.skipped)
    if cfg.split_of is not None:
        found = voc_scenes.keep_split(found, Path(cfg.split_of), cfg.split)
    scenes = found.scenes[: cfg.limit] if cfg.limit else found.scenes
    options = daemon_pipeline_options(cfg.min_face)
    lanes = build_lanes(cfg, options)
    card = lanes[0].pipeline.classifier.card
    alert_labels = tuple(card.alerts)
    threshold = float(card.threshold)

    skipped = list(found.skipped)
    left_out: dict[str, int] = {}
    faces_by_class: dict[str, int] = dict.fromkeys(THREE_CLASS_LABELS, 0)
    used = 0
    warm = False
    log.info("%d scene photos, %d detector(s): %s", len(scenes), len(lanes), ", ".join(la.name for la in lanes))
    for i, scene in enumerate(progress(scenes, "scenes")):
        rgb = voc_scenes.read_scene_rgb(scene.image, scene.annotated_size)
        if rgb is None:
            log.warning("%s: not a readable image; skipped", scene.image)
            skipped.append(voc_scenes.Skip(str(scene.image), "unreadable", "missing, empty or not a decodable image"))
            continue
        frame, scale = voc_scenes.place_on_frame(rgb, cfg.frame_size, cfg.fit)
        truth, dropped = voc_scenes.truth_faces(scene.objects, scale, (rgb.shape[1], rgb.shape[0]))
        for why, n in dropped.items():
            left_out[why] = left_out.get(why, 0) + n
        for t in truth:
            if t.counted:
                faces_by_class[t.label] = faces_by_class.get(t.label, 0) + 1
        if not warm:
            for lane in lanes:
                for _ in range(WARMUP):
                    lane.pipeline.process(frame, 0.0)
            warm = True
        for k in range(len(lanes)):
            lane = lanes[(i + k) % len(lanes)]
            result = lane.pipeline.process(frame, float(i))
            flagged = alert_flags(result.probs, card.labels, alert_labels, threshold)
            boxes = [f.box for f in result.faces]
            lane.outcomes.append(score_scene(truth, boxes, flagged.tolist()))
            lane.matched += matched_boxes(truth, boxes)
            note_mistakes(lane, scene.image, frame, truth, result, flagged, card)
            det, cls = result.timings_ms["detect"], result.timings_ms["classify"]
            lane.ms["detect"].append(det)
            lane.ms["classify"].append(cls)
            lane.ms["total"].append(det + cls)
        used += 1
    if not used:
        raise ValueError(f"none of the {len(scenes)} scene photos could be read (first: {scenes[0].image})")
    if skipped:
        log.warning("skipped %d scene photos (listed in report.json)", len(skipped))

    default_kind = cfg.default_kind or daemon_default_kind()
    return {
        "settings": {
            "voc": [str(p) for p in cfg.voc],
            "split_of": str(cfg.split_of) if cfg.split_of is not None else None,
            "split": cfg.split if cfg.split_of is not None else None,
            "model": str(model),
            "model_sha256": sha256_file(model),
            "quantization": card.quantization,
            "labels": list(card.labels),
            "alert_label": card.alert_label,
            "alert_labels": list(card.alerts),
            "threshold": threshold,
            "threads": cfg.threads,
            "frame_size": list(cfg.frame_size),
            "frame_rule": {"shrink": "photo shrunk to fit when larger (never enlarged), top-left, rest black",
                           "fill": "photo scaled to fill the frame (up or down), top-left, rest black"}[cfg.fit],
            "fit": cfg.fit,
            "detector_min_face": options.get("min_face", 0),
            "pipeline_options": options,
            "annotated_min_face": voc.DEFAULT_MIN_FACE,
            "face_size": "longer side of the annotated box, in px on the frame (as the import measures faces)",
            "match_iou": MATCH_IOU,
            "size_bins": [list(b) for b in SIZE_BINS],
            "masked_min_size": MASKED_MIN_SIZE,
            "time_per_frame": "detect (incl. the face filter) + classify, the pipeline's own timings",
        },
        "scenes": {
            "annotated": annotated,
            "filtered_out": found.filtered,
            "used": used,
            "skipped": [vars(s) for s in skipped],
            "faces": faces_by_class,
            "faces_total": sum(faces_by_class.values()),
            "left_out": dict(sorted(left_out.items())),
        },
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "backend": lanes[0].pipeline.classifier.backend},
        "detectors": [lane_report(lane, card.alert_label, default_kind) for lane in lanes],
        # pixels, not JSON: write_outputs takes them out and draws mistakes.png
        MISTAKE_CROPS_KEY: {lane.name: lane.mistake_crops for lane in lanes},
    }


def matched_boxes(truth: Sequence[Any], boxes: Sequence[Sequence[float]]) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(detector box, annotated box) for every counted annotated face a detection found (the
    benchmark's own one-to-one matching)."""
    pairs = match_faces([t.box for t in truth], boxes, MATCH_IOU)
    return [(tuple(boxes[d]), tuple(truth[t].box)) for t, d in pairs if truth[t].counted]


def note_mistakes(lane: Lane, photo: Path, frame: np.ndarray, truth: Sequence[Any], result: Any,
                  flagged: np.ndarray, card: Any) -> None:
    """Add this frame's alert mistakes (:func:`alert_mistakes`) to ``lane``: each listed, the first
    :data:`MAX_MISTAKE_CROPS` also kept as the crop the classifier was given."""
    boxes = [f.box for f in result.faces]
    for d, t, kind in alert_mistakes(truth, boxes, flagged.tolist(), card.alert_label, WITH_MASK):
        face = truth[t]
        lane.mistakes.append({"photo": str(photo), "kind": kind, "label": face.label, "size": round(face.size, 1),
                              "alert_score": round(float(result.alert_scores[d]), 4),
                              "box": [round(float(v), 1) for v in boxes[d]]})
        if len(lane.mistake_crops) < MAX_MISTAKE_CROPS:
            lane.mistake_crops.append(crop_face(frame, tuple(result.crop_boxes[d]), MISTAKE_CROP_PX, card.margin))


def box_calibration_report(lane: Lane) -> dict[str, Any]:
    """How this detector's boxes sit against the annotated faces it found (:func:`fit_calibration`),
    beside the calibration the daemon crops with for it."""
    from device.detectors.face_box import calibration_of, fit_calibration

    used = calibration_of(lane.pipeline.detector).as_dict()
    if not lane.matched:
        return {"faces": 0, "fitted": None, "used": used}
    fitted = fit_calibration([d for d, _ in lane.matched], [a for _, a in lane.matched])
    return {"faces": len(lane.matched), "fitted": fitted.as_dict(), "used": used}


def lane_report(lane: Lane, alert_label: str, default_kind: str) -> dict:
    metrics = summarize(lane.outcomes, THREE_CLASS_LABELS, alert_label, WITH_MASK, INCORRECT_MASK)
    ms = {}
    for stage, values in lane.ms.items():
        s = latency_summary(values)
        ms[stage] = {"p50": s["p50_ms"], "p95": s["p95_ms"], "mean": s["mean_ms"], "frames": s["n"]}
    return {
        "name": lane.name,
        "kind": lane.spec.kind,
        "model_path": str(lane.spec.model_path) if lane.spec.model_path else None,
        "options": lane.spec.options,
        "input_size": list(lane.input_size),
        "score_threshold": getattr(lane.pipeline.detector, "score_threshold", None),
        # The daemon's default is the kind with its default model and options (yunet:X.onnx and
        # yunet,mirror=0 are other settings).
        "default": lane.spec.kind == default_kind and lane.spec.model_path is None and not lane.spec.options,
        **metrics,
        "box_calibration": box_calibration_report(lane),
        "mistakes": lane.mistakes,
        "ms": ms,
    }
