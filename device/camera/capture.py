"""Camera capture in its own thread, with the two hand-off modes the daemon needs.

realtime (live cameras): the pipeline always gets the NEWEST frame; frames it had no time
for are dropped and counted. A camera read by a slower consumer must never build a backlog,
or the daemon would report people seconds after they walked past.

lossless (files, image folders, tests, replays): the capture thread waits until the previous
frame was taken, so every frame is processed exactly once and a replay gives the same events
on a fast workstation and a slow Pi.

A source that cannot open, raises, or stalls is closed and reopened with exponential backoff
(``reopen_min_s`` doubling up to ``reopen_max_s``, back to the minimum after a good frame);
``stats["status"]`` is "down" meanwhile, with the reason in ``stats["last_error"]``.

Each opened source lives in its own reader thread that alone calls open/read/close (camera
libraries are not thread-safe). A supervisor thread watches it: a read that has not returned
after ``stall_timeout_s`` (or an open after ``open_timeout_s``) gets the session abandoned and
a fresh source opened; the stuck thread closes its source whenever its call finally returns.

Additions to the shared API: ``sleep`` (the backoff wait, injectable for tests; it is given the
delay and must return early when ``stop()`` is called, which the default does), ``realtime``
(the resolved mode, None until the first source exists), ``stats["realtime"]``,
``stats["loops"]``, ``stats["skipped"]`` (unreadable images) and ``stats["source"]``. A
non-live source in realtime mode is paced at ``camera.fps`` (a video file standing in for a
camera); ``camera.swap_rb`` exchanges red and blue after every source.

A frame larger than ``camera.width`` x ``camera.height`` (a USB camera that ignored the
requested size, a 12 MP photo in an image folder) is downscaled to fit right here, in the
reader thread, so that neither the frame waiting in the slot nor the one being processed
holds 36 MB (the decode alone peaks at twice that); ``Frame.scale`` says by how much, and the
pipeline reports boxes in the source's own pixels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from device.camera.sources import FrameSource, make_source, swap_rb

if TYPE_CHECKING:
    from device.config import CameraConfig

log = logging.getLogger(__name__)


@dataclass
class Frame:
    seq: int  # 0, 1, 2, ... over the grabber's life; gaps are dropped frames
    time: float  # capture time (wall clock) for event timestamps; media time in lossless replays
    mono: float  # the grabber's clock (monotonic): ages and intervals
    rgb: np.ndarray  # HxWx3 uint8, at most the configured capture size (see fit_frame)
    scale: tuple[float, float] = (1.0, 1.0)  # rgb pixels per source pixel along x and y


def fit_size(width: int, height: int, max_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a frame brought within ``max_size`` with its aspect ratio kept; the
    frame's own size when it fits. Either orientation fits (a camera mounted on its side)."""
    scale = min(1.0, max(max_size) / max(width, height), min(max_size) / min(width, height))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_frame(rgb: np.ndarray, max_size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """``rgb`` downscaled to fit ``max_size`` (itself when it fits) and the scale per axis."""
    h, w = rgb.shape[:2]
    new_w, new_h = fit_size(w, h, max_size)
    if (new_w, new_h) == (w, h):
        return rgb, (1.0, 1.0)
    small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, (new_w / w, new_h / h)


class _Session:
    """One opened source and the reader thread that owns it."""

    def __init__(self, source: FrameSource, clock: Callable[[], float]):
        self.source = source
        self.clock = clock
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.cancelled = False
        self.op: str | None = None  # "open" | "read" while the source is inside that call
        self.op_started = 0.0
        self.frames = 0
        self.outcome: str | None = None  # "eof" | "error"
        self.error: str | None = None

    def begin(self, op: str) -> None:
        with self.lock:
            self.op, self.op_started = op, self.clock()

    def end_op(self) -> None:
        with self.lock:
            self.op = None

    def finish(self, outcome: str, error: str | None = None) -> None:
        with self.lock:
            self.op = None
            if self.outcome is None:
                self.outcome, self.error = outcome, error
        self.done.set()


class LatestFrameGrabber:
    def __init__(
        self,
        cfg: CameraConfig,
        source_factory: Callable[[], FrameSource] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ):
        self.cfg = cfg
        self._factory = source_factory or (lambda: make_source(cfg))
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or (lambda s: self._stop.wait(s))
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._seq = 0
        self._media_t0: float | None = None
        self._thread: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self.realtime: bool | None = cfg.realtime
        self._source_name = ""
        self._source_ended = False
        self._skipped_before = 0  # skipped images of sources already closed
        self._current: FrameSource | None = None
        # stats
        self._frames = 0
        self._dropped = 0
        self._reopens = 0
        self._loops = 0
        self._status = "starting"
        self._last_error: str | None = None
        self._last_frame_mono: float | None = None
        self._down_since: float | None = None  # grabber clock when the status last became "down"

    # ----------------------------------------------------------------------------- public API

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("LatestFrameGrabber.start() called twice")
        self._thread = threading.Thread(target=self._supervise, name="capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capturing; waits up to ``timeout`` for the threads (a stuck camera call may not return)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for t in self._readers:
            t.join(max(0.0, deadline - time.monotonic()))

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not yet returned; None when none came within ``timeout`` or the source ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._source_ended or self._stop.is_set(),
                                timeout=max(0.0, timeout))
            frame, self._slot = self._slot, None
            if frame is not None:
                self._cond.notify_all()  # a lossless reader may be waiting for the slot
            return frame

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._source_ended and self._slot is None

    @property
    def stats(self) -> dict[str, Any]:
        with self._cond:
            age = None if self._last_frame_mono is None else max(0.0, self._clock() - self._last_frame_mono)
            skipped = self._skipped_before + int(getattr(self._current, "skipped", 0) or 0)
            return {
                "frames": self._frames,
                "dropped": self._dropped,
                "reopens": self._reopens,
                "loops": self._loops,
                "skipped": skipped,
                "status": "ended" if self._source_ended and self._slot is None else self._status,
                "last_error": self._last_error,
                "last_frame_age_s": age,
                "realtime": self.realtime,
                "source": self._source_name,
            }

    # ----------------------------------------------------------------------------- internals

    def _set(self, **kw: Any) -> None:
        with self._cond:
            for k, v in kw.items():
                setattr(self, "_" + k, v)

    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        except Exception as exc:  # a bug here must show up in stats and logs, not vanish with the thread
            log.exception("capture supervisor crashed")
            self._set(status="down", last_error=f"capture thread crashed: {exc!r}")

    def _supervise_loop(self) -> None:
        delay = self.cfg.reopen_min_s
        first = True
        while not self._stop.is_set():
            if not first:
                with self._cond:
                    self._reopens += 1
            first = False
            session = self._run_session()
            if self._stop.is_set():
                break
            if session is not None and session.frames > 0:
                delay = self.cfg.reopen_min_s  # the source worked: a new failure starts over
            if session is not None and session.outcome == "eof" and getattr(session.source, "live", False):
                self._fail(f"{self._source_name}: the stream ended")
            elif session is not None and session.outcome == "eof":
                if session.frames == 0:
                    self._fail(f"{self._source_name}: ended without a single frame")
                elif self.cfg.loop:
                    with self._cond:
                        self._loops += 1
                    first = True  # starting a file over is not a reopen after a failure
                    continue
                else:
                    with self._cond:
                        self._source_ended = True
                        self._cond.notify_all()
                    log.info("%s: end of input after %d frames", self._source_name, self._frames)
                    return
            log.warning("%s: reopening in %.1f s", self._source_name, delay)
            self._sleep(delay)
            delay = min(delay * 2, self.cfg.reopen_max_s)

    def _fail(self, reason: str) -> None:
        log.warning("camera down: %s", reason)
        with self._cond:
            if self._status != "down":
                self._down_since = self._clock()
            self._status, self._last_error = "down", reason

    def _run_session(self) -> _Session | None:
        """Open a source, pump its frames until it ends, fails or stalls; returns the session."""
        try:
            source = self._factory()
        except Exception as exc:
            self._fail(f"cannot create camera source: {exc}")
            return None
        with self._cond:
            self._source_name = getattr(source, "name", type(source).__name__)
            if self.realtime is None:
                self.realtime = bool(getattr(source, "live", False))
            if self._current is not None:
                self._skipped_before += int(getattr(self._current, "skipped", 0) or 0)
            self._current = source
        session = _Session(source, self._clock)
        reader = threading.Thread(target=self._read_loop, args=(session,), name="capture-reader", daemon=True)
        self._readers = [t for t in self._readers if t.is_alive()] + [reader]
        reader.start()
        poll = min(0.05, self.cfg.stall_timeout_s / 4)
        while not session.done.wait(poll):
            if self._stop.is_set():
                session.cancelled = True
                return session
            with session.lock:
                op, started = session.op, session.op_started
            limit = self.cfg.open_timeout_s if op == "open" else self.cfg.stall_timeout_s
            if op is not None and self._clock() - started > limit:
                what = "open()" if op == "open" else "no frame"
                reason = f"{self._source_name}: {what} for {self._clock() - started:.1f} s (stalled)"
                session.cancelled = True
                session.finish("error", reason)
                with self._cond:
                    self._cond.notify_all()
                break
        if session.outcome == "error":
            self._fail(session.error or "unknown error")
        return session

    def _read_loop(self, session: _Session) -> None:
        src = session.source
        pace = None
        if self.realtime and not getattr(src, "live", False):
            pace = 1.0 / self.cfg.fps
        next_due = None
        try:
            session.begin("open")
            src.open()
            session.end_op()
            while not session.cancelled and not self._stop.is_set():
                if pace is not None:
                    now = time.monotonic()
                    if next_due is not None and next_due > now and self._stop.wait(next_due - now):
                        break
                    next_due = max(now, next_due or now) + pace
                session.begin("read")
                rgb = src.read()
                session.end_op()
                if session.cancelled:
                    break
                if rgb is None:
                    session.finish("eof")
                    break
                _check_frame(rgb, self._source_name)
                if self.cfg.swap_rb:
                    rgb = swap_rb(rgb)
                rgb, scale = fit_frame(rgb, (self.cfg.width, self.cfg.height))
                if not self._publish(rgb, session, scale):
                    break
        except Exception as exc:
            msg = str(exc) or type(exc).__name__
            session.finish("error", msg if self._source_name in msg else f"{self._source_name}: {msg}")
        finally:
            session.finish("eof")  # no-op when an outcome is already set
            try:
                src.close()
            except Exception as exc:
                log.warning("%s: close() failed: %s", self._source_name, exc)

    def _publish(self, rgb: np.ndarray, session: _Session, scale: tuple[float, float] = (1.0, 1.0)) -> bool:
        """Hand a frame to the consumer; False when the session was cancelled or stop() called."""
        wall, mono = time.time(), self._clock()
        if not self.realtime:
            # A replay's frames were captured 1/fps apart, however fast we read them: the tracker's
            # timeouts and cooldowns must see that spacing, or people a second apart in the video
            # would merge on a fast machine and a slow Pi would report different events.
            if self._media_t0 is None:
                self._media_t0 = wall
            wall = self._media_t0 + self._frames / self.cfg.fps
        with self._cond:
            if not self.realtime:
                self._cond.wait_for(
                    lambda: self._slot is None or session.cancelled or self._stop.is_set()
                )
            if session.cancelled or self._stop.is_set():
                return False
            if self._slot is not None:
                self._dropped += 1
            recovered = self._status == "down"
            self._slot = Frame(self._seq, wall, mono, rgb, scale)
            self._seq += 1
            self._frames += 1
            self._last_frame_mono = mono
            self._status = "ok"
            self._last_error = None
            self._cond.notify_all()
        session.frames += 1
        if recovered:  # the journal says when it came back, not only when it went down
            since = self._down_since
            log.info("camera up again: %s%s", self._source_name,
                     f" (down for {mono - since:.1f} s)" if since is not None else "")
        return True


def _check_frame(rgb: Any, name: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}"
        raise RuntimeError(f"{name}: read() returned {got.strip()}, expected an HxWx3 uint8 RGB array")
