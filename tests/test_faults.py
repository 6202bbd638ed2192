"""Faults around the real daemon process: broker killed, unreachable, refusing us; the daemon
killed with events queued; a camera that is missing, stalls or ends.

Everything is end to end: ``maskwatch-device run`` as a subprocess, a real Mosquitto, real
public-domain faces crossing generated frames (see train/data/walks.py). People always
walk left to right, so each one enters far from where the previous one left and the tracker
counts them exactly; the classifier threshold is 0, so every person is ``without_mask`` and
no label flips (``update`` events) muddy the counts.

When a test needs the subscriber to miss nothing while the broker is away, the broker keeps
its sessions on disk (``persistence``) and the subscriber has a fixed client id without a
clean session, as a Home Assistant broker would: events the daemon sends before the
subscriber is back are queued for it by the broker.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from device.comms.outbox import Outbox
from tests.daemon_helpers import (
    NotifyListener,
    Recorder,
    daemon_config,
    daemon_env,
    finish,
    start_daemon,
    wait_until,
    write_config,
)
from tests.test_mqtt import _make_pki
from train.broker import Broker, find_mosquitto, free_port
from train.data.walks import Walk, background, render, write_frames

pytestmark = pytest.mark.broker
DEVICE = "fault-pi"
PREFIX = f"maskwatch/{DEVICE}"
EVENT_LINE = re.compile(r"event (new|update|end) track (\d+)")
#: systemd's WatchdogSec= as the daemon sees it: WATCHDOG=1 is then due every 0.5 s while frames flow.
WATCHDOG_USEC = "1000000"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def need_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")


def crossing_frames(
    faces: list[np.ndarray], folder: Path, people: int, visible: int = 14, gap: int = 8, tail: int = 10
) -> Path:
    """``people`` persons, one after the other, each crossing left to right in ``visible`` frames."""
    step = visible + gap
    walks = [
        Walk(face=i % 2, first=i * step, last=i * step + visible - 1, x0=10, x1=400, y=(120, 160)[i % 2])
        for i in range(people)
    ]
    return write_frames(folder, render(faces, walks, people * step + tail))


def empty_frames(folder: Path, n: int = 20) -> Path:
    return write_frames(folder, [background(0)] * n)


def make_config(
    tmp: Path,
    frames: Path,
    model: Path,
    detector: Path,
    port: int,
    *,
    name: str = "config.toml",
    device_id: str = DEVICE,
    **sections,
) -> Path:
    """A config for a camera at 20 fps (realtime) that reconnects to the broker quickly."""
    base = {
        "camera": {"realtime": True, "fps": 20.0, "reopen_min_s": 0.2, "reopen_max_s": 1.0},
        "classifier": {"model_path": str(model), "num_threads": 1, "threshold": 0.0},
        "tracker": {"evidence_frames": 2, "timeout_s": 0.5, "cooldown_s": 5.0},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "uncertain": {"enabled": False},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    cfg = daemon_config(
        tmp, frames=frames, model=model, detector=detector, port=port, device_id=device_id, **base
    )
    return write_config(tmp / name, cfg)


def persistent_broker(work: Path, port: int | None = None) -> Broker:
    """A broker that keeps sessions (and the messages queued for them) on disk."""
    store = work / "db"
    store.mkdir(parents=True, exist_ok=True)
    return Broker(work, port=port, extra_conf=f"persistence true\npersistence_location {store}/\n")


def save_sessions(broker: Broker) -> None:
    """Make mosquitto write its database now (SIGUSR1), so a SIGKILL later loses no session."""
    db = broker.workdir / "db" / "mosquitto.db"
    before = db.stat().st_mtime_ns if db.exists() else None
    time.sleep(0.02)  # a different mtime even on coarse clocks
    broker.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: db.exists() and db.stat().st_mtime_ns != before, 10, "mosquitto to save its database")


def stop(proc: subprocess.Popen, log: Path) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return finish(proc, log)


def unique(events: list[dict]) -> list[dict]:
    """Events in order of first arrival; a redelivery must be the very same event."""
    seen: dict[str, dict] = {}
    for e in events:
        assert seen.setdefault(e["event_id"], e) == e, f"two different events share the id {e['event_id']}"
    return list(seen.values())


def logged_events(text: str) -> list[tuple[str, int]]:
    """(type, track id) of every event the daemon says it raised, in order."""
    return [(kind, int(track)) for kind, track in EVENT_LINE.findall(text)]


def wait_ends_logged(log: Path, n: int, timeout: float, what: str) -> None:
    """Until the daemon's log shows ``n`` people's ``end`` events (raised, whether sent or queued)."""
    wait_until(lambda: len([t for t in logged_events(log.read_text()) if t[0] == "end"]) >= n, timeout, what)


def broker_back_then_all_events(broker: Broker, proc: subprocess.Popen, log: Path, rec: Recorder,
                                people: int) -> list[dict]:
    """Start the broker again, let the daemon finish, and return every event the recorder got."""
    broker.start()
    assert finish(proc, log) == 0, log.read_text()
    rec.wait(lambda r: len([e for e in unique(r.events()) if e["type"] == "end"]) >= people, 20,
             f"all {people} 'end' events")
    time.sleep(0.3)  # a stray extra event would show up now
    return rec.events()


def assert_delivered_in_order(received: list[dict], log_text: str, people: int) -> list[dict]:
    """Exactly one new and one end per person, in the order the daemon raised them."""
    events = unique(received)
    assert Counter(e["type"] for e in events) == {"new": people, "end": people}, [
        (e["type"], e["track_id"]) for e in events
    ]
    assert [(e["type"], e["track_id"]) for e in events] == logged_events(log_text)
    times = [e["frame_time"] for e in events]
    assert times == sorted(times)  # raised in frame order, delivered in that order
    for e in events:
        if e["type"] == "end":
            assert ("new", e["track_id"]) in [(x["type"], x["track_id"]) for x in events[: events.index(e)]]
    return events


def assert_outbox_empty(state_dir: Path) -> None:
    """After a clean exit every event was acknowledged: the next start would send nothing."""
    with Outbox(state_dir / "outbox") as outbox:
        assert outbox.pending == 0, f"{outbox.pending} events still in {outbox.log_path}"


def states(rec: Recorder, live_only: bool = False, device: str = DEVICE) -> list[dict]:
    """The state messages of ``device`` in arrival order (``live_only``: not the retained copy
    a (re)subscribing client is handed)."""
    return [m.json() for m in rec.on(f"maskwatch/{device}/state") if not (live_only and m.retain)]


def wait_state(rec: Recorder, predicate, timeout: float, what: str, device: str = DEVICE) -> dict:
    """The latest state of ``device`` for which ``predicate`` holds, once there is one."""
    return rec.wait(
        lambda r: next((s for s in reversed(states(r, device=device)) if predicate(s)), None), timeout, what
    )


def log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def log_time(line: str) -> float:
    """The wall time of one of the daemon's log lines (``%(asctime)s``, local time)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def count(listener: NotifyListener, message: str) -> int:
    return sum(1 for m in list(listener.messages) if m == message)


