"""``maskwatch-device run`` and ``check`` as real processes, against a real Mosquitto broker.

The camera is an image folder of generated frames: real unmasked faces (the public-domain
portraits of ``maskwatch data synth``) walking across a 640x480 background. The classifier is
the random-weight tiny model, so tests that need a deterministic label set
``classifier.threshold = 0.0`` (every person is then ``without_mask``); the others assert on
event counts, types and tracks only.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from device.contract import ModelCard, card_path, sha256_file
from tests.daemon_helpers import (
    NotifyListener,
    Recorder,
    daemon_config,
    daemon_env,
    finish,
    retained,
    run_device,
    start_daemon,
    wait_until,
    write_config,
)
from train.broker import Broker, find_mosquitto
from train.data.walks import Walk, render, two_people_walks, write_frames

pytestmark = pytest.mark.broker
DEVICE = "test-pi"
PREFIX = f"maskwatch/{DEVICE}"


@pytest.fixture(scope="module")
def frames(faces, tmp_path_factory) -> Path:
    """36 frames: A walks in alone, B joins, both leave (2 people)."""
    return write_frames(tmp_path_factory.mktemp("walk"), render(faces, two_people_walks(), 36))


@pytest.fixture(scope="module")
def gap_frames(faces, tmp_path_factory) -> Path:
    """42 frames: A crosses (0-11), nobody (12-29), B crosses (30-41)."""
    walks = [Walk(face=0, first=0, last=11, x0=40, x1=200), Walk(face=1, first=30, last=41, x0=420, x1=300)]
    return write_frames(tmp_path_factory.mktemp("gap"), render(faces, walks, 42))


@pytest.fixture(scope="module")
def schema():
    jsonschema = pytest.importorskip("jsonschema")
    from device.comms.events import load_schema

    return jsonschema.Draft202012Validator(load_schema())


def config(tmp_path: Path, frames: Path, model: Path, detector: Path, port: int, **sections) -> Path:
    cfg = daemon_config(tmp_path, frames=frames, model=model, detector=detector, port=port, device_id=DEVICE,
                        **sections)
    cfg.setdefault("mqtt", {}).update(reconnect_min_s=0.2, reconnect_max_s=1.0)
    return write_config(tmp_path / "config.toml", cfg)


def by_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


# --------------------------------------------------------------------------------------------
# A whole run
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_publishes_events_state_discovery_snapshots_and_notifies_systemd(
    tmp_path, broker, frames, tiny_classifier, detector_model, schema
):
    import cv2

    from device.detectors import make_detector

    cfg = config(tmp_path, frames, tiny_classifier, detector_model, broker.port,
                 classifier={"model_path": str(tiny_classifier), "num_threads": 1, "threshold": 0.0},
                 snapshot={"enabled": True, "blur_faces": True},
                 uncertain={"enabled": True, "low": 0.0, "high": 1.0, "max_files": 5, "min_interval_s": 0.0})
    notify = NotifyListener(tmp_path / "n.sock")
    log = tmp_path / "daemon.log"
    try:
        with Recorder(broker.host, broker.port) as rec:
            env = daemon_env(NOTIFY_SOCKET=str(tmp_path / "n.sock"), WATCHDOG_USEC="2000000")
            proc = start_daemon(cfg, "--exit-on-end", log=log, env=env)
            assert finish(proc, log) == 0, log.read_text()
            rec.wait(lambda r: r.last("/availability") and r.last("/availability").payload == b"stopped", 10,
                     "availability 'stopped'")
            events = rec.events()
            availability = [m.payload for m in rec.on(f"{PREFIX}/availability")]
            states = [m.json() for m in rec.on(f"{PREFIX}/state")]
            snapshots = [m.payload for m in rec.on(f"{PREFIX}/snapshot")]
    finally:
        notify.close()
    output = log.read_text()

    # Events: one new and one end per person, schema-valid, labelled deterministically.
    for e in events:
        errors = [err.message for err in schema.iter_errors(e)]
        assert not errors, (e, errors)
    new, end = by_type(events, "new"), by_type(events, "end")
    assert len(new) == 2 and len(end) == 2 and len(events) == 4, output
    assert {e["track_id"] for e in new} == {e["track_id"] for e in end} and len({e["track_id"] for e in new}) == 2
    assert len({e["event_id"] for e in events}) == 4
    assert all(e["label"] == "without_mask" and e["device_id"] == DEVICE for e in events)
    assert all(e["model"]["sha256"] == sha256_file(tiny_classifier) and e["model"]["threshold"] == 0.0
               for e in events)

    # Availability: online while running, stopped after the clean exit (also retained).
    assert availability[0] == b"online" and availability[-1] == b"stopped"
    assert retained(broker.host, broker.port, f"{PREFIX}/availability") == b"stopped"

    # State: counters, presence, per-stage latency, camera and monitor status.
    last = states[-1]
    assert last["without_mask_total"] == 2 and last["without_mask_today"] == 2 and last["with_mask_total"] == 0
    assert last["no_mask_present"] is False and last["frames"] == 36
    assert last["camera"]["status"] == "ended" and last["camera"]["frames"] == 36
    assert last["monitor"]["errors"] == 0 and last["monitor"]["uncertain_saved"] >= 5
    assert any(all(s["latency_ms"].get(k) is not None for k in ("capture", "detect", "classify", "track", "publish"))
               for s in states)
    assert any(s["no_mask_present"] for s in states) or len(states) < 3  # seen while people were in view

    # Home Assistant discovery: retained configs whose templates read keys the state has.
    with Recorder(broker.host, broker.port, ["homeassistant/#"]) as disco:
        configs = disco.wait(lambda r: len(r.messages) >= 6 and r.messages, 5, "discovery configs")
    assert all(m.retain for m in configs)
    keys = set()
    for m in configs:
        doc = m.json()
        assert doc["availability_topic"] == f"{PREFIX}/availability"
        keys |= set(re.findall(r"value_json\.(\w+)", doc.get("value_template", ""))) if doc.get(
            "state_topic") == f"{PREFIX}/state" else set()
    assert {"no_mask_present", "with_mask_total", "without_mask_today", "fps"} <= keys <= set(last)

    # Snapshots of the two "new" no-mask events, faces pixelated beyond detection.
    assert len(snapshots) == 2
    det = make_detector("short", detector_model)
    for data in snapshots:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3)
        assert det.detect(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)) == []

    # Uncertain crops: bounded to max_files, each with its sidecar.
    crops = sorted((tmp_path / "state" / "uncertain" / "unsorted").glob("*.jpg"))
    assert len(crops) == 5 and all(c.with_suffix(".json").exists() for c in crops)

    # systemd: READY once the first frame is through, then the watchdog, then STOPPING.
    msgs = notify.messages
    assert "READY=1" in msgs and "WATCHDOG=1" in msgs and "STOPPING=1" in msgs, msgs
    assert msgs.index("READY=1") < msgs.index("WATCHDOG=1") < msgs.index("STOPPING=1")
    assert any(m.startswith("STATUS=") and "fps" in m for m in msgs)


# --------------------------------------------------------------------------------------------
# Stopping: SIGTERM is clean, SIGKILL leaves the last will
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_sigkill_leaves_offline(tmp_path, broker, frames, tiny_classifier, detector_model):
    cfg = config(tmp_path, frames, tiny_classifier, detector_model, broker.port,
                 camera={"loop": True, "realtime": True, "fps": 15.0})  # a camera that never ends
    log = tmp_path / "daemon.log"
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = start_daemon(cfg, log=log)
        rec.wait(lambda r: by_type(r.events(), "new"), 30, "a 'new' event")
        assert rec.on("/availability")[-1].payload == b"online"
        proc.send_signal(signal.SIGTERM)
        assert finish(proc, log) == 0, log.read_text()
        rec.wait(lambda r: r.last("/availability").payload == b"stopped", 10, "availability 'stopped'")
        events = rec.events()
        # Open tracks were ended on the way out: every person has an end.
        assert sorted(e["track_id"] for e in by_type(events, "end")) == sorted(
            e["track_id"] for e in by_type(events, "new"))
        assert "SIGTERM: stopping" in log.read_text()

        n_avail = len(rec.on("/availability"))
        proc = start_daemon(cfg, log=tmp_path / "daemon2.log")
        rec.wait(lambda r: len(r.on("/availability")) > n_avail and r.last("/availability").payload == b"online",
                 30, "availability 'online' again")
        proc.kill()
        proc.wait(10)
        rec.wait(lambda r: r.last("/availability").payload == b"offline", 10, "the last will 'offline'")
    assert retained(broker.host, broker.port, f"{PREFIX}/availability") == b"offline"


# --------------------------------------------------------------------------------------------
# Broker restart mid-run
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_restart_mid_run_loses_no_event(tmp_path, gap_frames, tiny_classifier, detector_model, schema):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    store = tmp_path / "broker-db"
    store.mkdir()
    # Persistence keeps the subscriber's session (and the messages queued for it) over the restart.
    broker = Broker(tmp_path / "broker", extra_conf=f"persistence true\npersistence_location {store}/\n").start()
    log = tmp_path / "daemon.log"
    try:
        cfg = config(tmp_path, gap_frames, tiny_classifier, detector_model, broker.port,
                     camera={"realtime": True, "fps": 10.0}, tracker={"evidence_frames": 2, "timeout_s": 0.5})
        rec = Recorder(broker.host, broker.port, [f"{PREFIX}/events"], client_id="restart-recorder").start()
        try:
            proc = start_daemon(cfg, "--exit-on-end", log=log)
            rec.wait(lambda r: by_type(r.events(), "new"), 30, "the first person's 'new'")
            broker.stop()
            down_at = time.time()
            # The first person leaves while the broker is away: their 'end' goes to the outbox.
            wait_until(lambda: "event end track" in log.read_text(), 20, "an event made while the broker is down")
            broker.start()
            assert finish(proc, log) == 0, log.read_text()
            rec.wait(lambda r: len(r.events()) >= 4, 20, "all four events after the restart")
            events = rec.events()
        finally:
            rec.stop()
    finally:
        broker.stop()
    output = log.read_text()
    assert [e["type"] for e in events].count("new") == 2 and [e["type"] for e in events].count("end") == 2, output
    assert len({e["event_id"] for e in events}) == len(events) == 4  # none lost, none doubled
    assert any(e["frame_time"] >= down_at for e in events if e["type"] == "end")
    for e in events:
        assert not list(schema.iter_errors(e))
    order = [(e["type"], e["track_id"]) for e in events]
    first = order[0][1]
    assert order.index(("new", first)) < order.index(("end", first))  # order kept across the outage
    assert output.count("MQTT: connected") >= 2  # the first connection and the one after the restart


# --------------------------------------------------------------------------------------------
# Start-up failures: non-zero exit with the reason, before the camera or the broker is touched
# --------------------------------------------------------------------------------------------


def _corrupt_model(tmp: Path, model: Path) -> Path:
    p = tmp / "model.tflite"
    p.write_bytes(model.read_bytes()[:300])
    shutil.copy(card_path(model), card_path(p))
    return p


def _shape_mismatch(tmp: Path, model: Path) -> Path:
    p = tmp / "model.tflite"
    shutil.copy(model, p)
    ModelCard(name="tiny", input_size=96, quantization="int8").save(card_path(p))
    return p


def _missing_card(tmp: Path, model: Path) -> Path:
    p = tmp / "model.tflite"
    shutil.copy(model, p)
    return p


def _foreign_labels(tmp: Path, model: Path) -> Path:
    p = tmp / "model.tflite"
    shutil.copy(model, p)
    ModelCard(name="tiny", input_size=64, labels=["masked", "face"], alert_label="face",
              quantization="int8").save(card_path(p))
    return p


STARTUP_FAILURES = {
    "corrupt model": (_corrupt_model, None, "model.tflite"),
    "shape mismatch": (_shape_mismatch, None, "does not match its card"),
    "missing card": (_missing_card, None, "model.json is missing"),
    "card labels": (_foreign_labels, None, "labels ['masked', 'face'] are not among"),
    "detector checksum": (None, "detector", "does not match the pinned"),
    "config field": (None, "config", "camera.fps"),
}


@pytest.mark.parametrize("case", list(STARTUP_FAILURES))
def test_startup_failures_exit_nonzero_before_camera_and_broker(case, tmp_path, frames, tiny_classifier,
                                                                 detector_model):
    make_model, other, message = STARTUP_FAILURES[case]
    model = make_model(tmp_path, tiny_classifier) if make_model else tiny_classifier
    detector = detector_model
    extra = {}
    if other == "detector":
        detector = tmp_path / "face_detection_short_range.tflite"
        data = bytearray(detector_model.read_bytes())
        data[len(data) // 2] ^= 0xFF  # still a TFLite file, not the pinned one
        detector.write_bytes(bytes(data))
    if other == "config":
        extra["camera"] = {"fps": -1.0}
    cfg = config(tmp_path, frames, model, detector, port=1, **extra)  # nothing listens on port 1
    r = run_device("run", "--config", str(cfg), "--exit-on-end", timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert message in r.stderr, out
    assert r.stderr.count("maskwatch-device: error:") == 1 and "Traceback" not in out  # one clear line
    assert "images:" not in out and "MQTT" not in out  # neither the camera nor the broker was touched
    assert not (tmp_path / "state" / "outbox").exists()


# --------------------------------------------------------------------------------------------
# Read-only state dir
# --------------------------------------------------------------------------------------------


def read_only_wrapper(state: Path) -> list[str]:
    """Run the daemon with ``state`` read-only: a private read-only bind mount for root (root
    ignores file modes), plain file modes for anyone else."""
    import os

    if os.geteuid() != 0:
        state.chmod(0o555)
        return []
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root without mount namespaces: cannot make a read-only state dir")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(state)]


@pytest.mark.slow
def test_read_only_state_dir_keeps_running_and_is_reported(tmp_path, broker, frames, tiny_classifier,
                                                            detector_model):
    state = tmp_path / "state"
    state.mkdir()
    cfg = config(tmp_path, frames, tiny_classifier, detector_model, broker.port)
    wrapper = read_only_wrapper(state)
    log = tmp_path / "daemon.log"
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = start_daemon(cfg, "--exit-on-end", log=log, prefix=wrapper)
        try:
            assert finish(proc, log) == 0, log.read_text()
        finally:
            state.chmod(0o755)
        rec.wait(lambda r: r.last("/availability").payload == b"stopped", 10, "availability 'stopped'")
        events = rec.events()
        last = rec.last("/state").json()
    assert len(by_type(events, "new")) == 2 and len(by_type(events, "end")) == 2, log.read_text()
    mon = last["monitor"]
    reason = "Read-only file system" if wrapper else "Permission denied"
    assert mon["errors"] >= 1 and reason in mon["state_dir_error"] and str(state) in mon["state_dir_error"], mon
    assert mon["uncertain_saved"] == 0 and mon["last_error"]
    assert list(state.iterdir()) == []  # nothing was written
    assert "the event outbox is in" in log.read_text()


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------


def test_check_summarises_without_publishing_or_printing_the_password(tmp_path, broker, frames, tiny_classifier,
                                                                      detector_model):
    cfg = config(tmp_path, frames, tiny_classifier, detector_model, broker.port,
                 mqtt={"host": "127.0.0.1", "port": broker.port, "username": "door", "password": "s3cret-pw"})
    with Recorder(broker.host, broker.port) as rec:
        r = run_device("check", "--config", str(cfg))
        time.sleep(0.3)
        assert rec.messages == []  # check never publishes
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for text in ("name=tiny", "quantization=int8", "with_mask, without_mask (alert: without_mask)",
                 "0.5 (from model card)", "short:", "sha256 verified", "frame 640x480", f"port={broker.port}",
                 "username=door", "crops: the detector's box moved by +0.011, +0.067", "check passed"):
        assert text in r.stdout, (text, r.stdout)
    assert "s3cret-pw" not in out

    r = run_device("check", "--config", str(cfg), "--no-camera")
    assert r.returncode == 0 and "skipped (--no-camera)" in r.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = config(tmp_path, empty, tiny_classifier, detector_model, broker.port)
    r = run_device("check", "--config", str(cfg), "--camera-timeout", "2")
    assert r.returncode == 2 and "no frame within 2 s" in r.stderr and "no image files" in r.stderr, r.stderr


def test_run_rejects_a_bad_max_frames(tmp_path, frames, tiny_classifier, detector_model):
    cfg = config(tmp_path, frames, tiny_classifier, detector_model, port=1)
    r = run_device("run", "--config", str(cfg), "--max-frames", "0")
    assert r.returncode == 2 and "--max-frames" in r.stderr


def test_max_frames_stops_cleanly(tmp_path, broker, frames, tiny_classifier, detector_model):
    cfg = config(tmp_path, frames, tiny_classifier, detector_model, broker.port, camera={"loop": True})
    r = run_device("run", "--config", str(cfg), "--max-frames", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    state = json.loads(retained(broker.host, broker.port, f"{PREFIX}/state"))
    assert state["frames"] == 5


# --------------------------------------------------------------------------------------------
# Event sinks: a second sink gets exactly what MQTT gets
# --------------------------------------------------------------------------------------------


class MemorySink:
    """An event sink that keeps everything in lists: the smallest possible second sink."""

    name = "memory"

    def __init__(self):
        self.events: list = []
        self.states: list[dict] = []
        self.snapshots: list[bytes] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self, clean: bool = True, flush_timeout: float = 5.0) -> None:
        self.stopped = True

    def publish_event(self, event) -> None:
        self.events.append(event)

    def publish_state(self, state: dict) -> None:
        self.states.append(json.loads(json.dumps(state, default=str)))

    def publish_snapshot(self, jpeg: bytes) -> None:
        self.snapshots.append(bytes(jpeg))

    @property
    def status(self) -> dict:
        return {"events": len(self.events)}


@pytest.mark.slow
def test_a_second_sink_receives_the_same_events_state_and_snapshots_as_mqtt(
    tmp_path, broker, frames, tiny_classifier, detector_model
):
    from device.comms.sink import EventSink
    from device.config import config_from_dict
    from device.daemon import Daemon
    from device.wiring import load_components, make_sinks

    cfg = config_from_dict(daemon_config(
        tmp_path, frames=frames, model=tiny_classifier, detector=detector_model, port=broker.port,
        device_id=DEVICE, classifier={"model_path": str(tiny_classifier), "num_threads": 1, "threshold": 0.0},
        snapshot={"enabled": True, "blur_faces": True}), env={})
    parts = load_components(cfg)
    memory = MemorySink()
    assert isinstance(memory, EventSink)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        daemon = Daemon(cfg, parts, exit_on_end=True,
                        sinks=lambda home: [*make_sinks(cfg, parts, home), memory])
        try:
            assert daemon.run() == 0
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        rec.wait(lambda r: r.last("/availability") and r.last("/availability").payload == b"stopped", 10,
                 "availability 'stopped'")
        mqtt_events = rec.events()
        mqtt_state = rec.last("/state").json()
        mqtt_snapshots = [m.payload for m in rec.on("/snapshot")]

    assert memory.started and memory.stopped
    assert [e.to_dict() for e in memory.events] == mqtt_events  # the very same events, ids included
    assert [e["type"] for e in mqtt_events].count("new") == 2 and len(mqtt_events) == 4
    assert memory.snapshots == mqtt_snapshots and len(mqtt_snapshots) == 2
    # The state goes to both; each sink's status is in it under the sink's name.
    assert memory.states[-1] == mqtt_state
    assert mqtt_state["memory"] == {"events": 4} and {"connected", "queued", "delivered"} <= set(mqtt_state["mqtt"])


# --------------------------------------------------------------------------------------------
# Huge frames: a 12 MP image source stays within the unit's memory limit
# --------------------------------------------------------------------------------------------


def unit_memory_high_bytes() -> int:
    """``MemoryHigh=`` of the shipped systemd unit, in bytes."""
    from tests.daemon_helpers import ROOT

    text = (ROOT / "systemd" / "maskwatch.service").read_text()
    value, unit = re.search(r"^MemoryHigh=(\d+)([KMG]?)\s*$", text, re.M).groups()
    return int(value) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


@pytest.mark.slow
def test_4000x3000_frames_stay_under_memory_high_with_boxes_in_frame_pixels(
    tmp_path, broker, frames, tiny_classifier, detector_model
):
    import cv2

    big = tmp_path / "big"
    big.mkdir()
    for i, f in enumerate(sorted(frames.glob("*.png"))[::3]):  # 12 frames of the walk, 6.25 x larger
        img = cv2.resize(cv2.imread(str(f)), (4000, 3000), interpolation=cv2.INTER_LINEAR)
        assert cv2.imwrite(str(big / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    cfg = config(tmp_path, big, tiny_classifier, detector_model, broker.port,
                 camera={"loop": True, "width": 640, "height": 480},
                 classifier={"model_path": str(tiny_classifier), "num_threads": 1, "threshold": 0.0},
                 snapshot={"enabled": True, "blur_faces": True})
    log = tmp_path / "daemon.log"
    hwm_kb = 0
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = start_daemon(cfg, "--max-frames", "36", log=log)
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                break
            found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
            hwm_kb = max(hwm_kb, int(found.group(1)) if found else 0)
            time.sleep(0.02)
        assert finish(proc, log) == 0, log.read_text()
        rec.wait(lambda r: r.last("/availability") and r.last("/availability").payload == b"stopped", 10,
                 "availability 'stopped'")
        events = rec.events()
        snapshots = [m.payload for m in rec.on("/snapshot")]
        state = rec.last("/state").json()
    limit = unit_memory_high_bytes()
    print(f"\n4000x3000 frames: peak RSS {hwm_kb / 1024:.0f} MB, MemoryHigh {limit >> 20} MB")
    assert 0 < hwm_kb * 1024 < limit, (hwm_kb, limit)
    assert state["frames"] == 36 and state["monitor"]["frame_errors"] == 0
    # The people were found (detected at 640x480) and reported in the frame's own pixels.
    assert by_type(events, "new"), log.read_text()
    assert max(e["box"][2] for e in events) > 640 and all(e["box"][2] <= 4000 for e in events)
    # Snapshots are made from the picture the detector saw, not a 12 MP copy.
    img = cv2.imdecode(np.frombuffer(snapshots[0], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 640, 3)
