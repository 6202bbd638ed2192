"""A stand-in for picamera2 (Raspberry Pi OS only) with the part of its API maskwatch uses.

Tests put ``tests/fake_picamera2`` on ``sys.path``. It behaves like the real library where it
matters to us: ``create_video_configuration``/``create_preview_configuration`` return a config
dict, ``configure``/``start``/``stop``/``close`` must come in that order, and an "RGB888" main
stream is returned by ``capture_array`` in B, G, R byte order (libcamera/DRM naming; see
raspberrypi/picamera2 issue #191). Every call is recorded in :data:`CALLS`.

The test image: left half blue, right half red, top-left pixel ``FRAME_MARK`` (as R, G, B).
Set :data:`CAMERAS` to 0 to simulate a Pi without a camera (the real library raises
IndexError from its camera list then).
"""

from __future__ import annotations

import numpy as np

CALLS: list[tuple] = []
CAMERAS = 1
FRAME_MARK = (10, 20, 30)  # R, G, B of pixel (0, 0)


def reset() -> None:
    global CAMERAS
    CALLS.clear()
    CAMERAS = 1


class Picamera2:
    def __init__(self, camera_num: int = 0):
        if camera_num >= CAMERAS:
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.config: dict | None = None
        self.started = False
        self.closed = False
        CALLS.append(("init", camera_num))

    @staticmethod
    def global_camera_info() -> list[dict]:
        return [{"Model": "fake", "Num": i} for i in range(CAMERAS)]

    def _make_config(self, kind: str, main: dict | None = None, controls: dict | None = None, **kw) -> dict:
        main = dict(main or {})
        main.setdefault("size", (640, 480))
        main.setdefault("format", "XBGR8888")
        config = {"use_case": kind, "main": main, "controls": dict(controls or {}), **kw}
        CALLS.append(("create_" + kind + "_configuration", config))
        return config

    def create_video_configuration(self, main: dict | None = None, controls: dict | None = None, **kw) -> dict:
        return self._make_config("video", main, controls, **kw)

    def create_preview_configuration(self, main: dict | None = None, controls: dict | None = None, **kw) -> dict:
        return self._make_config("preview", main, controls, **kw)

    def configure(self, config: dict) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.config = config
        CALLS.append(("configure", config))

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        CALLS.append(("start",))

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera is not running")
        CALLS.append(("capture_array", name))
        w, h = self.config[name]["size"]
        fmt = self.config[name]["format"]
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[:, : w // 2, 2] = 255  # blue
        rgb[:, w // 2 :, 0] = 255  # red
        rgb[0, 0] = FRAME_MARK
        if fmt == "RGB888":  # stored B, G, R
            return np.ascontiguousarray(rgb[..., ::-1])
        if fmt == "BGR888":  # stored R, G, B
            return rgb
        if fmt in ("XRGB8888", "XBGR8888"):
            order = rgb[..., ::-1] if fmt == "XRGB8888" else rgb
            return np.concatenate([order, np.full((h, w, 1), 255, np.uint8)], axis=2)
        raise ValueError(f"fake picamera2 does not do format {fmt!r}")

    def stop(self) -> None:
        self.started = False
        CALLS.append(("stop",))

    def close(self) -> None:
        self.closed = True
        CALLS.append(("close",))
