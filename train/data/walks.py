"""Frames of people walking across a plain wall: the camera input of the daemon tests and of
``make bench-device``.

Each person is a face photo (the public-domain portraits of :func:`train.data.synth.portraits`
or any RGB face crop) pasted onto a 640x480 background at a position that moves from frame to
frame, so the detector, classifier and tracker see people enter, cross and leave. Where and when
each face is drawn is known exactly, so a test can count people and events. Only numpy and
OpenCV: the Pi-like environment (no TensorFlow, no scikit-image) renders frames too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FRAME_W, FRAME_H = 640, 480


def background(seed: int = 0, width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    """A plain, slightly textured background (a wall): nothing a face detector would fire on."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(70, 120, width, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(ramp, (height, width, 3)).copy()
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, face: np.ndarray, x: int, y: int, width: int) -> tuple[int, int, int, int]:
    """Paste ``face`` scaled to ``width`` with its top-left at (x, y), clipped; returns its box."""
    import cv2

    h = int(round(face.shape[0] * width / face.shape[1]))
    img = cv2.resize(face, (width, h), interpolation=cv2.INTER_AREA)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(frame.shape[1], x + width), min(frame.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = img[y0 - y : y1 - y, x0 - x : x1 - x]
    return x0, y0, x1, y1


@dataclass
class Walk:
    """One person: which photo, from which frame to which, and the path of its top-left corner."""

    face: int
    first: int
    last: int  # inclusive
    x0: int
    x1: int
    y: int = 120
    width: int = 180

    def position(self, i: int) -> tuple[int, int] | None:
        """Top-left corner at frame ``i`` (a straight line from x0 to x1), None when not in view."""
        if not self.first <= i <= self.last:
            return None
        t = (i - self.first) / max(1, self.last - self.first)
        return int(round(self.x0 + t * (self.x1 - self.x0))), self.y


def render(faces: Sequence[np.ndarray], walks: Sequence[Walk], n_frames: int, seed: int = 0,
           bg: np.ndarray | None = None) -> list[np.ndarray]:
    """``n_frames`` RGB frames with every walk's face pasted where it is at that frame."""
    bg = background(seed) if bg is None else bg
    frames = []
    for i in range(n_frames):
        f = bg.copy()
        for w in walks:
            pos = w.position(i)
            if pos is not None:
                paste(f, faces[w.face], pos[0], pos[1], w.width)
        frames.append(f)
    return frames


def two_people_walks() -> list[Walk]:
    """A walks left to right alone; B comes in from the right while A is still there; both leave."""
    return [Walk(face=0, first=0, last=23, x0=10, x1=250), Walk(face=1, first=12, last=33, x0=440, x1=330, y=160)]


def write_frames(folder: Path, frames: Iterable[np.ndarray]) -> Path:
    """PNG files ``00000.png``, ``00001.png`` ... in ``folder``: a camera ``source = "images"`` reads them in order."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{folder}: cannot write frame {i}")
    return folder
