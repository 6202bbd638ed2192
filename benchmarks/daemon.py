"""``make bench-device`` (``python -m benchmarks.daemon``): the daemon's cost per frame.

What it measures, on 640x480 frames with two real faces (the public-domain portraits of
``maskwatch data synth``, :func:`train.data.synth.portraits`, pasted onto a plain background by
:mod:`train.data.walks`, moving a little from frame to frame so the tracker follows two people):

* end to end through the daemon's own loop (:class:`device.daemon.Daemon`), frames handed over
  in memory by the real :class:`~device.camera.capture.LatestFrameGrabber` (no file decoding,
  as with a camera), the default detector and the int8 classifier on 2 threads each, the
  tracker, and events published through the real outbox to a local Mosquitto when one is
  installed: median and p95 ms per frame, with the median and p95 of every stage, in
  ``--rounds`` rounds (default 3) of which the best one is the verdict (a shared machine's noise
  only ever slows a round down) and all are shown;
* the default detector and BlazeFace short and full range alone on the same frame, each named
  with its input size;
* the resident memory of a real ``maskwatch-device run`` process after a few seconds of work;
* how long importing the daemon's modules takes in a fresh interpreter, and that TensorFlow
  and Keras are not among the loaded modules;
* the web page's cost (``[web]``): per-frame median with the page disabled and with it enabled
  while nobody watches, in alternating rounds of the same run (target: at most
  ``web_idle_pct`` % apart), and with one viewer on the live stream (reported, no target:
  the viewer's JPEGs are encoded on the same cores).

The classifier is the default trained int8 model when ``runs/default/`` or ``models/`` has one,
else the random-weight tiny model of the tests (built once with TensorFlow into ``.cache``);
the output says which. Results go to ``bench/device/bench.json`` and a table on stdout.

Exit status: 0 when every target is met, 1 when one is missed, 2 when the benchmark cannot run
(no classifier, no face detector, no face photos). ``--target NAME=VALUE`` replaces a target.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.targets import parse_overrides
from device.detectors.base import DEFAULT_KIND
from device.metrics import latency_summary
from train.broker import Broker, find_mosquitto, free_port
from train.data.walks import Walk, render
from train.toml_writer import write_toml

log = logging.getLogger("maskwatch.benchmark")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "device" / "bench.json"
TINY = ROOT / ".cache" / "test-assets" / "tiny_int8.tflite"
TARGETS = {"median_ms": 8.0, "p95_ms": 12.0, "rss_mb": 200.0, "import_s": 1.0, "web_idle_pct": 3.0}
WEB_PASSWORD = "bench"
EXIT_MISSED, EXIT_CANNOT_RUN = 1, 2
STAGES = ("capture", "detect", "classify", "track", "publish", "monitor")
#: What the daemon imports at run time (the interpreter included).
DAEMON_IMPORTS = (
    "device.daemon", "device.wiring", "device.config", "device.pipeline", "device.classifier", "device.runtime",
    "device.detectors.base", "device.detectors.blazeface", "device.detectors.yunet_litert",
    "device.camera.capture", "device.tracking.tracker",
    "device.comms.mqtt", "device.comms.events", "device.health", "device.captures", "device.state",
)


class CannotRun(RuntimeError):
    """Something the benchmark needs is missing: it measures nothing, and must not pass."""


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def two_face_frames() -> list[np.ndarray]:
    """20 frames of 640x480, two real faces drifting 20 px right and left (the round cycles them)."""
    from train.data.synth import portraits

    try:
        faces = list(portraits().values())
    except (ImportError, FileNotFoundError) as exc:
        raise CannotRun(f"the face photos of maskwatch data synth are unavailable ({exc}); "
                        "install the workstation extras (make setup)") from exc
    walks = [Walk(face=0, first=0, last=19, x0=60, x1=79, y=120, width=200),
             Walk(face=1, first=0, last=19, x0=370, x1=351, y=140, width=190)]
    return render(faces, walks, 20, seed=1)


class MemorySource:
    """A camera stand-in that hands out frames already in memory (no decoding, like picamera2)."""

    live = False

    def __init__(self, frames: list[np.ndarray], count: int, start: Any = None):
        self.name = "memory"
        self.frames = frames
        self.count = count
        self.start = start  # a threading.Event the first frame waits for (a viewer connecting)
        self._i = 0

    def open(self) -> None:
        self._i = 0

    def read(self) -> np.ndarray | None:
        if self._i >= self.count:
            return None
        if self.start is not None and not self.start.wait(20.0):
            raise CannotRun("the web page's viewer did not connect within 20 s")
        frame = self.frames[self._i % len(self.frames)]
        self._i += 1
        return frame

    def close(self) -> None:
        pass


def find_classifier(explicit: Path | None) -> tuple[Path, str]:
    """(model path, what it is): --model, a trained default int8 model (``make bench``'s, runs/default/
    or models/), or the tiny test model."""
    if explicit is not None:
        if not (explicit.is_file() and explicit.with_suffix(".json").is_file()):
            raise CannotRun(f"--model {explicit}: no such model, or no model card {explicit.with_suffix('.json').name} "
                            "beside it")
        return explicit, "given with --model"
    # `make bench` writes the benchmarks' default model to bench/convert/models/.
    candidates = [ROOT / "bench" / "convert" / "models" / "default_int8.tflite"]
    candidates += sorted((ROOT / "runs" / "default").glob("**/*int8*.tflite")) + sorted(
        p for p in (ROOT / "models").glob("*int8*.tflite"))
    for p in candidates:
        if p.name.startswith("face_detection_"):  # the converted int8 face detector, not a classifier
            continue
        if p.with_suffix(".json").exists():
            return p, "trained default model"
    if not (TINY.exists() and TINY.with_suffix(".json").exists()):
        log.info("no trained int8 model in runs/default/ or models/: building the tiny test model")
        # In a child process: TensorFlow must not be loaded in the process that measures imports.
        r = subprocess.run([sys.executable, "-m", "convert.tiny_model", str(TINY)], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if r.returncode != 0:
            raise CannotRun("no classifier model: pass --model FILE.tflite (building the tiny test model "
                            f"needs TensorFlow): {r.stderr.strip()[-500:]}")
    return TINY, "tiny test model (random weights, 64x64 input): NOT the trained model's cost"


# --------------------------------------------------------------------------------------------
# A local broker
# --------------------------------------------------------------------------------------------


def start_broker(workdir: Path) -> tuple[Broker | None, int, str]:
    """(broker or None, port, what the table says): events stay in the outbox without one."""
    if find_mosquitto() is None:
        return None, free_port(), "none (mosquitto not installed: events stay in the outbox)"
    try:
        broker = Broker(workdir / "broker").start()
    except RuntimeError as exc:
        return None, free_port(), f"none (mosquitto did not start: {exc})"
    return broker, broker.port, f"mosquitto on 127.0.0.1:{broker.port}"


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def summary(values_ms: list[float] | np.ndarray) -> dict[str, float]:
    """The shared latency summary under this report's names (median, to the microsecond)."""
    s = latency_summary(values_ms, digits=3)
    return {"median_ms": s["p50_ms"], "p95_ms": s["p95_ms"], "mean_ms": s["mean_ms"], "n": s["n"]}


