"""Helpers for the daemon tests: a config for a run on a folder of frames, the daemon as a
process, an MQTT subscriber that records everything, and an sd_notify listener.

The frames come from :mod:`train.data.walks` (real public-domain faces walking across a plain
wall; the ``faces`` fixture of ``conftest.py`` holds the faces).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.toml_writer import write_toml

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


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
    """``cfg`` (from :func:`daemon_config`) as the TOML file the daemon reads."""
    return write_toml(path, cfg)


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


def finish(proc: subprocess.Popen, log: Path, timeout: float = 60) -> int:
    """The daemon's exit code; a daemon that does not exit fails the test with its log."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"daemon did not exit within {timeout}s:\n{log.read_text(errors='replace')}") from None
