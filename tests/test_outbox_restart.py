"""The outbox across a real daemon restart, against a real broker: a damaged line and an
unreadable file must neither lose the other events nor stop the daemon from starting; an
event that cannot be written is reported and still sent.

The first "run" is the device's publisher with no broker to talk to (so every event stays on
disk); the file is then damaged the way an SD card or a person would; the second run is
``maskwatch-device run`` as a real process on frames with nobody in them, so every event that
arrives comes from the first run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.comms.events import Event, model_info
from device.comms.mqtt import MqttConfig, MqttPublisher
from device.comms.outbox import LOG_NAME, REJECTED_NAME, UNREADABLE_PREFIX
from tests.daemon_helpers import ROOT, Recorder, finish, start_daemon
from tests.test_faults import DEVICE, PREFIX, assert_outbox_empty, empty_frames, make_config, states, unique
from train.broker import free_port

pytestmark = pytest.mark.broker
MODEL = model_info("tiny", "ef" * 32, "int8", 0.5)


def queue_events(state_dir: Path, n: int) -> list[dict]:
    """``n`` events written to the outbox by a publisher that never reaches a broker."""
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), discovery=False)
    pub = MqttPublisher(cfg, DEVICE, state_dir)  # never started: nothing is sent
    events = [
        Event(type="new", label="without_mask", score=0.9, top_score=0.9, box=[1, 2, 30, 40 + i],
              frame_time=1_760_000_000.0 + i, start_time=1_760_000_000.0, device_id=DEVICE, model=MODEL,
              track_id=i).to_dict()
        for i in range(n)
    ]
    for e in events:
        pub.publish_event(e)
    pub.stop(clean=False)
    return events


def second_run(tmp_path: Path, broker, tiny_classifier: Path, detector_model: Path,
               wait_for: int) -> tuple[list[dict], dict, str]:
    """The daemon on empty frames until the camera ends: (events received, last state, log)."""
    cfg = make_config(tmp_path, empty_frames(tmp_path / "empty"), tiny_classifier, detector_model, broker.port)
    log = tmp_path / "daemon.log"
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = start_daemon(cfg, "--exit-on-end", log=log)
        try:
            assert finish(proc, log) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        rec.wait(lambda r: len(unique(r.events())) >= wait_for and states(r), 10, f"{wait_for} events and a state")
        time.sleep(0.3)  # a stray extra event would show up now
        return unique(rec.events()), states(rec)[-1], log.read_text()


def test_restart_after_one_bad_seq_delivers_every_other_event(tmp_path, broker, tiny_classifier, detector_model):
    state = tmp_path / "state"
    events = queue_events(state, 6)
    log_file = state / "outbox" / LOG_NAME
    lines = log_file.read_bytes().splitlines(keepends=True)
    damaged = lines[1].replace(b'"seq":2,', b'"seq":9,')  # a bit flip (or a hand edit) in line 2
    assert damaged != lines[1]
    log_file.write_bytes(b"".join([lines[0], damaged, *lines[2:]]))

    received, last_state, out = second_run(tmp_path, broker, tiny_classifier, detector_model, wait_for=5)
    assert [e["event_id"] for e in received] == [e["event_id"] for e in events[:1] + events[2:]]  # in order
    assert received == events[:1] + events[2:]
    assert f"{log_file} line 2 rejected (seq 9 out of order)" in out
    assert last_state["mqtt"]["outbox"]["rejected_lines"] == 1 and last_state["mqtt"]["delivered"] == 5
    assert (state / "outbox" / REJECTED_NAME).read_bytes() == damaged  # kept for a person to look at
    assert_outbox_empty(state)
    assert "Traceback" not in out


def test_unreadable_outbox_is_moved_aside_and_the_daemon_runs(tmp_path, broker, tiny_classifier, detector_model):
    outbox = tmp_path / "state" / "outbox"
    (outbox / LOG_NAME).mkdir(parents=True)  # what an SD card's EIO does to the reader, as a real error
    (outbox / LOG_NAME / "inside").write_text("kept")

    received, last_state, out = second_run(tmp_path, broker, tiny_classifier, detector_model, wait_for=0)
    aside = [p for p in outbox.iterdir() if p.name.startswith(UNREADABLE_PREFIX)]
    assert len(aside) == 1 and (aside[0] / "inside").read_text() == "kept"
    assert (outbox / LOG_NAME).is_file()  # a fresh one
    status = last_state["mqtt"]["outbox"]
    assert status["set_aside"] == str(aside[0]) and "Is a directory" in status["last_error"], status
    assert f"the outbox {outbox / LOG_NAME} was unreadable (Is a directory): moved aside to {aside[0]}" in out
    assert received == [] and "Traceback" not in out



SENDER = """
import json, resource, signal, sys, time
sys.path.insert(0, sys.argv[4])
from device.comms.mqtt import MqttConfig, MqttPublisher

host, port, state = sys.argv[1], int(sys.argv[2]), sys.argv[3]
event = json.loads(sys.stdin.readline())
pub = MqttPublisher(MqttConfig(host=host, port=port, discovery=False), event["device_id"], state)
pub.start()
deadline = time.monotonic() + 20
while not pub.connected and time.monotonic() < deadline:
    time.sleep(0.02)
# A 10-byte file-size limit: the record is cut short by the kernel (SIGXFSZ ignored).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    pub.publish_event(event)
    error = None
except OSError as exc:
    error = str(exc)
while pub.status["queued"] and time.monotonic() < deadline:
    time.sleep(0.02)
status = pub.status
pub.stop()
print(json.dumps({"error": error, "status": status}))
"""


def test_an_event_that_cannot_be_written_is_reported_and_still_sent(tmp_path, broker):
    """The caller hears of the failed write (the daemon counts a publish error), and the event,
    kept in memory, still reaches the broker while the process runs."""
    event = queue_events(tmp_path / "unused", 1)[0]
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        r = subprocess.run([sys.executable, str(script), broker.host, str(broker.port), str(tmp_path / "state"),
                            str(ROOT)], input=json.dumps(event) + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rec.wait(lambda r: r.events(), 10, "the event")
        received = rec.events()
    out = json.loads(r.stdout)
    assert out["error"] and "kept in memory only" in out["error"] and "File too large" in out["error"]
    assert received == [event]
    status = out["status"]
    assert status["queued"] == 0 and status["delivered"] == 1, status
    assert status["outbox"]["write_errors"] == 1 and "File too large" in status["outbox"]["last_error"], status
    assert "cannot write the outbox" in r.stderr
    assert (tmp_path / "state" / "outbox" / LOG_NAME).read_bytes() == b""  # no half record left behind
