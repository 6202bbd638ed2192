"""What the daemon keeps for people: uncertain-face crops for retraining, and alert snapshots.

Uncertain crops (off by default: they are photos of people's faces)
    A face whose alert score falls within ``[low, high]`` is the model telling us it does not
    know. Those crops are the most useful ones to label and train on, so with
    ``[uncertain] enabled = true`` the daemon saves them (the frame's most uncertain face, at
    most one per ``min_interval_s``) as::

        STATE_DIR/uncertain/unsorted/20250101T120000.123456Z_without_mask_0.54.jpg
        STATE_DIR/uncertain/unsorted/20250101T120000.123456Z_without_mask_0.54.json

    They are not blurred: a pixelated face is useless for training a mask classifier (the mask
    is what gets pixelated), so the privacy protection is that nothing is kept unless asked
    for, and what is kept is private and short-lived: files 0600 and folders 0700 whatever the
    umask, at most ``max_files`` crops, none older than ``max_age_days`` (by the time in the
    name), removed oldest first. Leftovers (``*.part`` from a crash, a ``.jpg`` without its
    ``.json`` or the reverse) are removed at start and with every save. The age limit applies
    while saving is off too, at start and every :data:`SWEEP_INTERVAL_S`.

    The JPEG is the face grown by the model card's margin at the camera's resolution (what
    ``maskwatch data import`` expects of a folder-per-class face crop; the trainer crops and
    resizes again). The JSON sidecar holds the scores, the label guess and the time. To use
    them, move the JPEGs into ``uncertain/with_mask/`` and ``uncertain/without_mask/`` and run
    ``maskwatch data import STATE_DIR/uncertain ...``: ``unsorted`` is not a class name, so
    what is left there is skipped, and the sidecars are not images. Crops moved out of
    ``unsorted`` are yours: the daemon never touches them.

Snapshots
    The frame of a ``new`` no-mask event as JPEG bytes for MQTT, faces pixelated when
    ``blur_faces`` is on (privacy at an entrance), the alerting face outlined. They are
    published, never stored on the device.

Disk full or a read-only state dir never stops the daemon: every OSError is caught, counted
and reported in the state message (``monitor.errors``, ``monitor.last_error``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from device.contract import expand_box
from device.safe_write import is_leftover, make_private_dir, write_file

log = logging.getLogger(__name__)

UNCERTAIN_DIR = "uncertain"
UNSORTED = "unsorted"
#: Mosaic blocks across a blurred face (margin included). 4 leaves nothing recognisable: on the
#: test faces and ../shared/media photos BlazeFace finds no face in the result; 6 still let it
#: find some (a coarse mosaic keeps the face-like layout of light and shade).
BLUR_BLOCKS = 4
#: Crops and sidecars: readable by the service user only (faces are personal data).
FILE_MODE = 0o600
DIR_MODE = 0o700
#: How often the age limit is applied while no crop is saved (saving off, nobody unsure).
SWEEP_INTERVAL_S = 3600.0
_NAME_TIME = "%Y%m%dT%H%M%S.%fZ"


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    return buf.tobytes()


def pixelate(rgb: np.ndarray, box: tuple[int, int, int, int], blocks: int = BLUR_BLOCKS) -> None:
    """Pixelate ``box`` of ``rgb`` in place (irreversible, unlike a light Gaussian blur)."""
    import cv2

    x0, y0, x1, y1 = box
    region = rgb[y0:y1, x0:x1]
    if region.size == 0:
        return
    h, w = region.shape[:2]
    small = cv2.resize(region, (max(1, min(blocks, w)), max(1, min(blocks, h))), interpolation=cv2.INTER_AREA)
    rgb[y0:y1, x0:x1] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def render_snapshot(frame_rgb: np.ndarray, boxes: Sequence[Sequence[float]], *, blur_faces: bool,
                    margin: float, highlight: Sequence[Sequence[float]] = (), quality: int = 85) -> bytes:
    """JPEG of a frame with every face pixelated (when asked) and the alerting faces outlined."""
    import cv2

    img = np.array(frame_rgb, copy=True)
    h, w = img.shape[:2]
    if blur_faces:
        for b in boxes:
            pixelate(img, expand_box(tuple(b), margin, w, h))
    for b in highlight:
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        cv2.rectangle(img, (x0, y0), (x1, y1), (255, 0, 0), 2)
    return encode_jpeg(img, quality)


def uncertain_mask(alert_scores: np.ndarray, low: float, high: float) -> np.ndarray:
    """Which faces the model is unsure about: low <= score <= high."""
    s = np.asarray(alert_scores, dtype=np.float32)
    return (s >= low) & (s <= high)


def crop_name(wall: float, label: str, score: float) -> str:
    """File stem that sorts by time (UTC), names the guess and the alert score."""
    t = datetime.fromtimestamp(wall, tz=timezone.utc).strftime(_NAME_TIME)
    return f"{t}_{label}_{score:.2f}"


def crop_time(stem: str) -> float | None:
    """The UTC time :func:`crop_name` put in ``stem`` (unix seconds), or None for another name."""
    try:
        return datetime.strptime(stem.split("_", 1)[0], _NAME_TIME).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def expired(stem_times: dict[str, float], now_wall: float, max_age_s: float) -> set[str]:
    """Stems older than ``max_age_s`` at ``now_wall``."""
    return {stem for stem, t in stem_times.items() if now_wall - t > max_age_s}


class ErrorBook:
    """Counts storage errors for the state message; logs through ``log_error`` (rate limited by
    the daemon), so a full disk does not flood the journal."""

    def __init__(self, log_error: Callable[[str], None] | None = None):
        self.count = 0
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self._log = log_error or log.warning

    def record(self, what: str, exc: BaseException, wall: float) -> None:
        self.count += 1
        self.last_error = f"{what}: {exc}"
        self.last_error_time = wall
        # The logged text leaves out the file name, so a rate-limited log sees one repeated message.
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        self._log(f"{what}: {reason}")


class UncertainSaver:
    """Saves uncertain face crops with a JSON sidecar: bounded by count and age, rate limited, private."""

    def __init__(self, root: Path, *, low: float, high: float, max_files: int, min_interval_s: float,
                 labels: Sequence[str], alert_label: str, margin: float, max_age_days: float = 14.0,
                 quality: int = 90, meta: dict[str, Any] | None = None, errors: ErrorBook | None = None,
                 enabled: bool = True, now_wall: float | None = None):
        self.root = Path(root) / UNCERTAIN_DIR
        self.folder = self.root / UNSORTED
        self.low, self.high = float(low), float(high)
        self.max_files = int(max_files)
        self.max_age_s = float(max_age_days) * 86400.0
        self.min_interval_s = float(min_interval_s)
        self.labels = tuple(labels)
        self.alert_label = alert_label
        self.margin = float(margin)
        self.quality = int(quality)
        self.meta = dict(meta or {})
        self.errors = errors or ErrorBook()
        self.enabled = bool(enabled) and self.max_files > 0
        self.saved = 0
        self.removed = 0  # by age, count or as leftovers
        self._last_try: float | None = None
        self._last_sweep: float | None = None  # monotonic
        self._files: deque[str] | None = None  # stems, oldest first; loaded lazily from disk
        # At start: what an earlier run (or a crash, or an older version) left behind.
        start = time.time() if now_wall is None else now_wall
        if self.folder.is_dir():
            self.sweep(start)

    def sweep(self, now_wall: float) -> None:
        """Remove leftovers, crops past ``max_age_days`` and the oldest beyond ``max_files``;
        make what stays private. OSErrors are counted, never raised."""
        try:
            self._sweep(now_wall)
        except OSError as exc:
            self.errors.record(f"uncertain crops in {self.folder}", exc, now_wall)

    def _sweep(self, now_wall: float) -> None:
        for folder in (self.root, self.folder):  # an older version left them 0755
            make_private_dir(folder, DIR_MODE)
        pairs: dict[str, set[str]] = {}
        for entry in os.scandir(self.folder):
            if not entry.is_file(follow_symlinks=False):
                continue
            if is_leftover(entry.name):
                self._remove(entry.name)
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext in (".jpg", ".json"):
                pairs.setdefault(stem, set()).add(ext)
                if entry.stat(follow_symlinks=False).st_mode & 0o077:
                    self._make_private(entry.path, now_wall)  # written by an older version or by hand
        for stem in [s for s, exts in pairs.items() if len(exts) == 1]:  # a crash between the two writes,
            self._remove(stem + pairs.pop(stem).pop())  # or a person moved the JPEG out to label it
        times = {}
        for stem in pairs:
            t = crop_time(stem)  # not our name: judge it by its file's age
            times[stem] = t if t is not None else os.stat(self.folder / f"{stem}.jpg").st_mtime
        old = expired(times, now_wall, self.max_age_s)
        keep = sorted(stem for stem in pairs if stem not in old)
        over = keep[:max(0, len(keep) - self.max_files)]
        for stem in sorted(old) + over:
            for ext in (".jpg", ".json"):
                self._remove(stem + ext)
        self._files = deque(keep[len(over):])

    def _make_private(self, path: str, now_wall: float) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # a link swapped in: ELOOP
            try:
                os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
        except OSError as exc:  # not ours (copied in by root): say so, go on with the rest
            self.errors.record(f"uncertain crop {path}", exc, now_wall)

    def _remove(self, name: str) -> None:
        try:
            os.unlink(self.folder / name)
            self.removed += 1
        except FileNotFoundError:
            pass

    def _write(self, path: Path, data: bytes) -> None:
        write_file(path, data, mode=FILE_MODE)

    def consider(self, frame_rgb: np.ndarray, boxes: Sequence[Sequence[float]], probs: np.ndarray,
                 alert_scores: np.ndarray, now_wall: float, now_mono: float) -> int:
        """Save the frame's most uncertain face, at most once per ``min_interval_s``; returns 0 or 1.
        Also applies the age limit every :data:`SWEEP_INTERVAL_S`, saving or not."""
        if self._last_sweep is None:
            self._last_sweep = now_mono
        elif now_mono - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now_mono
            if self.folder.is_dir():
                self.sweep(now_wall)
        if not self.enabled or not len(boxes):
            return 0
        scores = np.asarray(alert_scores, dtype=np.float32)
        unsure = np.flatnonzero(uncertain_mask(scores, self.low, self.high))
        if not len(unsure):
            return 0
        if self._last_try is not None and now_mono - self._last_try < self.min_interval_s:
            return 0
        self._last_try = now_mono
        middle = (self.low + self.high) / 2.0
        i = int(unsure[np.argmin(np.abs(scores[unsure] - middle))])
        try:
            self._save(frame_rgb, boxes[i], probs[i], float(scores[i]), now_wall)
        except OSError as exc:
            self.errors.record(f"uncertain crop in {self.folder}", exc, now_wall)
            return 0
        self._last_sweep = now_mono
        # people move files out to label them, a crash leaves pieces: look at what is really there
        self.sweep(now_wall)
        return 1

    def _save(self, frame_rgb: np.ndarray, box: Sequence[float], probs: np.ndarray, score: float,
              now_wall: float) -> None:
        make_private_dir(self.root, DIR_MODE)
        make_private_dir(self.folder, DIR_MODE)
        h, w = frame_rgb.shape[:2]
        guess = self.labels[int(np.argmax(probs))]
        stem = crop_name(now_wall, guess, score)
        x0, y0, x1, y1 = expand_box(tuple(box), self.margin, w, h)
        jpeg = encode_jpeg(frame_rgb[y0:y1, x0:x1], self.quality)
        sidecar = {
            "time": datetime.fromtimestamp(now_wall, tz=timezone.utc).isoformat(),
            "time_unix": round(now_wall, 3),
            "label_guess": guess,
            "alert_label": self.alert_label,
            "alert_score": round(score, 4),
            "scores": {lab: round(float(p), 4) for lab, p in zip(self.labels, probs, strict=False)},
            "box": [round(float(v), 1) for v in box],
            "crop_box": [x0, y0, x1, y1],
            "frame_size": [w, h],
            **self.meta,
        }
        # The sidecar first: a crash between the two leaves a lone .json, never an unexplained face.
        self._write(self.folder / f"{stem}.json", (json.dumps(sidecar, indent=1) + "\n").encode())
        self._write(self.folder / f"{stem}.jpg", jpeg)
        self.saved += 1

    def files(self) -> int:
        return len(self._files) if self._files is not None else 0


class Monitor:
    """The daemon's one handle on crops and snapshots, and their status for the state message."""

    def __init__(self, state_dir: Path, uncertain_cfg: Any, snapshot_cfg: Any, *, labels: Sequence[str],
                 alert_label: str, margin: float, meta: dict[str, Any] | None = None,
                 log_error: Callable[[str], None] | None = None):
        self.errors = ErrorBook(log_error)
        self.snapshot_cfg = snapshot_cfg
        self.margin = float(margin)
        self.snapshots = 0
        self.uncertain = UncertainSaver(
            state_dir, low=uncertain_cfg.low, high=uncertain_cfg.high, max_files=uncertain_cfg.max_files,
            min_interval_s=uncertain_cfg.min_interval_s, max_age_days=uncertain_cfg.max_age_days,
            labels=labels, alert_label=alert_label, margin=margin, meta=meta, errors=self.errors,
            enabled=uncertain_cfg.enabled,
        )

    def snapshot(self, frame_rgb: np.ndarray, boxes: Sequence[Sequence[float]],
                 highlight: Sequence[Sequence[float]], now_wall: float) -> bytes | None:
        if not self.snapshot_cfg.enabled:
            return None
        try:
            data = render_snapshot(frame_rgb, boxes, blur_faces=self.snapshot_cfg.blur_faces, margin=self.margin,
                                   highlight=highlight, quality=self.snapshot_cfg.jpeg_quality)
        except (ValueError, OSError) as exc:
            self.errors.record("snapshot", exc, now_wall)
            return None
        self.snapshots += 1
        return data

    def status(self) -> dict[str, Any]:
        return {
            "uncertain_enabled": self.uncertain.enabled,
            "uncertain_saved": self.uncertain.saved,
            "uncertain_files": self.uncertain.files(),
            "uncertain_removed": self.uncertain.removed,
            "uncertain_dir": str(self.uncertain.folder),
            "snapshots": self.snapshots,
            "errors": self.errors.count,
            "last_error": self.errors.last_error,
            "last_error_time": (datetime.fromtimestamp(self.errors.last_error_time, tz=timezone.utc).isoformat()
                                if self.errors.last_error_time else None),
        }