@pytest.fixture
def launch():
    """``start_daemon`` that also kills whatever a failing test leaves running."""
    procs: list[subprocess.Popen] = []

    def go(config: Path, *args: str, log: Path, env=None) -> subprocess.Popen:
        proc = start_daemon(config, *args, log=log, env=env)
        procs.append(proc)
        return proc

    yield go
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_idles(proc: subprocess.Popen, seconds: float = 2.0) -> float:
    """A daemon with nothing to do sleeps: it uses well under a quarter of a core (a busy loop
    takes a whole one, or at least its share of a busy machine's)."""
    before = cpu_seconds(proc.pid)
    time.sleep(seconds)
    used = cpu_seconds(proc.pid) - before
    assert used < 0.25 * seconds, f"the idle daemon used {used:.2f} s of CPU in {seconds} s"
    return used


@pytest.fixture(scope="module")
def schema():
    jsonschema = pytest.importorskip("jsonschema")
    from device.comms.events import load_schema

    return jsonschema.Draft202012Validator(load_schema())


# --------------------------------------------------------------------------------------------
# 1. The broker is SIGKILLed mid-run and comes back
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_sigkilled_mid_run_every_event_arrives_afterwards_in_order(
    tmp_path, launch, faces, tiny_classifier, detector_model, schema
):
    need_mosquitto()
    people = 8  # ~9 s of camera at 20 fps; three of them come and go while the broker is dead
    frames = crossing_frames(faces, tmp_path / "frames", people)
    broker = persistent_broker(tmp_path / "broker").start()
    log = tmp_path / "daemon.log"
    try:
        rec = Recorder(
            broker.host, broker.port, [f"{PREFIX}/events", f"{PREFIX}/state"], client_id="faults-broker-kill"
        ).start()
        try:
            save_sessions(broker)  # the subscriber's session outlives the SIGKILL
            cfg = make_config(tmp_path, frames, tiny_classifier, detector_model, broker.port)
            proc = launch(cfg, "--exit-on-end", log=log)
            rec.wait(lambda r: [e for e in r.events() if e["type"] == "end"], 30, "the first person's 'end'")
            frames_before = states(rec, live_only=True)[-1]["frames"]
            n_states = len(rec.on(f"{PREFIX}/state"))
            broker.kill()
            down_at = time.time()
            wait_until(lambda: "MQTT: connection to" in log.read_text(), 10, "the daemon to notice")
            # People come and go while nothing listens; the daemon must carry on regardless.
            wait_ends_logged(log, 3, 20, "two more people to come and go while the broker is dead")
            assert proc.poll() is None
            up_at = time.time()
            received = broker_back_then_all_events(broker, proc, log, rec, people)
            after = [m.json() for m in rec.on(f"{PREFIX}/state")[n_states:] if not m.retain]
        finally:
            rec.stop()
    finally:
        broker.stop()
    output = log.read_text()
    events = assert_delivered_in_order(received, output, people)
    for e in events:
        assert not list(schema.iter_errors(e)), e
    during = [e for e in events if down_at < e["frame_time"] < up_at]
    assert {"new", "end"} <= {e["type"] for e in during}, (down_at, up_at, [e["frame_time"] for e in events])
    # Frames kept flowing: the first state after the restart counts more than the last before it.
    assert after and after[0]["frames"] > frames_before, (frames_before, [s["frames"] for s in after])
    assert [s["frames"] for s in after] == sorted(s["frames"] for s in after)
    assert after[-1]["mqtt"]["reconnects"] >= 1
    assert_outbox_empty(tmp_path / "state")
    assert output.count("MQTT: connected") >= 2 and "Traceback" not in output
    print(
        f"\nbroker kill: down {up_at - down_at:.1f} s, {len(during)} events raised meanwhile, "
        f"{len(received)} received ({len(received) - len(events)} duplicates), "
        f"frames {frames_before} -> {after[0]['frames']} over the outage"
    )