def daemon_config(state_dir: Path, model: Path, port: int, frames_path: Path, threads: int, **camera: Any) -> dict:
    return {
        "device_id": "bench", "state_dir": str(state_dir), "state_interval_s": 1.0,
        "camera": {"source": "images", "path": str(frames_path), "realtime": False, **camera},
        "detector": {"kind": DEFAULT_KIND, "num_threads": threads},
        "classifier": {"model_path": str(model), "num_threads": threads},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.5, "reconnect_max_s": 2.0},
    }


def bench_end_to_end(frames: list[np.ndarray], model: Path, port: int, workdir: Path, n: int, warmup: int,
                     threads: int, web: str = "disabled", parts: Any = None) -> dict:
    """The daemon loop on ``n`` in-memory frames; per-frame stage times after ``warmup`` frames.

    ``web``: "disabled", "idle" (the page served, nobody watching) or "viewer" (one client on
    the live stream from before the first frame to the end). ``parts``: classifier and detector
    already loaded (:func:`device.wiring.load_components`) to reuse, so rounds compared with
    each other run the very same interpreters."""
    import threading

    from device.camera.capture import LatestFrameGrabber
    from device.config import load_config
    from device.daemon import Daemon
    from device.wiring import load_components

    workdir.mkdir(parents=True, exist_ok=True)
    data = daemon_config(workdir / "state", model, port, workdir, threads)
    if web != "disabled":
        pw = workdir / "web-password"
        pw.write_text(WEB_PASSWORD + "\n")
        pw.chmod(0o600)
        data["web"] = {"enabled": True, "bind": "127.0.0.1", "port": free_port(), "password_file": str(pw)}
    config_path = write_toml(workdir / "config.toml", data)
    cfg = load_config(config_path, env={})
    parts = parts or load_components(cfg)
    start = viewer = None
    jpegs: list[int] = []
    if web == "viewer":
        start, stop = threading.Event(), threading.Event()
        viewer = threading.Thread(target=watch_stream, args=(cfg.web.port, start, stop, jpegs), daemon=True)
        viewer.start()
    daemon = Daemon(cfg, parts, exit_on_end=True, record_timings=True, config_path=config_path,
                    grabber_factory=lambda cam: LatestFrameGrabber(cam, source_factory=lambda: MemorySource(
                        frames, n + warmup, start)))
    # Give the broker connection a moment so events are published, not just queued.
    t0 = time.perf_counter()
    try:
        rc = daemon.run()
    finally:
        if viewer is not None:
            stop.set()
            viewer.join(5)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"daemon loop exited with {rc}")
    rows = daemon.timings[warmup:] if daemon.timings else []
    totals = [sum(r.values()) for r in rows]
    out = {"frames": len(rows), "detector": parts.detector.describe(), "total": summary(totals), "stages": {},
           "wall_s": round(wall, 2), "events": daemon.state.events_total, "mqtt": daemon.sink_status().get("mqtt"),
           "viewer_jpegs": sum(jpegs)}
    if rows and "web" in rows[0]:
        out["web_stage"] = summary([r["web"] for r in rows])
    for stage in STAGES:
        vals = [r.get(stage, 0.0) for r in rows]
        out["stages"][stage] = summary(vals)
    return out


