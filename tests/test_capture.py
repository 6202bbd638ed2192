"""Frame sources and the capture thread: hand-off modes, recovery, and real files."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.camera.capture import LatestFrameGrabber
from device.camera.sources import ImageFolderSource, OpenCVSource, PicameraSource, make_source
from device.config import CameraConfig

FAKE_PICAMERA2 = Path(__file__).resolve().parent / "fake_picamera2"
ROOT = Path(__file__).resolve().parents[1]


def frame(value: int, h: int = 8, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


class ScriptedSource:
    """A FrameSource that plays a script.

    Items: an ndarray (a frame), None (end of stream), an Exception (raised by read), or
    "block" (read waits until ``release`` is set: a stalled camera). ``open_error`` makes open
    fail; ``block_open`` makes open hang until ``release``.
    """

    def __init__(self, script, live=False, open_error=None, block_open=False, release=None, name="scripted"):
        self.script = list(script)
        self.live = live
        self.open_error = open_error
        self.block_open = block_open
        self.release = release or threading.Event()
        self.name = name
        self.opened = 0
        self.closed = 0
        self.reads = 0

    def open(self):
        self.opened += 1
        if self.block_open:
            self.release.wait()
        if self.open_error is not None:
            raise self.open_error

    def read(self):
        self.reads += 1
        item = self.script.pop(0) if self.script else None
        if isinstance(item, str) and item == "block":
            self.release.wait()
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed += 1


class Factory:
    """Hands out prepared sources in order (the last one again when they run out)."""

    def __init__(self, sources):
        self.sources = list(sources)
        self.made = []

    def __call__(self):
        src = self.sources.pop(0) if len(self.sources) > 1 else self.sources[0]
        self.made.append(src)
        return src


class RecordingSleep:
    """The backoff wait: records delays and the grabber's stats at that moment, returns at once."""

    def __init__(self):
        self.delays = []
        self.stats = []
        self.grabber = None

    def __call__(self, delay):
        self.delays.append(delay)
        self.stats.append(self.grabber.stats)


def drain(grabber, limit=1000, timeout=10.0):
    """Values of every frame until the source ends."""
    values = []
    while not grabber.ended and len(values) < limit:
        f = grabber.get(timeout)
        if f is None:
            assert grabber.ended, f"no frame within {timeout}s and not ended: {grabber.stats}"
            break
        values.append(int(f.rgb[0, 0, 0]))
    return values


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


# --------------------------------------------------------------------------------------------
# LatestFrameGrabber with scripted sources
# --------------------------------------------------------------------------------------------


def test_lossless_mode_delivers_every_frame_once_in_order():
    src = ScriptedSource([frame(i) for i in range(60)] + [None], live=False)
    g = LatestFrameGrabber(CameraConfig(realtime=None), source_factory=lambda: src)
    g.start()
    try:
        seqs = []
        values = []
        times = []
        while True:
            f = g.get(10.0)
            if f is None:
                break
            seqs.append(f.seq)
            values.append(int(f.rgb[0, 0, 0]))
            times.append(f.time)
            if len(values) % 7 == 0:
                time.sleep(0.01)  # a slow consumer must not lose frames in this mode
        assert values == list(range(60))
        assert seqs == list(range(60))
        # replay time: frames 1/fps apart however fast they were read (default fps 15)
        assert np.allclose(np.diff(times), 1 / 15.0)
        assert g.realtime is False  # a file source defaults to lossless
        assert g.ended
        s = g.stats
        assert (s["frames"], s["dropped"], s["reopens"], s["status"]) == (60, 0, 0, "ended")
        assert g.get(0.0) is None
    finally:
        g.stop()
    assert src.closed == 1


def test_realtime_mode_hands_out_the_newest_frame_and_counts_drops():
    release = threading.Event()
    n = 40
    src = ScriptedSource([frame(i) for i in range(n)] + ["block"], live=True, release=release)
    g = LatestFrameGrabber(CameraConfig(stall_timeout_s=60.0), source_factory=lambda: src)
    g.start()
    try:
        wait_until(lambda: g.stats["frames"] == n)
        f = g.get(1.0)
        assert f is not None and f.seq == n - 1 and int(f.rgb[0, 0, 0]) == n - 1
        assert g.realtime is True  # a live source defaults to realtime
        s = g.stats
        assert s["dropped"] == n - 1
        assert s["status"] == "ok" and s["last_frame_age_s"] is not None
        assert g.get(0.05) is None  # nothing newer: no frame is handed out twice
        assert not g.ended
    finally:
        release.set()
        g.stop()


