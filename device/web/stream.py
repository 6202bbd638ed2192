"""The frames the page sees: handed over by the daemon only while someone watches, drawn and
encoded in the viewer's thread.

The daemon's loop asks :attr:`LiveFeed.wanted` once per frame: a read of two numbers, so with
nobody watching the page costs nothing measurable per frame (``make bench-device`` checks it).
While someone watches, at most ``max_fps`` times a second, the loop hands over the picture the
detector saw with the boxes it already has (:class:`LiveFrame`, no copy, no drawing); the HTTP
thread that serves the viewer then draws, pixelates and encodes it, once per frame however many
viewers there are.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Box colours (RGB) per label; a tentative track (no label yet) is grey.
COLOURS = {"with_mask": (40, 200, 60), "without_mask": (230, 40, 40), "incorrect_mask": (250, 160, 0)}
UNSURE = (170, 170, 170)
IGNORE_COLOUR = (255, 0, 255)
ENTRANCE_COLOUR = (0, 200, 255)
JPEG_QUALITY = 75


@dataclass
class TrackBox:
    """One tracked face as drawn: box in the picture's pixels, label (None: not yet decided)."""

    track_id: int
    box: tuple[float, float, float, float]
    label: str | None
    score: float


@dataclass
class LiveFrame:
    """What the daemon hands over: the detector's picture and what it found, all in its pixels."""

    rgb: np.ndarray
    faces: np.ndarray  # (N, 4) every detected face, ignored ones too (pixelated when blur_faces)
    tracks: list[TrackBox]
    ignore_regions: list[tuple[float, float, float, float]] = field(default_factory=list)
    entrance_region: tuple[float, float, float, float] | None = None
    #: The source frame's size (width, height): zones are saved in its pixels.
    source_size: tuple[int, int] = (0, 0)


def render(frame: LiveFrame, *, blur_faces: bool, margin: float) -> np.ndarray:
    """The annotated picture: zones, faces pixelated (when asked), each track's box, id, label, score."""
    import cv2

    from device.captures import pixelate
    from device.contract import expand_box

    img = np.array(frame.rgb, copy=True)
    h, w = img.shape[:2]
    if blur_faces:
        for b in frame.faces:
            pixelate(img, expand_box(tuple(float(v) for v in b), margin, w, h))
    zones = [(r, IGNORE_COLOUR, "ignored") for r in frame.ignore_regions]
    if frame.entrance_region is not None:
        zones.append((frame.entrance_region, ENTRANCE_COLOUR, "entrance"))
    for r, colour, name in zones:
        x0, y0, x1, y1 = (int(round(v)) for v in r)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 1)
        cv2.putText(img, name, (x0 + 3, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    for t in frame.tracks:
        x0, y0, x1, y1 = (int(round(v)) for v in t.box)
        colour = COLOURS.get(t.label or "", UNSURE)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
        text = f"#{t.track_id} {t.label or '?'} {t.score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = y0 - 4 if y0 - th - 6 >= 0 else y1 + th + 4
        cv2.rectangle(img, (x0, ty - th - 3), (x0 + tw + 4, ty + 3), colour, -1)
        cv2.putText(img, text, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return img


class LiveFeed:
    """Frames from the daemon's loop to the page's viewers (see the module doc)."""

    def __init__(self, max_fps: float, *, blur_faces: bool, margin: float,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval = 1.0 / float(max_fps)
        self.blur_faces = blur_faces
        self.margin = margin
        self.clock = clock
        self.watchers = 0
        self._next = 0.0  # monotonic time before which no frame is wanted
        self._cond = threading.Condition()
        self._frame: LiveFrame | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._encode_lock = threading.Lock()

    # -- the daemon's side ---------------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        """True when someone watches and the last frame handed over is ``1/max_fps`` old."""
        return self.watchers > 0 and self.clock() >= self._next

    def offer(self, frame: LiveFrame) -> None:
        with self._cond:
            self._frame = frame
            self._seq += 1
            self._next = self.clock() + self.min_interval
            self._cond.notify_all()

    # -- the viewers' side ---------------------------------------------------------------------

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While inside, the daemon hands frames over."""
        with self._cond:
            self.watchers += 1
        try:
            yield
        finally:
            with self._cond:
                self.watchers -= 1

    @property
    def seq(self) -> int:
        return self._seq

    def latest(self) -> LiveFrame | None:
        return self._frame

    def wait_frame(self, after: int, timeout: float) -> tuple[int, LiveFrame] | None:
        """The newest frame once its number is above ``after`` (None after ``timeout`` s)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > after and self._frame is not None, timeout):
                return None
            return self._seq, self._frame  # type: ignore[return-value]

    def jpeg(self, seq: int, frame: LiveFrame) -> bytes:
        """Frame ``seq`` drawn and encoded, once however many viewers ask."""
        from device.captures import encode_jpeg

        with self._encode_lock:
            if self._jpeg is not None and self._jpeg[0] == seq:
                return self._jpeg[1]
            data = encode_jpeg(render(frame, blur_faces=self.blur_faces, margin=self.margin), JPEG_QUALITY)
            self._jpeg = (seq, data)
            return data


def live_frame(result, tracks: Sequence, ignore_regions: Sequence, entrance_region, source_size,
               alert_label: str) -> LiveFrame:
    """A :class:`LiveFrame` from the pipeline's FrameResult, its tracks and zones (frame pixels).

    A track's score is its smoothed P(alert label); the box shows the score of the label it
    shows (P(alert) for the alert label, 1 - P(alert) for the others, as events do)."""
    boxes = [t.box for t in tracks]
    view = result.to_view(boxes) if boxes else np.zeros((0, 4), np.float32)
    zones = result.to_view(list(ignore_regions)) if ignore_regions else []
    entrance = tuple(result.to_view([entrance_region])[0]) if entrance_region is not None else None
    return LiveFrame(
        rgb=result.view, faces=result.detected_boxes if result.detected_boxes is not None else result.view_boxes,
        tracks=[TrackBox(t.id, tuple(b), t.label, float(t.score) if t.label in (None, alert_label)
                         else 1.0 - float(t.score)) for t, b in zip(tracks, view, strict=True)],
        ignore_regions=[tuple(z) for z in zones], entrance_region=entrance, source_size=source_size,
    )