# --------------------------------------------------------------------------------------------
# 2. Nothing listens on the broker's port at start
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_unreachable_at_start_retries_with_backoff_then_delivers_the_queue(
    tmp_path, launch, faces, tiny_classifier, detector_model
):
    need_mosquitto()
    people = 4
    frames = crossing_frames(faces, tmp_path / "frames", people)
    broker = persistent_broker(tmp_path / "broker").start()
    rec = Recorder(
        broker.host, broker.port, [f"{PREFIX}/events", f"{PREFIX}/state"], client_id="faults-unreachable"
    ).start()
    log = tmp_path / "daemon.log"
    try:
        broker.stop()  # saves the subscriber's session; from now on nothing listens on the port
        cfg = make_config(tmp_path, frames, tiny_classifier, detector_model, broker.port)
        proc = launch(cfg, "--exit-on-end", log=log)
        first_fail = wait_until(
            lambda: log_lines(log.read_text(), "MQTT: cannot connect"),
            30,
            "the first failed connection attempt",
        )[0]
        wait_ends_logged(log, 2, 30, "two people to come and go while the broker is unreachable")
        wait_until(lambda: time.time() > log_time(first_fail) + 3.0, 5, "3 s of failed attempts")
        assert proc.poll() is None
        up_at = time.time()
        received = broker_back_then_all_events(broker, proc, log, rec, people)
        last = states(rec, live_only=True)[-1]
    finally:
        rec.stop()
        broker.stop()
    output = log.read_text()
    events = assert_delivered_in_order(received, output, people)
    queued = [e for e in events if e["frame_time"] < up_at]
    assert len(queued) >= 4, "events raised before the broker existed were delivered"

    # One clear line for the reason, however many attempts; no traceback.
    fails = log_lines(output, "MQTT: cannot connect")
    assert len(fails) == 1, fails
    assert f"127.0.0.1:{broker.port}: connection refused (is the broker running" in fails[0]
    assert "Traceback" not in output
    # Retried with backoff: paho's delay doubles from reconnect_min_s (0.2 s) up to 1 s, so the
    # attempts are on average >= 0.4 s apart over these >= 3 s; without backoff they would be
    # 0.2 s apart. (A slow machine only makes fewer attempts.)
    connected = log_lines(output, "MQTT: connected to")[0]
    attempts = int(re.search(r"after (\d+) failed attempts", connected).group(1))
    window = log_time(connected) - log_time(fails[0])
    assert 3 <= attempts <= 1 + window / 0.4, (attempts, window)
    assert last["mqtt"]["connect_failures"] == attempts
    assert_outbox_empty(tmp_path / "state")
    print(
        f"\nunreachable: {attempts} failed attempts in {window:.1f} s before the broker came up, "
        f"{len(queued)} queued events delivered"
    )


