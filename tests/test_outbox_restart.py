"""The outbox across a real daemon restart, against a real broker: a damaged line and an
unreadable file must neither lose the other events nor stop the daemon from starting.

The first "run" is the device's publisher with no broker to talk to (so every event stays on
disk); the file is then damaged the way an SD card or a person would; the second run is
``maskwatch-device run`` as a real process on frames with nobody in them, so every event that
arrives comes from the first run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from device.comms.events import Event, model_info
from device.comms.mqtt import MqttConfig, MqttPublisher
from device.comms.outbox import LOG_NAME, REJECTED_NAME, UNREADABLE_PREFIX
from tests.daemon_helpers import Recorder, finish, start_daemon
from tests.mosquitto import free_port
from tests.test_faults import DEVICE, PREFIX, assert_outbox_empty, empty_frames, make_config, states, unique

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