def test_open_failures_reopen_with_growing_delays_reset_after_a_good_frame():
    fail = [ScriptedSource([], open_error=OSError(f"camera busy #{i}")) for i in range(4)]
    good = ScriptedSource([frame(1), frame(2), RuntimeError("usb unplugged")])
    last = ScriptedSource([frame(3), None])
    factory = Factory([*fail, good, last])
    sleep = RecordingSleep()
    cfg = CameraConfig(source="images", path="x", reopen_min_s=0.1, reopen_max_s=0.5)
    g = LatestFrameGrabber(cfg, source_factory=factory, sleep=sleep)
    sleep.grabber = g
    g.start()
    try:
        assert drain(g) == [1, 2, 3]
    finally:
        g.stop()
    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.1])
    assert [s["status"] for s in sleep.stats] == ["down"] * 5
    assert "camera busy #0" in sleep.stats[0]["last_error"]
    assert "camera busy #3" in sleep.stats[3]["last_error"]
    assert "usb unplugged" in sleep.stats[4]["last_error"]
    assert g.stats["reopens"] == 5
    assert g.stats["last_error"] is None  # cleared by the next good frame
    assert all(s.closed == 1 for s in factory.made)  # a failed open is closed too


def test_factory_errors_are_retried():
    calls = []

    def factory():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("no camera yet")
        return ScriptedSource([frame(5), None])

    sleep = RecordingSleep()
    g = LatestFrameGrabber(CameraConfig(reopen_min_s=0.01), source_factory=factory, sleep=sleep)
    sleep.grabber = g
    g.start()
    try:
        assert drain(g) == [5]
    finally:
        g.stop()
    assert "no camera yet" in sleep.stats[0]["last_error"]


@pytest.mark.parametrize("where", ["read", "open"])
def test_a_stalled_source_is_abandoned_and_reopened(where):
    release = threading.Event()
    if where == "read":
        stuck = ScriptedSource([frame(1), frame(2), "block"], release=release)
    else:
        stuck = ScriptedSource([frame(99)], block_open=True, release=release)
    fresh = ScriptedSource([frame(7), frame(8), None])
    sleep = RecordingSleep()
    cfg = CameraConfig(stall_timeout_s=0.2, open_timeout_s=0.2, reopen_min_s=0.01)
    g = LatestFrameGrabber(cfg, source_factory=Factory([stuck, fresh]), sleep=sleep)
    sleep.grabber = g
    g.start()
    try:
        values = drain(g)
        assert values == ([1, 2, 7, 8] if where == "read" else [7, 8])
        assert len(sleep.stats) == 1 and sleep.stats[0]["status"] == "down"
        assert "stalled" in sleep.stats[0]["last_error"]
        assert g.stats["reopens"] == 1
        assert stuck.closed == 0  # still stuck in its call: nobody touches it from another thread
    finally:
        release.set()
        g.stop()
    wait_until(lambda: stuck.closed == 1)  # ... and it closes itself when the call returns


def test_a_looping_file_starts_again_and_a_non_looping_one_ends():
    g = LatestFrameGrabber(CameraConfig(loop=True),
                           source_factory=lambda: ScriptedSource([frame(0), frame(1), frame(2), None]))
    g.start()
    try:
        values = [int(g.get(10.0).rgb[0, 0, 0]) for _ in range(10)]
        assert values == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
        assert not g.ended
        assert g.stats["loops"] >= 3 and g.stats["reopens"] == 0
    finally:
        g.stop()


def test_a_source_that_ends_without_frames_is_a_failure_not_an_endless_loop():
    sleep = RecordingSleep()
    factory = Factory([ScriptedSource([None]), ScriptedSource([frame(4), None])])
    g = LatestFrameGrabber(CameraConfig(loop=True, reopen_min_s=0.01), source_factory=factory, sleep=sleep)
    sleep.grabber = g
    g.start()
    try:
        assert int(g.get(10.0).rgb[0, 0, 0]) == 4
    finally:
        g.stop()
    assert "without a single frame" in sleep.stats[0]["last_error"]