def watch_stream(port: int, start: Any, stop: Any, jpegs: list[int]) -> None:
    """One viewer of the page's live stream: logs in, reads ``/stream.mjpg`` until ``stop``; sets
    ``start`` once the stream is open (the benchmark's frames wait for it); appends the number
    of JPEGs it got to ``jpegs``."""
    import http.client
    import re
    import urllib.parse

    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/login")
            r = conn.getresponse()
            break
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
    page, cookie = r.read(), r.getheader("Set-Cookie", "").split(";")[0]
    token = re.search(rb'name="token" value="([^"]+)"', page).group(1).decode()
    conn.request("POST", "/login", urllib.parse.urlencode({"password": WEB_PASSWORD, "token": token}),
                 {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    r = conn.getresponse()
    r.read()
    session = r.getheader("Set-Cookie", "").split(";")[0]
    conn.request("GET", "/stream.mjpg", headers={"Cookie": session})
    r = conn.getresponse()
    time.sleep(0.05)  # the server counts the viewer right after the headers
    start.set()
    n = 0
    while not stop.is_set():
        chunk = r.read1(65536)
        if not chunk:
            break
        n += chunk.count(b"Content-Type: image/jpeg")
    jpegs.append(n)
    conn.close()


class Baton:
    """Frames for two daemons in turn: each one processes its frame while the other waits, so
    both modes see the same moments of a shared machine, frame by frame. Both get the same
    picture one after the other, in the order A B, B A, A B, ... (the second one finds the
    picture in the CPU's caches, so neither may always be second)."""

    def __init__(self, frames: list[np.ndarray], per_daemon: int):
        import threading

        self.frames = frames
        self.total = 2 * per_daemon
        self.handed = 0
        self.busy = False  # a frame is being processed
        self.cond = threading.Condition()

    def slot(self) -> int:
        """Whose frame is next: A B for even pictures, B A for odd ones."""
        pair, pos = divmod(self.handed, 2)
        return pos if pair % 2 == 0 else 1 - pos

    @property
    def done(self) -> bool:
        return self.handed >= self.total

    def grabber(self, slot: int) -> TurnGrabber:
        return TurnGrabber(self, slot)


class TurnGrabber:
    """The camera grabber of one of the two daemons of a :class:`Baton` (slot 0 or 1)."""

    def __init__(self, baton: Baton, slot: int):
        self.baton = baton
        self.slot = slot
        self.stats: dict[str, Any] = {"status": "ok"}

    def start(self) -> None:
        pass

    def stop(self, timeout: float | None = None) -> None:
        pass

    @property
    def ended(self) -> bool:
        return self.baton.done

    def get(self, timeout: float | None = None) -> Any:
        from device.camera.capture import Frame

        b = self.baton
        with b.cond:
            if not b.cond.wait_for(lambda: b.done or (not b.busy and b.slot() == self.slot), timeout):
                return None
            if b.done:
                return None
            i = b.handed
            b.handed += 1
            b.busy = True
            frame = Frame(seq=i // 2, time=time.time(), mono=time.monotonic(), rgb=b.frames[(i // 2) % len(b.frames)])
        return frame

    def hand_over(self) -> None:
        """This daemon processed its frame: the next one's turn."""
        with self.baton.cond:
            self.baton.busy = False
            self.baton.cond.notify_all()


def bench_web_interleaved(frames: list[np.ndarray], model: Path, port: int, workdir: Path, n: int, warmup: int,
                          threads: int, parts: Any) -> dict:
    """The page disabled (daemon A) and enabled with nobody watching (daemon B), frame by frame
    in turn: two real daemons on one classifier and detector, each in its own thread, each
    frame processed while the other daemon waits. Per-frame time leaves out ``capture`` (here:
    the wait for the other daemon's frame)."""
    import threading

    from device.config import load_config
    from device.daemon import Daemon

    baton = Baton(frames, n + warmup)
    daemons = []
    for slot, web in enumerate(("disabled", "idle")):
        d = workdir / web
        d.mkdir(parents=True, exist_ok=True)
        data = daemon_config(d / "state", model, port, d, threads)
        data["device_id"] = f"bench-{web}"
        if web == "idle":
            pw = d / "web-password"
            pw.write_text(WEB_PASSWORD + "\n")
            pw.chmod(0o600)
            data["web"] = {"enabled": True, "bind": "127.0.0.1", "port": free_port(), "password_file": str(pw)}
        path = write_toml(d / "config.toml", data)
        grabber = baton.grabber(slot)
        daemons.append(Daemon(load_config(path, env={}), parts, exit_on_end=True, record_timings=True,
                              config_path=path, grabber_factory=lambda cam, g=grabber: g))
    # A daemon asks for its next frame only after processing the last one: wake the other then.
    for dm in daemons:
        dm._install_signals = lambda: None  # they run in threads; signals are the main thread's
        dm.state_on_frame = dm.state.on_frame

        def on_frame(*a, dm=dm, **k):
            dm.state_on_frame(*a, **k)
            dm.grabber.hand_over()
        dm.state.on_frame = on_frame
    threads_ = [threading.Thread(target=dm.run, name=f"bench-{i}") for i, dm in enumerate(daemons)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join(600)
    out = {}
    for name, dm in zip(("disabled", "idle"), daemons, strict=True):
        rows = (dm.timings or [])[warmup:]
        out[name] = summary([sum(v for k, v in r.items() if k != "capture") for r in rows])
        if name == "idle":
            out["web_stage_ms"] = summary([r.get("web", 0.0) for r in rows])
    return out


def bench_jpeg(frame: np.ndarray, runs: int = 30) -> dict:
    """ms to draw, pixelate and encode one live-view JPEG of ``frame`` (two faces, two tracks):
    what one viewer costs the viewer's thread per frame it gets."""
    from device.captures import encode_jpeg
    from device.web.stream import JPEG_QUALITY, LiveFrame, TrackBox, render

    boxes = np.array([[60, 120, 260, 370], [351, 140, 541, 380]], np.float32)
    live = LiveFrame(frame, boxes, [TrackBox(i, tuple(b), "without_mask", 0.9) for i, b in enumerate(boxes)],
                     source_size=(frame.shape[1], frame.shape[0]))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        encode_jpeg(render(live, blur_faces=True, margin=0.2), JPEG_QUALITY)
        times.append((time.perf_counter() - t) * 1e3)
    return summary(times)


def paired_change(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """(median % change, median ms change) of B over A across ``(a, b)`` pairs of round medians.

    Each pair ran back to back, so it shared one moment of a shared machine; the median over the
    pairs ignores the few pairs a neighbour's burst hit in either direction."""
    pct = [100.0 * (b - a) / a for a, b in pairs]
    ms = [b - a for a, b in pairs]
    return round(float(np.median(pct)), 2), round(float(np.median(ms)), 3)


def bench_web(frames: list[np.ndarray], model: Path, port: int, workdir: Path, n: int, warmup: int,
              threads: int, rounds: int) -> dict:
    """The page's cost per frame, on one classifier and detector for every round (the modes
    differ by the page only):

    * enabled with nobody watching vs disabled: ``rounds`` interleaved rounds
      (:func:`bench_web_interleaved`, frame by frame in turn); the change is the median over
      the rounds of their per-frame medians' change, the verdict of ``web_idle_pct``;
    * one viewer on the live stream vs disabled: ``rounds`` pairs of whole rounds back to back in
      alternating order (a viewer's JPEGs are encoded in its own thread, which would slow the
      other daemon of an interleaved round too); reported, no target.
    """
    from device.config import config_from_dict
    from device.wiring import load_components

    parts = load_components(config_from_dict(daemon_config(workdir, model, port, workdir, threads), env={}))
    inter = []
    for i in range(rounds):
        log.info("web page disabled / enabled, frame by frame, round %d of %d", i + 1, rounds)
        inter.append(bench_web_interleaved(frames, model, port, workdir / f"inter{i}", n, warmup, threads, parts))
        gc.collect()
    idle_pct, _ = paired_change([(r["disabled"]["median_ms"], r["idle"]["median_ms"]) for r in inter])
    pairs, jpegs, viewer_stage = [], [], []
    for i in range(rounds):
        got = {}
        for mode in (("disabled", "viewer") if i % 2 == 0 else ("viewer", "disabled")):
            log.info("web page %s, pair %d of %d", mode, i + 1, rounds)
            r = bench_end_to_end(frames, model, port, workdir / f"viewer{i}-{mode}", n, warmup, threads,
                                 web=mode, parts=parts)
            got[mode] = r["total"]["median_ms"]
            if mode == "viewer":
                jpegs.append(r["viewer_jpegs"])
                viewer_stage.append(r["web_stage"]["median_ms"])
            gc.collect()
        pairs.append((got["disabled"], got["viewer"]))
    viewer_pct, viewer_ms = paired_change(pairs)
    return {
        "viewer_stage_ms": round(float(np.median(viewer_stage)), 4), "jpeg_ms": bench_jpeg(frames[0]),
        "interleaved": inter, "idle_pct": idle_pct,
        "disabled_ms": round(float(np.median([r["disabled"]["median_ms"] for r in inter])), 3),
        "idle_ms": round(float(np.median([r["idle"]["median_ms"] for r in inter])), 3),
        "web_stage_ms": round(float(np.median([r["web_stage_ms"]["median_ms"] for r in inter])), 4),
        "viewer_pairs": pairs, "viewer_added_ms": viewer_ms, "viewer_pct": viewer_pct, "viewer_jpegs": jpegs,
    }


def best_round(rounds: list[dict]) -> dict:
    """The round with the lowest median, plus every round's figures.

    Like ``timeit``'s advice to take the minimum: on a shared machine a slower round measures the
    neighbours, not the daemon, and the table still shows every round so nothing is hidden.
    """
    best = dict(min(rounds, key=lambda r: r["total"]["median_ms"]))
    best["rounds"] = [{"median_ms": r["total"]["median_ms"], "p95_ms": r["total"]["p95_ms"]} for r in rounds]
    return best


def bench_detectors(frame: np.ndarray, threads: int, runs: int) -> dict:
    from device.config import DetectorConfig
    from device.detectors import make_detector

    kinds = tuple(dict.fromkeys((DEFAULT_KIND, "short", "full")))
    mirror = DetectorConfig().mirror  # as a daemon with a default config runs them
    dets = {k: make_detector(k, num_threads=threads, mirror=mirror) for k in kinds}
    faces = {k: len(d.detect(frame)) for k, d in dets.items()}
    for _ in range(10):
        for d in dets.values():
            d.detect(frame)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(runs):  # interleaved: a busy moment of the machine slows both alike
        for k, d in dets.items():
            t = time.perf_counter()
            d.detect(frame)
            times[k].append((time.perf_counter() - t) * 1e3)
    # "detector" names it with its input size, e.g. "yunet-litert 640x480 int8"
    return {k: {**summary(times[k]), "faces": faces[k], "detector": dets[k].describe()} for k in kinds}


def rss_of_running_daemon(frames: list[np.ndarray], model: Path, port: int, workdir: Path, seconds: float,
                          threads: int) -> dict:
    """Start ``maskwatch-device run`` on a looping folder of the frames, sample its VmRSS."""
    import cv2

    folder = workdir / "frames"
    folder.mkdir()
    for i, f in enumerate(frames[:30]):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    cfg = daemon_config(workdir / "rss-state", model, port, folder, threads, loop=True, realtime=True, fps=15.0)
    from device.config import config_from_dict

    config_from_dict(cfg, env={})  # fail here, not in the child
    cfg_path = write_toml(workdir / "rss.toml", cfg)
    log_path = workdir / "rss-daemon.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config", str(cfg_path)], cwd=ROOT,
                                stdout=logf, stderr=subprocess.STDOUT)
    samples = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            samples.append(_proc_status(proc.pid).get("VmRSS", 0))
            time.sleep(0.25)
        hwm = _proc_status(proc.pid).get("VmHWM", 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    if proc.returncode not in (0, None) or not samples:
        raise RuntimeError(f"the daemon for the memory test failed (exit {rc}):\n{log_path.read_text()[-2000:]}")
    return {"rss_mb": round(samples[-1] / 1024, 1), "rss_max_mb": round(max(samples) / 1024, 1),
            "peak_hwm_mb": round(hwm / 1024, 1), "seconds": seconds, "exit_code": rc}


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import device
t1 = time.perf_counter()
for name in {modules!r}:
    __import__(name)
from device.runtime import interpreter_class
backend, _ = interpreter_class()
t2 = time.perf_counter()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({{"device_s": t1 - t0, "daemon_s": t2 - t0, "backend": backend, "heavy": heavy}}))
"""


def bench_imports(repeats: int = 5) -> dict:
    """Fresh interpreters; the first run pays for a cold file cache, so the median is reported."""
    runs = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(modules=DAEMON_IMPORTS)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"import probe failed: {r.stderr.strip()[-1000:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {
        "import_device_s": round(float(np.median([x["device_s"] for x in runs])), 4),
        "import_daemon_s": round(float(np.median([x["daemon_s"] for x in runs])), 3),
        "import_daemon_max_s": round(max(x["daemon_s"] for x in runs), 3),
        "interpreter": runs[0]["backend"],
        "tensorflow_or_keras_modules": runs[0]["heavy"],
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def verdicts(result: dict, targets: dict[str, float] = TARGETS) -> dict[str, dict]:
    """Each measured figure against its target (lower is better for all of them)."""
    e2e = result["end_to_end"]["total"]
    measured = {
        "median_ms": e2e["median_ms"],
        "p95_ms": e2e["p95_ms"],
        "rss_mb": result["memory"]["rss_max_mb"],
        "import_s": result["imports"]["import_daemon_s"],
        "web_idle_pct": abs(result["web"]["idle_pct"]),  # either way: "within noise"
    }
    return {k: {"value": measured[k], "target": targets[k], "ok": measured[k] <= targets[k]} for k in targets}


def exit_status(verdicts_: dict[str, dict]) -> int:
    """0 when every target is met, :data:`EXIT_MISSED` when one is missed."""
    return 0 if all(v["ok"] for v in verdicts_.values()) else EXIT_MISSED


def parse_target(text: str) -> tuple[str, float]:
    """``NAME=VALUE`` of ``--target``: NAME one of :data:`TARGETS`, VALUE a number."""
    try:
        limits = parse_overrides([text], TARGETS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    name = text.partition("=")[0].strip()
    return name, limits[name]


def table(result: dict) -> str:
    e2e = result["end_to_end"]
    lines = [
        f"maskwatch device benchmark  ({result['machine']['cpu_count']} CPUs, {result['machine']['platform']})",
        f"classifier: {result['classifier']['path']}  [{result['classifier']['what']}]",
        f"detector: {e2e.get('detector', '?')}",
        f"broker: {result['broker']}   threads: {result['threads']}   frames: {e2e['frames']} (640x480, 2 faces)",
        "",
        f"{'stage':<12}{'median ms':>11}{'p95 ms':>9}",
    ]
    for stage, s in e2e["stages"].items():
        lines.append(f"{stage:<12}{s['median_ms']:>11.3f}{s['p95_ms']:>9.3f}")
    lines.append(f"{'per frame':<12}{e2e['total']['median_ms']:>11.3f}{e2e['total']['p95_ms']:>9.3f}")
    if len(e2e.get("rounds", [])) > 1:
        lines.append("rounds (median / p95 ms): " + ", ".join(
            f"{r['median_ms']:.2f} / {r['p95_ms']:.2f}" for r in e2e["rounds"]) + "  (the table shows the best)")
    lines += ["", f"{'detector':<34}{'median ms':>11}{'p95 ms':>9}{'faces':>7}"]
    for kind, s in result["detectors"].items():
        lines.append(f"{s.get('detector', kind):<34}{s['median_ms']:>11.3f}{s['p95_ms']:>9.3f}{s['faces']:>7}")
    mem, imp, web = result["memory"], result["imports"], result["web"]
    lines += [
        "",
        f"web page, enabled with nobody watching vs disabled, frame by frame in turn "
        f"({len(web['interleaved'])} rounds; per-frame median without capture): {web['idle_pct']:+.2f} % "
        f"(disabled {web['disabled_ms']:.3f} ms, enabled {web['idle_ms']:.3f} ms; its own stage {web['web_stage_ms']} ms)",
        "  rounds (disabled / enabled ms): " + ", ".join(
            f"{r['disabled']['median_ms']:.2f} / {r['idle']['median_ms']:.2f}" for r in web["interleaved"]),
        f"web page with one viewer: hand-over in the loop {web['viewer_stage_ms']} ms per frame; each JPEG "
        f"(draw, pixelate, encode) {web['jpeg_ms']['median_ms']:.2f} ms in the viewer's thread, at most max_fps a second",
        f"  rounds with one viewer vs disabled: {web['viewer_added_ms']:+.3f} ms per frame ({web['viewer_pct']:+.2f} %, "
        f"median over {len(web['viewer_pairs'])} back-to-back pairs; the viewer got {sum(web['viewer_jpegs'])} JPEGs)",
        "  pairs (disabled / viewer ms): " + ", ".join(f"{a:.2f} / {b:.2f}" for a, b in web["viewer_pairs"]),
        "",
        f"daemon RSS: {mem['rss_mb']} MB now, {mem['rss_max_mb']} MB max sampled, peak (VmHWM) {mem['peak_hwm_mb']} MB",
        f"import device: {imp['import_device_s'] * 1000:.1f} ms; all daemon modules + {imp['interpreter']}: "
        f"{imp['import_daemon_s']:.3f} s; TensorFlow/Keras modules loaded: {imp['tensorflow_or_keras_modules'] or 'none'}",
        "",
        "targets:",
    ]
    for k, v in result["verdicts"].items():
        lines.append(f"  {k:<10} {v['value']:>8} <= {v['target']:<6} {'ok' if v['ok'] else 'MISSED'}")
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict:
    """Every measurement of the benchmark, as the JSON document it writes (without verdicts)."""
    model, what = find_classifier(args.model)
    model = Path(model).resolve()  # the memory run's daemon starts in another folder
    frames = two_face_frames()
    with tempfile.TemporaryDirectory(prefix="maskwatch-bench-") as tmp:
        work = Path(tmp)
        broker, port, broker_text = start_broker(work)
        try:
            log.info("imports in fresh interpreters")
            imports = bench_imports()
            log.info("detectors: the default vs BlazeFace short and full range")
            detectors = bench_detectors(frames[0], args.threads, runs=200)
            gc.collect()
            rounds = []
            for r in range(args.rounds):
                log.info("end to end, round %d of %d: %d frames through the daemon loop", r + 1, args.rounds,
                         args.frames)
                rounds.append(bench_end_to_end(frames, model, port, work / f"round{r}", n=args.frames, warmup=20,
                                               threads=args.threads))
                # The finished round's interpreters sit in reference cycles: without a collection
                # their thread pools stay alive and the next round shares the cores with them.
                gc.collect()
            e2e = best_round(rounds)
            web = bench_web(frames, model, port, work / "web", n=args.frames, warmup=20, threads=args.threads,
                            rounds=args.web_rounds)
            log.info("memory of a running daemon (%.0f s)", args.rss_seconds)
            memory = rss_of_running_daemon(frames, model, port, work, args.rss_seconds, args.threads)
        finally:
            if broker is not None:
                broker.stop()
    from device.classifier import MaskClassifier

    card = MaskClassifier(model, num_threads=1).card
    heavy_here = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    return {
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "classifier": {"path": str(model), "what": what, "name": card.name, "quantization": card.quantization,
                       "input_size": card.input_size, "backbone": card.backbone},
        "broker": broker_text, "threads": args.threads,
        "end_to_end": e2e, "web": web, "detectors": detectors, "memory": memory, "imports": imports,
        "tensorflow_in_benchmark_process": heavy_here,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="int8 classifier (default: trained default, else tiny test model)")
    parser.add_argument("--frames", type=int, default=300, help="frames measured end to end (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="end-to-end rounds; the best round's median is the verdict (default %(default)s)")
    parser.add_argument("--web-rounds", type=int, default=5,
                        help="rounds of the web page's cost, with and without a viewer (default %(default)s)")
    parser.add_argument("--rss-seconds", type=float, default=8.0, help="how long the memory run lasts")
    parser.add_argument("--target", type=parse_target, action="append", default=[], metavar="NAME=VALUE",
                        help="replace a target (repeatable): " + ", ".join(f"{k}={v:g}" for k, v in TARGETS.items()))
    parser.add_argument("--out", type=Path, default=OUT, help="JSON output (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    for noisy in ("maskwatch.daemon", "device.comms.mqtt", "device.camera.capture"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        result = measure(args)
    except (CannotRun, FileNotFoundError) as exc:
        print(f"bench-device: cannot run: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    result["verdicts"] = verdicts(result, {**TARGETS, **dict(args.target)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten {args.out}")
    status = exit_status(result["verdicts"])
    if status:
        missed = ", ".join(k for k, v in result["verdicts"].items() if not v["ok"])
        print(f"bench-device: target missed: {missed}", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
