"""Helpers for the daemon tests and the device benchmark: real faces on generated frames, a
TOML config writer, an MQTT subscriber that records everything, and an sd_notify listener.

The frames are real photos from ``../shared`` (an unmasked face from faces-classify) pasted
onto a plain 640x480 background at positions that move from frame to frame, so the detector,
classifier and tracker see a person walking through the picture.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME_W, FRAME_H = 640, 480
#: Unmasked faces of faces-classify that BlazeFace (short range) finds when pasted 160-220 px
#: wide; checked once by hand, so a test failing here points at the detector, not the photo.
FACE_FILES = ("0_0_aidai_0014.jpg", "0_0_anhu_0004.jpg", "0_0_caiguoqing_0067.jpg", "0_0_aidai_0136.jpg")


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def face_photos(shared: Path, n: int = 2) -> list[np.ndarray]:
    folder = shared / "datasets" / "faces-classify" / "without_mask"
    out = [read_rgb(folder / name) for name in FACE_FILES[:n] if (folder / name).exists()]
    if len(out) < n:
        raise FileNotFoundError(f"{folder}: expected the face photos {FACE_FILES[:n]}")
    return out


def background(seed: int = 0) -> np.ndarray:
    """A plain, slightly textured background (a wall): nothing a face detector would fire on."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(70, 120, FRAME_W, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(ramp, (FRAME_H, FRAME_W, 3)).copy()
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
        if not self.first <= i <= self.last:
            return None
        t = (i - self.first) / max(1, self.last - self.first)
        return int(round(self.x0 + t * (self.x1 - self.x0))), self.y


def render(faces: Sequence[np.ndarray], walks: Sequence[Walk], n_frames: int, seed: int = 0,
           bg: np.ndarray | None = None) -> list[np.ndarray]:
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
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        ok = cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        assert ok, folder
    return folder


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """A two-level TOML document (top-level keys, then [sections]); enough for the config."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for k, v in data.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def daemon_config(tmp: Path, *, frames: Path, model: Path, detector: Path, port: int,
                  device_id: str = "test-pi", **sections: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict for a run on an image folder; ``sections`` update/extend its sections."""
    cfg: dict[str, Any] = {
        "device_id": device_id,
        "device_name": "Test entrance",
        "state_dir": str(tmp / "state"),
        "state_interval_s": 0.5,
        "camera": {"source": "images", "path": str(frames), "fps": 20.0, "loop": False, "realtime": False},
        "detector": {"kind": "short", "model_path": str(detector), "min_face": 24, "num_threads": 1},
        "classifier": {"model_path": str(model), "num_threads": 1},
        "tracker": {"evidence_frames": 2, "timeout_s": 1.0, "cooldown_s": 5.0},
        "mqtt": {"host": "127.0.0.1", "port": port},
        "uncertain": {"enabled": True, "low": 0.0, "high": 1.0, "max_files": 5, "min_interval_s": 0.0},
    }
    for name, values in sections.items():
        if isinstance(values, Mapping) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **values}
        else:
            cfg[name] = values
    return cfg


def write_config(path: Path, cfg: Mapping[str, Any]) -> Path:
    path.write_text(to_toml(cfg), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def device_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "device.cli", *args]


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKWATCH_MQTT_") and k != "NOTIFY_SOCKET"}
    env.update(PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def start_daemon(config: Path, *args: str, log: Path, env: Mapping[str, str] | None = None,
                 prefix: Sequence[str] = ()) -> subprocess.Popen:
    """``maskwatch-device run`` in the background, output to ``log``; ``prefix`` wraps the command."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([*prefix, *device_cmd("run", "--config", str(config), *args)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env=dict(env or daemon_env()))


def run_device(*args: str, timeout: float = 60, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(device_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(env or daemon_env()))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --------------------------------------------------------------------------------------------
# MQTT subscriber
# --------------------------------------------------------------------------------------------


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """Subscribes to ``topics`` (default everything) with QoS 1 and keeps every message.

    ``clean_start=False`` with a fixed client id keeps the broker-side session, so messages
    published while this client is away (broker restart) are still delivered to it.
    """

    def __init__(self, host: str, port: int, topics: Sequence[str] = ("#",), client_id: str | None = None):
        import paho.mqtt.client as mqtt

        self.host, self.port = host, port
        self.topics = list(topics)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"rec-{os.getpid()}-{id(self)}",
                                  clean_session=client_id is None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a, **k: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1.0)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        for t in self.topics:
            client.subscribe(t, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))

    def start(self, timeout: float = 10.0) -> Recorder:
        self.client.connect(self.host, self.port, keepalive=5)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise AssertionError(f"recorder could not connect to {self.host}:{self.port}")
        time.sleep(0.2)  # let the SUBACKs arrive before anything is published
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, suffix: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def last(self, suffix: str) -> Message | None:
        msgs = self.on(suffix)
        return msgs[-1] if msgs else None

    def events(self) -> list[dict]:
        return [m.json() for m in self.on("/events")]

    def wait(self, predicate: Callable[[Recorder], Any], timeout: float, what: str) -> Any:
        return wait_until(lambda: predicate(self), timeout, what)

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def retained(host: str, port: int, topic: str, timeout: float = 3.0) -> bytes | None:
    """The retained message on ``topic`` as a fresh subscriber sees it (None when there is none)."""
    with Recorder(host, port, [topic]) as rec:
        try:
            msg = rec.wait(lambda r: r.on(topic), timeout, f"retained {topic}")[0]
        except AssertionError:
            return None
        return msg.payload if msg.retain else None


# --------------------------------------------------------------------------------------------
# sd_notify listener
# --------------------------------------------------------------------------------------------


class NotifyListener:
    """A datagram socket the daemon's NOTIFY_SOCKET points at; keeps every message in order."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(line for line in data.decode(errors="replace").splitlines() if line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# --------------------------------------------------------------------------------------------
# A tiny classifier for the benchmark when no trained model exists (TensorFlow: workstation only)
# --------------------------------------------------------------------------------------------


def build_tiny_classifier(path: Path, size: int = 64) -> Path:
    """The same random-weight int8 model as the ``tiny_classifier`` fixture, with its card."""
    import keras
    import tensorflow as tf

    from device.contract import BINARY_LABELS, ModelCard

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(BINARY_LABELS), activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.integers(0, 256, (1, size, size, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    ModelCard(name="tiny", backbone="tiny_cnn", input_size=size, quantization="int8").save(path.with_suffix(".json"))
    return path


if __name__ == "__main__":  # python -m tests.daemon_helpers tiny-model OUT.tflite
    if len(sys.argv) != 3 or sys.argv[1] != "tiny-model":
        raise SystemExit("usage: python -m tests.daemon_helpers tiny-model OUT.tflite")
    print(build_tiny_classifier(Path(sys.argv[2])))


def finish(proc: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    """The daemon's exit code; a daemon that does not exit fails the test with its log."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"daemon did not exit within {timeout}s:\n{log.read_text(errors='replace')}") from None