# --------------------------------------------------------------------------------------------
# 3. The broker refuses us: a wrong password, a certificate from an unknown CA
# --------------------------------------------------------------------------------------------


def _secret_file(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.slow
def test_wrong_password_keeps_running_says_why_once_and_never_logs_the_password(
    tmp_path, launch, faces, tiny_classifier, detector_model
):
    need_mosquitto()
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed (package mosquitto)")
    good_pw, bad_pw = "Corr3ct-Horse-Battery", "Wr0ng-Stapl3-xyz"
    pwfile = tmp_path / "passwords"
    subprocess.run([tool, "-c", "-b", str(pwfile), "door", good_pw], check=True, capture_output=True)
    broker = Broker(
        tmp_path / "broker", extra_conf=f"allow_anonymous false\npassword_file {pwfile}\n"
    ).start()
    frames = crossing_frames(faces, tmp_path / "frames", 2)
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    rec = Recorder(broker.host, broker.port, ["maskwatch/#"])
    rec.client.username_pw_set("door", good_pw)
    rec.start()
    try:
        for kind, pw in (("good", good_pw), ("bad", bad_pw)):
            d = tmp_path / kind
            d.mkdir()
            cfg = make_config(
                d,
                frames,
                tiny_classifier,
                detector_model,
                broker.port,
                device_id=f"{kind}-pi",
                camera={"loop": True},
                mqtt={"username": "door", "password_file": str(_secret_file(d / "mqtt.secret", pw))},
            )
            procs[kind] = (launch(cfg, log=d / "daemon.log"), d / "daemon.log")
        bad, bad_log = procs["bad"]
        rec.wait(
            lambda r: [e for e in r.events() if e["device_id"] == "good-pi" and e["type"] == "new"],
            30,
            "an event from the daemon with the right password",
        )
        first = wait_until(
            lambda: log_lines(bad_log.read_text(), "MQTT: cannot connect"), 30, "the refused connection"
        )[0]
        wait_until(lambda: time.time() > log_time(first) + 2.5, 5, "more refused attempts")
        wait_until(lambda: logged_events(bad_log.read_text()), 10, "the refused daemon to raise an event")
        assert bad.poll() is None, bad_log.read_text()  # still running, camera and all
        codes = {kind: stop(p, lg) for kind, (p, lg) in procs.items()}
        assert codes == {"good": 0, "bad": 0}, codes
    finally:
        rec.stop()
        broker.stop()
    out = bad_log.read_text()
    fails = log_lines(out, "MQTT: cannot connect")
    assert len(fails) == 1, fails  # the same reason is not repeated at every attempt
    assert "broker refused the connection" in fails[0] and "(check username/password)" in fails[0]
    assert "Not authorized" in fails[0] or "Bad user name or password" in fails[0]
    assert "Traceback" not in out and len(out.splitlines()) < 40, out
    assert "events not yet acknowledged stay in" in out  # what it raised is kept for later
    assert not [m for m in rec.messages if m.topic.startswith("maskwatch/bad-pi/")]
    good_out = procs["good"][1].read_text()
    for text in (out, good_out):
        assert bad_pw not in text and good_pw not in text
    assert "MQTT: connected" in good_out and "Traceback" not in good_out


@pytest.mark.slow
def test_tls_right_ca_delivers_and_wrong_ca_keeps_running_with_the_reason(
    tmp_path, launch, faces, tiny_classifier, detector_model
):
    need_mosquitto()
    pki = tmp_path / "pki"
    _make_pki(pki)  # two CAs; the broker's certificate (for 127.0.0.1) is signed by "ca"
    plain = free_port()  # a second, plain listener for the test's own subscriber
    broker = Broker(
        tmp_path / "broker",
        extra_conf=(
            f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
            f"listener {plain} 127.0.0.1\n"
        ),
    ).start()
    frames = crossing_frames(faces, tmp_path / "frames", 2)
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    rec = Recorder(broker.host, plain, ["maskwatch/#"]).start()
    try:
        for kind, ca in (("good", "ca.crt"), ("bad", "other_ca.crt")):
            d = tmp_path / kind
            d.mkdir()
            cfg = make_config(
                d,
                frames,
                tiny_classifier,
                detector_model,
                broker.port,
                device_id=f"tls-{kind}",
                camera={"loop": True},
                mqtt={"tls": True, "ca_file": str(pki / ca)},
            )
            procs[kind] = (launch(cfg, log=d / "daemon.log"), d / "daemon.log")
        bad, bad_log = procs["bad"]
        rec.wait(
            lambda r: [e for e in r.events() if e["device_id"] == "tls-good" and e["type"] == "new"],
            30,
            "an event over TLS",
        )
        wait_state(rec, lambda s: s["mqtt"]["connected"], 10, "the TLS daemon's state", device="tls-good")
        first = wait_until(
            lambda: log_lines(bad_log.read_text(), "MQTT: cannot connect"), 30, "the failed TLS handshake"
        )[0]
        wait_until(lambda: time.time() > log_time(first) + 2.0, 5, "more failed handshakes")
        assert bad.poll() is None, bad_log.read_text()
        codes = {kind: stop(p, lg) for kind, (p, lg) in procs.items()}
        assert codes == {"good": 0, "bad": 0}, codes
    finally:
        rec.stop()
        broker.stop()
    out = bad_log.read_text()
    fails = log_lines(out, "MQTT: cannot connect")
    assert len(fails) == 1, fails
    assert "TLS certificate verification failed" in fails[0] and "check ca_file" in fails[0], fails[0]
    assert "Traceback" not in out and len(out.splitlines()) < 40, out
    assert not [m for m in rec.messages if m.topic.startswith("maskwatch/tls-bad/")]
    assert "Traceback" not in procs["good"][1].read_text()


# --------------------------------------------------------------------------------------------
# 4. The daemon is SIGKILLed with events still queued
# --------------------------------------------------------------------------------------------


def _outbox_events(state_dir: Path) -> list[dict]:
    import json

    lines = (state_dir / "outbox" / "events.jsonl").read_text().splitlines()
    return [json.loads(json.loads(line)["payload"]) for line in lines if line.strip()]


@pytest.mark.slow
def test_daemon_sigkilled_with_queued_events_delivers_them_after_restart(
    tmp_path, launch, faces, tiny_classifier, detector_model, schema
):
    need_mosquitto()
    people = 3
    port = free_port()  # nothing listens yet: every event of the first run stays queued
    first = make_config(
        tmp_path,
        crossing_frames(faces, tmp_path / "frames", people),
        tiny_classifier,
        detector_model,
        port,
        name="first.toml",
    )
    log1 = tmp_path / "first.log"
    proc = launch(first, log=log1)  # no --exit-on-end: it idles once the camera has ended
    try:
        wait_until(
            lambda: len(logged_events(log1.read_text())) >= 2 * people,
            40,
            "every person's new and end in the first run",
        )
        wait_until(lambda: len(_outbox_events(tmp_path / "state")) >= 2 * people, 10, "the outbox on disk")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    queued = _outbox_events(tmp_path / "state")
    assert [(e["type"], e["track_id"]) for e in queued] == logged_events(log1.read_text())
    assert len(queued) == 2 * people and "stopped after" not in log1.read_text()

    broker = Broker(tmp_path / "broker", port=port).start()
    # The second run's camera shows nobody: every event that arrives is one of the first run's.
    second = make_config(
        tmp_path, empty_frames(tmp_path / "empty"), tiny_classifier, detector_model, port, name="second.toml"
    )
    log2 = tmp_path / "second.log"
    try:
        with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
            proc = launch(second, "--exit-on-end", log=log2)
            assert finish(proc, log2) == 0, log2.read_text()
            rec.wait(lambda r: len(unique(r.events())) >= len(queued), 10, "the first run's events")
            time.sleep(0.3)
            received = unique(rec.events())
            delivered = max(s["mqtt"]["delivered"] for s in states(rec))
            made = states(rec)[-1]["events"]
    finally:
        broker.stop()
    assert [e["event_id"] for e in received] == [e["event_id"] for e in queued]  # all, once each, in order
    assert received == queued
    for e in received:
        assert not list(schema.iter_errors(e)), e
    out = log2.read_text()
    assert f"{len(queued)} undelivered events from an earlier run will be sent" in out
    assert delivered == len(queued) and made == 0
    assert_outbox_empty(tmp_path / "state")  # nothing left for a third start
    assert "Traceback" not in out


# --------------------------------------------------------------------------------------------
# 5. The camera: missing, then there, then ended; a video file that appears; a stalled stream
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_image_folder_is_reopened_with_backoff_then_runs_then_ends(
    tmp_path, launch, broker, faces, tiny_classifier, detector_model
):
    folder = tmp_path / "camera"  # does not exist yet
    staged = crossing_frames(faces, tmp_path / "staged", 2)
    cfg = make_config(
        tmp_path,
        folder,
        tiny_classifier,
        detector_model,
        broker.port,
        camera={"reopen_min_s": 0.2, "reopen_max_s": 0.8},
    )
    log = tmp_path / "daemon.log"
    notify = NotifyListener(tmp_path / "notify.sock")
    env = daemon_env(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC=WATCHDOG_USEC)
    try:
        with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
            proc = launch(cfg, log=log, env=env)
            down = wait_state(
                rec,
                lambda s: s["camera"].get("status") == "down" and s["camera"]["reopens"] >= 4,
                30,
                "the camera down after 4 reopens",
            )
            earlier = next(s for s in states(rec) if s["camera"].get("status") == "down")
            assert "READY=1" not in notify.messages and count(notify, "WATCHDOG=1") == 0
            os.rename(staged, folder)  # all frames appear at once
            wait_state(rec, lambda s: s["camera"].get("status") == "ended", 30, "the camera to end")
            rec.wait(
                lambda r: len([e for e in r.events() if e["type"] == "end"]) >= 2, 10, "both people's 'end'"
            )
            # Ended is not fatal without --exit-on-end: the daemon stays up, keeps reporting, and
            # waits without burning the CPU.
            n = len(states(rec))
            idle_cpu = assert_idles(proc)
            assert len(states(rec)) >= n + 2 and proc.poll() is None
            assert stop(proc, log) == 0, log.read_text()
            events = rec.events()
            last = states(rec)[-1]
    finally:
        notify.close()
    output = log.read_text()
    cam = down["camera"]
    assert f"no image files (folder {folder} does not exist)" in cam["last_error"], cam
    assert earlier["camera"]["reopens"] < cam["reopens"] and cam["frames"] == 0
    # Backoff: 0.2, 0.4, 0.8 s, then capped at reopen_max_s.
    delays = [float(d) for d in re.findall(r"reopening in ([\d.]+) s", output)]
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8] and max(delays) == 0.8, delays
    assert Counter(e["type"] for e in unique(events)) == {"new": 2, "end": 2}
    assert last["camera"]["status"] == "ended" and last["camera"]["frames"] == 2 * 22 + 10
    msgs = list(notify.messages)
    assert "READY=1" in msgs and "WATCHDOG=1" in msgs, msgs
    assert msgs.index("READY=1") < msgs.index(
        "WATCHDOG=1"
    )  # nothing fed the watchdog while the camera was down
    assert f"camera up again: images:{folder} (down for" in output
    assert "Traceback" not in output
    print(f"\nended camera: the idle daemon used {idle_cpu:.2f} s of CPU in 2 s")


