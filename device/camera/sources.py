"""Where frames come from: the Pi camera, anything OpenCV can open, or a folder of images.

Every source hands out RGB uint8 HxWx3 frames, whatever the camera's native order, so the
detector and classifier never see BGR by accident. Sources do no threading, retrying or
pacing: :class:`device.camera.capture.LatestFrameGrabber` does that for all of them alike.

picamera2 exists only on Raspberry Pi OS (it comes from apt, not PyPI), so it is imported in
:meth:`PicameraSource.open` and nowhere else: this module imports fine on a workstation.
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import cv2
import numpy as np

from device.images import looks_like_image, read_rgb

if TYPE_CHECKING:
    from device.config import CameraConfig

log = logging.getLogger(__name__)


@runtime_checkable
class FrameSource(Protocol):
    name: str
    live: bool  # True for cameras and streams: they never end, a missing frame is a failure

    def open(self) -> None:
        """Acquire the device or file; raise OSError/RuntimeError with a clear message if impossible."""
        ...

    def read(self) -> np.ndarray | None:
        """The next RGB uint8 HxWx3 frame; None at the end of a file; raise on failure."""
        ...

    def close(self) -> None:
        """Release everything; safe to call twice or after a failed open."""
        ...


def swap_rb(frame: np.ndarray) -> np.ndarray:
    """BGR <-> RGB as a fresh contiguous array (the caller may keep it while capture goes on)."""
    return np.ascontiguousarray(frame[..., 2::-1])


def to_rgb(frame: np.ndarray, order: str = "bgr") -> np.ndarray:
    """Gray, BGR/RGB or BGRx/RGBx (4 channels, the 4th ignored) -> RGB uint8 HxWx3."""
    if frame.dtype != np.uint8:
        raise RuntimeError(f"camera returned {frame.dtype} pixels, expected uint8")
    if frame.ndim == 2:
        return np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2))
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise RuntimeError(f"camera returned an array of shape {frame.shape}, expected HxWx3")
    if order == "bgr":
        return swap_rb(frame)
    return np.ascontiguousarray(frame[..., :3])


# --------------------------------------------------------------------------------------------
# Raspberry Pi camera (picamera2 / libcamera)
# --------------------------------------------------------------------------------------------


class PicameraSource:
    """The Pi camera through picamera2.

    picamera2 follows libcamera/DRM format names, which give the byte order of a little-endian
    32-bit word: "RGB888" is stored as B, G, R in memory, i.e. ``capture_array()`` returns a
    BGR array (what OpenCV expects; see raspberrypi/picamera2 issues #191 and #848). We ask
    for "RGB888" and reverse the channels. Some camera/driver combinations have been reported
    to deliver the opposite order; ``camera.swap_rb = true`` corrects that without code changes.
    """

    live = True

    def __init__(self, camera_num: int = 0, width: int = 640, height: int = 480, fps: float = 15.0):
        self.camera_num = camera_num
        self.size = (int(width), int(height))
        self.fps = float(fps)
        self.name = f"picamera:{camera_num}"
        self._cam = None
        self._started = False

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise RuntimeError(
                f"picamera2 is not importable ({exc}); on Raspberry Pi OS install it with "
                "'sudo apt install python3-picamera2' and create the virtualenv with "
                "--system-site-packages, or set camera.source = 'opencv'"
            ) from None
        try:
            self._cam = Picamera2(self.camera_num)
        except (IndexError, RuntimeError, OSError) as exc:
            raise RuntimeError(f"cannot open Pi camera {self.camera_num}: {exc} (is a camera connected?)") from exc
        frame_us = int(round(1_000_000 / self.fps))
        make = getattr(self._cam, "create_video_configuration", None) or self._cam.create_preview_configuration
        config = make(
            main={"size": self.size, "format": "RGB888"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
        )
        self._cam.configure(config)
        self._cam.start()
        self._started = True

    def read(self) -> np.ndarray | None:
        if self._cam is None:
            raise RuntimeError(f"{self.name}: read() before open()")
        return to_rgb(self._cam.capture_array("main"), order="bgr")

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            if self._started:
                cam.stop()
        except Exception as exc:  # closing must not hide the error that made us close
            log.warning("%s: stop() failed: %s", self.name, exc)
        finally:
            self._started = False
            try:
                cam.close()
            except Exception as exc:
                log.warning("%s: close() failed: %s", self.name, exc)


# --------------------------------------------------------------------------------------------
# OpenCV: USB cameras, RTSP/HTTP streams, video files
# --------------------------------------------------------------------------------------------


class OpenCVSource:
    """``cv2.VideoCapture`` on a camera index, a stream URL or a video file.

    Indices and URLs are live (never end; a failed read is an error to recover from); a file
    ends with None. Stream URLs get OpenCV's open/read timeouts so a dead host cannot block
    a read forever (the grabber's stall detection covers the rest).
    """

    def __init__(self, device: str = "0", width: int = 640, height: int = 480, fps: float = 15.0,
                 timeout_s: float = 10.0):
        self.device = str(device).strip()
        self.size = (int(width), int(height))
        self.fps = float(fps)
        self.timeout_s = float(timeout_s)
        self.is_index = self.device.isdigit()
        self.is_url = "://" in self.device and not self.device.startswith("file://")
        self.live = self.is_index or self.is_url
        self.name = f"opencv:{_redact_url(self.device)}"
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        if self.is_index:
            cap = cv2.VideoCapture(int(self.device))
        elif self.is_url:
            ms = int(self.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(self.device, cv2.CAP_ANY, params)
        else:
            path = Path(self.device.removeprefix("file://"))
            if not path.is_file():
                raise FileNotFoundError(f"camera.device: video file not found: {path}")
            cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            what = "camera" if self.is_index else "stream" if self.is_url else "video file"
            raise OSError(f"OpenCV cannot open {what} {_redact_url(self.device)}")
        if self.is_index:
            # Requests only: a camera that cannot do them silently picks something close.
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a driver-side queue would add latency
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise RuntimeError(f"{self.name}: read() before open()")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            if self.live:
                raise OSError(f"{self.name}: no frame from the camera/stream")
            return None
        return to_rgb(frame, order="bgr")

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def _redact_url(device: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/... (names end up in logs and MQTT)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", device)


# --------------------------------------------------------------------------------------------
# A folder (or glob) of still images: replays, demos and tests
# --------------------------------------------------------------------------------------------


def _natural_key(path: str) -> list:
    """frame2.jpg before frame10.jpg."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path)]


def list_images(pattern: str) -> list[Path]:
    """Image files in a folder, or files matching a glob, in natural order."""
    p = Path(pattern).expanduser()
    if p.is_dir():
        files = [str(f) for f in p.iterdir() if f.is_file() and looks_like_image(f)]
    else:
        files = [f for f in glob.glob(str(p), recursive=True) if Path(f).is_file()]
    return [Path(f) for f in sorted(files, key=_natural_key)]


class ImageFolderSource:
    """Each image once, in natural order; unreadable files are skipped (warned, counted).

    Decoded by :func:`device.images.read_rgb`, the project's one reader (by content, EXIF
    orientation applied, non-ASCII paths fine).
    """

    live = False

    def __init__(self, path: str):
        self.path = str(path)
        self.name = f"images:{self.path}"
        self.skipped = 0
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        self._files = list_images(self.path)
        self._next = 0
        if not self._files:
            path = Path(self.path).expanduser()
            if path.is_dir():
                where = f"in folder {self.path}"
            elif any(c in self.path for c in "*?["):
                where = f"match the glob {self.path}"
            else:  # a folder that is not there (yet): say so, not "no matches for a glob"
                where = f"(folder {self.path} does not exist)"
            raise FileNotFoundError(f"camera.path: no image files {where}")

    def read(self) -> np.ndarray | None:
        while self._next < len(self._files):
            f = self._files[self._next]
            self._next += 1
            try:
                return read_rgb(f)
            except (OSError, ValueError) as exc:
                self.skipped += 1
                log.warning("%s: skipping %s (%s)", self.name, f, exc)
        return None

    def close(self) -> None:
        self._files = []
        self._next = 0


def _picamera2_installed() -> bool:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        return False
    return True


def _opencv_source(cfg: CameraConfig) -> OpenCVSource:
    timeout = min(getattr(cfg, "open_timeout_s", 10.0), 60.0)
    return OpenCVSource(cfg.device, cfg.width, cfg.height, cfg.fps, timeout_s=timeout)


def make_source(cfg: CameraConfig) -> FrameSource:
    """The source ``cfg.source`` names, not yet opened."""
    if cfg.source == "picamera":
        if not _picamera2_installed():
            # A card provisioned offline has no picamera2 until apt can reach the Raspberry Pi
            # archive: the same camera through V4L2 keeps the entrance watched meanwhile, and
            # the source's name (in the state message) says why.
            log.warning("picamera2 is not installed (sudo apt install python3-picamera2): using camera %s "
                        "through OpenCV/V4L2 instead", cfg.device)
            source = _opencv_source(cfg)
            source.name = f"opencv:{cfg.device} (picamera2 not installed)"
            return source
        return PicameraSource(int(cfg.device), cfg.width, cfg.height, cfg.fps)
    if cfg.source == "opencv":
        return _opencv_source(cfg)
    if cfg.source == "images":
        return ImageFolderSource(cfg.path)
    raise ValueError(f"camera.source: must be one of 'picamera', 'opencv', 'images', got {cfg.source!r}")
