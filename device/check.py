"""``maskwatch-device check --config F``: everything the daemon checks at start, then one frame.

It loads exactly what ``run`` loads, in the same order and with the same code
(:func:`device.wiring.load_components`), so "check passes" means "run starts": the config field
by field, the classifier and its model card (input shape must match the card), the face
detector (pinned sha256 for the BlazeFace models), then it opens the camera and grabs one frame.
Nothing is published; the broker settings are printed without the password.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from device.wiring import Components, load_components, make_pipeline

log = logging.getLogger(__name__)


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
    from device.detectors.face_box import calibration_of

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
        f"labels       {', '.join(card.labels)} (alert: {' or '.join(parts.alert_labels or card.alerts)})",
        f"threshold    {parts.threshold} (from {parts.threshold_source})",
        f"detector     {det.kind}: {det_file}",
        f"             score_threshold={det.score_threshold if det.score_threshold is not None else 'default'} "
        f"min_face={det.min_face} ignore_regions={list(det.ignore_regions)}",
        f"             crops: {calibration_of(parts.detector).describe()}",
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
    make_pipeline(cfg, parts)  # the tracker's checks too: what `run` builds, `check` builds
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