@pytest.mark.slow
def test_missing_video_file_is_waited_for_and_its_end_stops_the_run(
    tmp_path, launch, broker, faces, tiny_classifier, detector_model
):
    import cv2

    video = tmp_path / "door.avi"
    staged = tmp_path / "staged.avi"
    frames = render(faces, [Walk(face=0, first=0, last=13, x0=10, x1=400)], 24)
    writer = cv2.VideoWriter(str(staged), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (640, 480))
    assert writer.isOpened(), "OpenCV cannot write an MJPG AVI here"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    cfg = make_config(
        tmp_path,
        tmp_path,
        tiny_classifier,
        detector_model,
        broker.port,
        camera={
            "source": "opencv",
            "device": str(video),
            "realtime": False,
            "reopen_min_s": 0.2,
            "reopen_max_s": 0.4,
        },
    )
    log = tmp_path / "daemon.log"
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = launch(cfg, "--exit-on-end", log=log)
        down = wait_state(
            rec,
            lambda s: s["camera"].get("status") == "down" and s["camera"]["reopens"] >= 3,
            30,
            "the camera down after 3 reopens",
        )
        os.replace(staged, video)
        assert finish(proc, log) == 0, log.read_text()
        rec.wait(lambda r: r.last("/availability").payload == b"stopped", 10, "availability 'stopped'")
        events = unique(rec.events())
        last = states(rec)[-1]
    assert (
        "video file not found" in down["camera"]["last_error"] and str(video) in down["camera"]["last_error"]
    )
    assert last["camera"]["status"] == "ended" and last["camera"]["frames"] == 24 and last["frames"] == 24
    assert Counter(e["type"] for e in events) == {"new": 1, "end": 1}
    output = log.read_text()
    assert "camera source ended (--exit-on-end): stopping" in output and "Traceback" not in output
    assert f"camera up again: opencv:{video}" in output