def test_a_live_stream_that_ends_is_reopened():
    sleep = RecordingSleep()
    factory = Factory([ScriptedSource([frame(1), None], live=True), ScriptedSource([frame(2), "block"], live=True)])
    g = LatestFrameGrabber(CameraConfig(realtime=False, reopen_min_s=0.01, stall_timeout_s=60),
                           source_factory=factory, sleep=sleep)
    sleep.grabber = g
    g.start()
    try:
        assert [int(g.get(10.0).rgb[0, 0, 0]) for _ in range(2)] == [1, 2]
        assert "stream ended" in sleep.stats[0]["last_error"]
    finally:
        factory.made[-1].release.set()
        g.stop()


def test_bad_frames_from_a_source_are_errors():
    sleep = RecordingSleep()
    bad = ScriptedSource([np.zeros((4, 4), np.float32)])
    g = LatestFrameGrabber(CameraConfig(reopen_min_s=0.01), source_factory=Factory([bad, ScriptedSource([frame(3)])]),
                           sleep=sleep)
    sleep.grabber = g
    g.start()
    try:
        assert int(g.get(10.0).rgb[0, 0, 0]) == 3
    finally:
        g.stop()
    assert "HxWx3 uint8" in sleep.stats[0]["last_error"]


def test_swap_rb_exchanges_red_and_blue():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200
    g = LatestFrameGrabber(CameraConfig(swap_rb=True), source_factory=lambda: ScriptedSource([rgb, None]))
    g.start()
    try:
        f = g.get(10.0)
    finally:
        g.stop()
    assert f.rgb[0, 0].tolist() == [0, 0, 200]


# --------------------------------------------------------------------------------------------
# PicameraSource against the fake picamera2
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_picamera2(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_PICAMERA2))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    import picamera2

    assert Path(picamera2.__file__).is_relative_to(FAKE_PICAMERA2)
    picamera2.reset()
    yield picamera2
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)


def test_picamera_source_configures_rgb888_and_returns_rgb(fake_picamera2):
    src = make_source(CameraConfig(source="picamera", device="0", width=64, height=48, fps=20))
    assert isinstance(src, PicameraSource) and src.live
    src.open()
    rgb = src.read()
    src.close()
    calls = [c[0] for c in fake_picamera2.CALLS]
    assert calls == ["init", "create_video_configuration", "configure", "start", "capture_array", "stop", "close"]
    config = fake_picamera2.CALLS[1][1]
    assert config["main"] == {"size": (64, 48), "format": "RGB888"}
    assert config["controls"]["FrameDurationLimits"] == (50000, 50000)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert tuple(rgb[0, 0]) == fake_picamera2.FRAME_MARK
    assert rgb[10, 5].tolist() == [0, 0, 255]  # left half is blue
    assert rgb[10, 60].tolist() == [255, 0, 0]  # right half is red
    src.close()  # twice is fine


def test_picamera_source_without_a_camera_fails_clearly(fake_picamera2):
    fake_picamera2.CAMERAS = 0
    src = PicameraSource(0)
    with pytest.raises(RuntimeError, match="cannot open Pi camera 0"):
        src.open()
    src.close()


def test_picamera_source_without_picamera2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(RuntimeError, match="python3-picamera2"):
        PicameraSource(0).open()


def test_picamera_through_the_grabber(fake_picamera2):
    cfg = CameraConfig(source="picamera", width=32, height=24)
    g = LatestFrameGrabber(cfg)
    g.start()
    try:
        f = g.get(10.0)
        assert f is not None and tuple(f.rgb[0, 0]) == fake_picamera2.FRAME_MARK
        assert g.realtime is True
    finally:
        g.stop()
    assert ("close",) in fake_picamera2.CALLS


def test_importing_the_camera_modules_does_not_import_picamera2():
    code = (
        "import sys, device.camera.sources, device.camera.capture, device.config; "
        "print('picamera2' in sys.modules); import picamera2; print(picamera2.__file__)"
    )
    env = {"PYTHONPATH": f"{FAKE_PICAMERA2}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT,
                         check=True)
    imported, fake_file = out.stdout.split()
    assert Path(fake_file).is_relative_to(FAKE_PICAMERA2)  # importable all along ...
    assert imported == "False"  # ... yet not imported by our modules


# --------------------------------------------------------------------------------------------
# OpenCVSource on a real video file, ImageFolderSource on real photos
# --------------------------------------------------------------------------------------------


