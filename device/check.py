"""``maskwatch-device check --config F``: everything the daemon checks at start, then one frame.

It loads exactly what ``run`` loads, in the same order and with the same code
(:func:`load_components`), so "check passes" means "run starts": the config field by field,
the classifier and its model card (input shape must match the card), the face detector
(pinned sha256 for the BlazeFace models), then it opens the camera and grabs one frame.
Nothing is published; the broker settings are printed without the password.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What the daemon needs before it may touch the camera or the network."""

    classifier: Any  # device.classifier.MaskClassifier
    detector: Any
    detector_path: Path | None
    detector_verified: bool  # its sha256 matched the pinned one
    threshold: float  # the alert threshold in force (config, else the card's)
    threshold_source: str  # "config" | "model card"
    model_info: dict[str, Any]  # the ``model`` block of every event

    @property
    def card(self) -> Any:
        return self.classifier.card


def resolve_detector_path(cfg: Any) -> tuple[Path | None, bool]:
    """The detector model file and whether it has a pinned checksum (BlazeFace) that matched.

    With no ``detector.model_path`` the fetched BlazeFace model is looked for in
    ``STATE_DIR/models`` (where install.sh puts it), then in ``$MASKWATCH_MODELS`` / ``models/``.
    A BlazeFace file whose sha256 is not the pinned one is refused (ChecksumError names it).
    """
    from device.detectors import model_files as fetch

    kind = cfg.detector.kind
    pinned = fetch.MODELS.get(kind)
    if cfg.detector.model_path:
        path = Path(cfg.detector.model_path)
    elif pinned is not None:
        candidates = [Path(cfg.state_dir) / "models" / pinned.name, Path(fetch.DEFAULT_DIR) / pinned.name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"detector.model_path: the {kind!r} detector model {pinned.name} is in none of "
                f"{', '.join(str(p.parent) for p in candidates)}; run `maskwatch-device fetch-models "
                f"--dest {candidates[0].parent}`"
            )
    else:
        return None, False  # yunet without a path: make_detector names the missing field
    if not path.is_file():
        raise FileNotFoundError(f"detector.model_path: file not found: {path}")
    if pinned is None:
        return path, False
    fetch.verify(path, pinned)  # ChecksumError (a RuntimeError) naming the file
    return path, True


def load_components(cfg: Any) -> Components:
    """Classifier + card, detector, in that order; any problem raises before the camera opens."""
    from device.classifier import MaskClassifier
    from device.comms.events import model_info
    from device.contract import THREE_CLASS_LABELS, card_path
    from device.detectors.base import make_detector

    clf = MaskClassifier(Path(cfg.classifier.model_path), num_threads=cfg.classifier.num_threads)
    unknown = [lab for lab in clf.card.labels if lab not in THREE_CLASS_LABELS]
    if unknown:  # events may only carry the contract's labels (device/schemas/event.schema.json)
        raise ValueError(f"{card_path(clf.path)}: labels {unknown} are not among {list(THREE_CLASS_LABELS)}")
    if cfg.classifier.threshold is not None:
        threshold, source = float(cfg.classifier.threshold), "config"
    else:
        threshold, source = float(clf.card.threshold), "model card"
    det_path, verified = resolve_detector_path(cfg)
    detector = make_detector(
        cfg.detector.kind, det_path, score_threshold=cfg.detector.score_threshold,
        min_face=cfg.detector.min_face, num_threads=cfg.detector.num_threads,
    )
    info = model_info(clf.card.name, clf.sha256, clf.card.quantization, threshold)
    return Components(clf, detector, det_path, verified, threshold, source, info)


def grab_one_frame(camera_cfg: Any, timeout_s: float) -> tuple[Any, dict[str, Any]]:
    """Open the camera, wait for one frame, close it: (frame or None, grabber stats)."""
    from device.camera.capture import LatestFrameGrabber

    grabber = LatestFrameGrabber(camera_cfg)
    grabber.start()
    try:
        frame = grabber.get(timeout=timeout_s)
        return frame, grabber.stats
    finally:
        grabber.stop(timeout=5.0)


def state_dir_writable(state_dir: Path) -> str | None:
    """None when the daemon can write its state dir, else why not (a warning, not an error:
    the daemon runs without it, only the outbox, crops and counters of a restart are lost)."""
    p = Path(state_dir)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


def summary_lines(cfg: Any, parts: Components) -> list[str]:
    from device.config import config_to_dict

    card = parts.card
    clf = parts.classifier
    mqtt = config_to_dict(cfg)["mqtt"]
    mqtt_text = ", ".join(f"{k}={v}" for k, v in mqtt.items() if v not in (None, "", [], {}))
    det = cfg.detector
    det_file = f"{parts.detector_path} (sha256 {'verified' if parts.detector_verified else 'not pinned'})" \
        if parts.detector_path else "(none)"
    return [
        f"config       ok  device_id={cfg.device_id} name={cfg.device_name!r} state_dir={cfg.state_dir}",
        f"model        {clf.path}",
        f"             name={card.name} backbone={card.backbone} quantization={card.quantization} "
        f"input={card.input_size}x{card.input_size} margin={card.margin} interpreter={clf.backend}",
        f"             sha256={clf.sha256}",
        f"labels       {', '.join(card.labels)} (alert: {card.alert_label})",
        f"threshold    {parts.threshold} (from {parts.threshold_source})",
        f"detector     {det.kind}: {det_file}",
        f"             score_threshold={det.score_threshold if det.score_threshold is not None else 'default'} "
        f"min_face={det.min_face} ignore_regions={list(det.ignore_regions)}",
        f"broker       {mqtt_text}",
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the daemon's TOML config file")
    parser.add_argument("--no-camera", action="store_true", help="skip opening the camera")
    parser.add_argument("--camera-timeout", type=float, default=20.0, metavar="S",
                        help="seconds to wait for the first frame (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from device.config import device_id_warning, load_config

    cfg = load_config(args.config)
    parts = load_components(cfg)
    for line in summary_lines(cfg, parts):
        print(line)
    warning = device_id_warning(cfg.device_id)
    if warning:
        print(f"device_id    WARNING {warning}")
    problem = state_dir_writable(cfg.state_dir)
    print(f"state dir    {cfg.state_dir}: {'writable' if problem is None else 'WARNING ' + problem}")
    if args.no_camera:
        print("camera       skipped (--no-camera)")
        print("check passed")
        return 0
    t0 = time.monotonic()
    frame, stats = grab_one_frame(cfg.camera, args.camera_timeout)
    if frame is None:
        why = stats.get("last_error") or f"status {stats.get('status')}"
        raise RuntimeError(f"camera ({cfg.camera.source} {stats.get('source') or ''}): no frame within "
                           f"{args.camera_timeout:g} s: {why}")
    h, w = frame.rgb.shape[:2]
    faces = parts.detector.detect(frame.rgb)
    print(f"camera       {stats.get('source')}: frame {w}x{h} in {time.monotonic() - t0:.2f} s, "
          f"{len(faces)} face(s) in it")
    print("check passed")
    return 0