@pytest.mark.slow
def test_a_replay_that_ends_with_someone_in_view_still_ends_their_track(
    tmp_path, launch, broker, faces, tiny_classifier, detector_model
):
    """A lossless replay runs on media time (frames 1/fps apart), far ahead of the wall clock
    when the machine is fast: 40 frames at 2 fps are 20 s of video read in well under 1 s.
    When the source ends with a person still in view, the daemon (kept running, no
    --exit-on-end) must end that person on the same clock, ``timeout_s`` after they were last
    seen, not once the wall clock has caught up with the video."""
    walks = [
        Walk(face=0, first=0, last=9, x0=10, x1=400),
        Walk(face=1, first=24, last=39, x0=10, x1=300, y=160),
    ]
    frames = write_frames(
        tmp_path / "frames", render(faces, walks, 40)
    )  # B still there at the end
    cfg = make_config(
        tmp_path,
        frames,
        tiny_classifier,
        detector_model,
        broker.port,
        camera={"realtime": False, "fps": 2.0},
        tracker={"timeout_s": 1.5},
    )
    log = tmp_path / "daemon.log"
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = launch(cfg, log=log)
        wait_state(rec, lambda s: s["camera"].get("status") == "ended", 30, "the replay to end")
        ended_at = time.monotonic()
        rec.wait(
            lambda r: len([e for e in r.events() if e["type"] == "end"]) >= 2,
            10,
            "the 'end' of the person still in view when the replay ended",
        )
        waited = time.monotonic() - ended_at
        gone = wait_state(
            rec, lambda s: s["people_present"] == 0 and s["frames"] == 40, 5, "nobody present any more"
        )
        assert proc.poll() is None  # still running: the end came from the idle daemon, not the shutdown
        assert stop(proc, log) == 0, log.read_text()
        events = unique(rec.events())
    assert [(e["type"], e["track_id"]) for e in events] == logged_events(log.read_text())
    assert Counter(e["type"] for e in events) == {"new": 2, "end": 2}
    last_end, second = events[-1], [e for e in events if e["type"] == "new"][1]
    assert last_end["type"] == "end" and last_end["track_id"] == second["track_id"]
    # On the video's clock: after the last sighting by more than timeout_s, but not by minutes.
    assert 1.5 <= last_end["frame_time"] - last_end["end_time"] < 10.0, last_end
    assert [e["frame_time"] for e in events] == sorted(e["frame_time"] for e in events)
    assert gone["no_mask_present"] is False
    print(f"\nreplay end: the last person's 'end' came {waited:.1f} s after the replay ended")