def write_video(path: Path, n: int = 12, size=(64, 48)) -> list[np.ndarray]:
    """An MJPG .avi whose frame i is red with green = 16*i (written BGR, as OpenCV wants)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    frames = []
    for i in range(n):
        rgb = np.zeros((size[1], size[0], 3), np.uint8)
        rgb[..., 0] = 220
        rgb[..., 1] = 16 * i
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append(rgb)
    writer.release()
    return frames


def test_opencv_source_reads_a_video_file_as_rgb(tmp_path):
    path = tmp_path / "clip.avi"
    expected = write_video(path)
    src = OpenCVSource(str(path), width=640, height=480)
    assert not src.live
    src.open()
    got = []
    while (rgb := src.read()) is not None:
        got.append(rgb)
    src.close()
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape and have.dtype == np.uint8
        assert np.abs(have.astype(int) - want).mean() < 6  # MJPG is lossy, channel order is not


def test_opencv_file_through_the_grabber_is_lossless(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, n=15)
    g = LatestFrameGrabber(CameraConfig(source="opencv", device=str(path)))
    g.start()
    try:
        greens = []
        while (f := g.get(10.0)) is not None:
            greens.append(int(f.rgb[..., 1].mean()))
        assert len(greens) == 15 and greens == sorted(greens)
        assert g.stats["status"] == "ended"
    finally:
        g.stop()


def test_opencv_source_errors_name_the_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.avi"):
        OpenCVSource(str(tmp_path / "nope.avi")).open()
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(OSError, match="junk.avi"):
        OpenCVSource(str(junk)).open()
    assert OpenCVSource("rtsp://user:secret@cam.local/stream").name == "opencv:rtsp://user:***@cam.local/stream"
    assert OpenCVSource("0").live and OpenCVSource("http://cam/mjpg").live


@pytest.fixture
def photos(faces, tmp_path) -> Path:
    """JPEG photos of real faces (sizes and names as a camera roll has them), and a PNG the glob leaves out."""
    folder = tmp_path / "media"
    folder.mkdir()
    for i, name in enumerate(["demo2.jpg", "pic1.jpeg", "pic2.jpg", "pic3.jpg"]):
        face = faces[i % 2]
        img = cv2.resize(face, (face.shape[1] + 40 * i, face.shape[0] + 24 * i))[..., ::-1]  # BGR for imwrite
        assert cv2.imwrite(str(folder / name), np.ascontiguousarray(img))
    assert cv2.imwrite(str(folder / "other.png"), faces[0])
    return folder


def test_image_folder_source_reads_real_photos_in_order(photos):
    src = make_source(CameraConfig(source="images", path=str(photos / "*.jp*g")))
    assert isinstance(src, ImageFolderSource) and not src.live
    src.open()
    frames = []
    while (rgb := src.read()) is not None:
        frames.append(rgb)
    src.close()
    names = ["demo2.jpg", "pic1.jpeg", "pic2.jpg", "pic3.jpg"]
    assert len(frames) == len(names)
    for name, rgb in zip(names, frames, strict=True):
        bgr = cv2.imread(str(photos / name))
        assert np.array_equal(rgb, bgr[..., ::-1])


def test_image_folder_skips_unreadable_files_and_reads_non_ascii_names(photos, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "frame1.jpg").symlink_to(photos / "pic1.jpeg")
    (folder / "frame2_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "frame10_café.jpg").symlink_to(photos / "pic3.jpg")
    (folder / "notes.txt").write_text("not an image")
    src = ImageFolderSource(str(folder))
    src.open()
    frames = []
    while (rgb := src.read()) is not None:
        frames.append(rgb)
    assert len(frames) == 2 and src.skipped == 1
    assert np.array_equal(frames[1], cv2.imread(str(photos / "pic3.jpg"))[..., ::-1])
    # through the grabber, looping: the skip count shows up in the stats
    g = LatestFrameGrabber(CameraConfig(source="images", path=str(folder), loop=True))
    g.start()
    try:
        got = [g.get(10.0) for _ in range(5)]
        assert all(f is not None for f in got)
        assert g.stats["skipped"] >= 2
    finally:
        g.stop()


def test_image_folder_without_images_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderSource(str(tmp_path)).open()


def test_picamera_without_picamera2_falls_back_to_v4l2_and_says_so(monkeypatch):
    """A card provisioned offline has no picamera2 until apt can install it: the same camera is
    opened through OpenCV/V4L2 meanwhile, and the source's name (shown in `state`) says why."""
    from device.camera.sources import OpenCVSource, make_source
    from device.config import CameraConfig

    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    source = make_source(CameraConfig(source="picamera", device="0"))
    assert isinstance(source, OpenCVSource) and source.is_index and source.device == "0"
    assert source.name == "opencv:0 (picamera2 not installed)"