class MjpegCamera:
    """A live MJPEG-over-HTTP camera on loopback (like an IP camera) that can freeze."""

    def __init__(self, jpeg: bytes, fps: float = 20.0):
        self.frozen = threading.Event()
        self.closing = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                    len(jpeg),
                    jpeg,
                )
                try:
                    while not cam.closing.wait(1.0 / fps):
                        if not cam.frozen.is_set():
                            self.wfile.write(part)
                except OSError:  # the daemon hung up (it gave up on a frozen stream)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_stalled_stream_is_reported_down_starves_the_watchdog_and_recovers(
    tmp_path, launch, broker, tiny_classifier, detector_model
):
    import cv2

    ok, jpeg = cv2.imencode(".jpg", background(0))
    cam = MjpegCamera(jpeg.tobytes())
    cfg = make_config(
        tmp_path,
        tmp_path,
        tiny_classifier,
        detector_model,
        broker.port,
        camera={
            "source": "opencv",
            "device": cam.url,
            "realtime": "auto",
            "stall_timeout_s": 1.0,
            "open_timeout_s": 2.0,
        },
    )
    log = tmp_path / "daemon.log"
    notify = NotifyListener(tmp_path / "notify.sock")
    env = daemon_env(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC=WATCHDOG_USEC)
    try:
        with Recorder(broker.host, broker.port, [f"{PREFIX}/state"]) as rec:
            proc = launch(cfg, log=log, env=env)
            before = wait_state(
                rec,
                lambda s: s["camera"].get("status") == "ok" and s["frames"] >= 10,
                30,
                "frames from the stream",
            )
            wait_until(lambda: count(notify, "WATCHDOG=1") >= 2, 10, "the watchdog fed while frames flow")
            cam.frozen.set()
            frozen_at = time.monotonic()
            down = wait_state(
                rec, lambda s: s["camera"].get("status") == "down", 15, "the stall to be noticed"
            )
            # The watchdog goes hungry once the last frame is older than 2 s (max(2, stall_timeout_s)).
            time.sleep(max(0.0, frozen_at + 3.0 - time.monotonic()))
            hungry_from = count(notify, "WATCHDOG=1")
            frozen_cpu = assert_idles(proc, 2.0)  # four watchdog intervals of 0.5 s; no busy waiting either
            hungry_to = count(notify, "WATCHDOG=1")
            assert proc.poll() is None
            frames_frozen = states(rec)[-1]["frames"]
            cam.frozen.clear()
            after = wait_state(
                rec,
                lambda s: s["camera"].get("status") == "ok" and s["frames"] > frames_frozen + 10,
                30,
                "frames again after the stall",
            )
            wait_until(lambda: count(notify, "WATCHDOG=1") > hungry_to, 10, "the watchdog fed again")
            assert stop(proc, log) == 0, log.read_text()
            down_states = [s for s in states(rec) if s["camera"].get("status") == "down"]
    finally:
        notify.close()
        cam.close()
    assert hungry_to == hungry_from, (hungry_from, hungry_to)
    assert any(
        "no frame for" in s["camera"]["last_error"] and "(stalled)" in s["camera"]["last_error"]
        for s in down_states
    ), [s["camera"]["last_error"] for s in down_states]
    assert cam.url.split("//")[1].split("/")[0] in down["camera"]["last_error"]
    assert after["camera"]["reopens"] > before["camera"]["reopens"]
    output = log.read_text()
    assert "Traceback" not in output
    went_down, came_back = log_lines(output, "camera down:"), log_lines(output, "camera up again:")
    assert went_down and len(came_back) == 1 and log_time(came_back[0]) > log_time(went_down[-1])
    print(
        f"\nstall: watchdog {hungry_from} -> {hungry_to} over 2 s frozen, reopens "
        f"{before['camera']['reopens']} -> {after['camera']['reopens']}, {len(down_states)} 'down' states, "
        f"{frozen_cpu:.2f} s CPU in 2 s frozen"
    )
