"""``maskwatch-device alerts`` as a user runs it: a real process against a real broker."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.comms.alerts import format_event
from device.comms.events import Event, model_info
from device.comms.mqtt import MqttConfig, MqttPublisher

ROOT = Path(__file__).resolve().parents[1]
MODEL = model_info("tiny", "ef" * 32, "int8", 0.5)

pytestmark = pytest.mark.broker


def make_event(i: int, kind: str = "new") -> dict:
    return Event(
        type=kind, label="without_mask" if i % 2 else "with_mask", score=0.91, top_score=0.97,
        box=[10, 20, 110, 140 + i], frame_time=1_760_000_000.0 + i, start_time=1_760_000_000.0,
        device_id="door-pi", model=MODEL, track_id=i, end_time=1_760_000_000.5 + i if kind == "end" else None,
    ).to_dict()


def start_alerts(broker, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "alerts", "--host", broker.host, "--port", str(broker.port), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Wait for "subscribed ..." on stderr, so nothing we publish next can be missed.
    ready, _, _ = select.select([proc.stderr], [], [], 20)
    line = proc.stderr.readline() if ready else ""
    if "subscribed" not in line:
        proc.kill()
        pytest.fail(f"alerts did not subscribe: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}")
    return proc


def publish(broker, tmp_path: Path, events: list[dict]) -> None:
    pub = MqttPublisher(MqttConfig(host=broker.host, port=broker.port, discovery=False), "door-pi", tmp_path / "state")
    pub.start()
    for e in events:
        pub.publish_event(e)
    pub.stop(clean=True, flush_timeout=10)
    assert pub.status["queued"] == 0


def test_prints_one_line_per_event_and_exits_on_count(broker, tmp_path):
    proc = start_alerts(broker, "--count", "3", "--timeout", "30")
    events = [make_event(0), make_event(1, "update"), make_event(2, "end")]
    publish(broker, tmp_path, events + [make_event(3)])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines == [format_event(e) for e in events]
    assert "door-pi" in lines[1] and "update" in lines[1] and "without_mask" in lines[1]
    assert "0.91" in lines[0] and "[10,20,110,140]" in lines[0]
    assert time.strftime("%Y-%m-%d", time.localtime(1_760_000_000)) in lines[0]


def test_json_mode_prints_raw_events(broker, tmp_path):
    proc = start_alerts(broker, "--json", "--count", "2", "--timeout", "30", "--topic", "maskwatch/door-pi/events")
    events = [make_event(5), make_event(6)]
    publish(broker, tmp_path, events)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == events


def test_timeout_before_count_exits_1(broker):
    proc = start_alerts(broker, "--count", "1", "--timeout", "0.5")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == "" and "0 of 1" in err


def test_unreachable_broker_is_one_clear_line():
    from train.broker import free_port

    port = free_port()
    res = subprocess.run(
        [sys.executable, "-m", "device.cli", "alerts", "--host", "127.0.0.1", "--port", str(port), "--timeout", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"maskwatch-device: error: cannot connect to 127.0.0.1:{port}: "
        "connection refused (is the broker running and listening on this port?)"
    ]


def test_password_file_authenticates_and_a_wrong_one_is_one_clear_line(tmp_path):
    from tests.test_mqtt import _password_broker

    broker = _password_broker(tmp_path)  # user alice, password right-horse-battery
    try:
        good, bad = tmp_path / "good.pw", tmp_path / "bad.pw"
        good.write_text("right-horse-battery\n")
        bad.write_text("nope\n")
        good.chmod(0o600)
        bad.chmod(0o600)
        proc = start_alerts(broker, "--username", "alice", "--password-file", str(good), "--timeout", "0.2")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        res = subprocess.run(
            [sys.executable, "-m", "device.cli", "alerts", "--host", broker.host, "--port", str(broker.port),
             "--username", "alice", "--password-file", str(bad), "--timeout", "5"],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )
        assert res.returncode == 2 and "Not authorized" in res.stderr and "nope" not in res.stderr + res.stdout
        assert len(res.stderr.strip().splitlines()) == 1
    finally:
        broker.stop()


# --------------------------------------------------------------------------------------------
# Untrusted payloads
# --------------------------------------------------------------------------------------------


def publish_raw(broker, messages: list[tuple[str, bytes]]) -> None:
    """Publish payloads exactly as given (the device's publisher would refuse the bad ones)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def mutated(i: int, **fields) -> bytes:
    return json.dumps({**make_event(i), **fields}).encode()


HOSTILE = {
    "type is an object": mutated(1, type={"a": 1}),
    "400-digit score": mutated(2, score=10**400),
    "400-digit frame_time": mutated(3, frame_time=10**400),
    "400-digit box value": mutated(4, box=[10**400, 0, 1, 1]),
    "infinite score": mutated(5).replace(b'"score": 0.91', b'"score": Infinity'),
    "box of floats": mutated(6, box=[10.5, 20, 110, 140]),
    "100k nested [": b"[" * 100_000,
    "deeply nested field": mutated(7, label="@").replace(b'"@"', b"[" * 900 + b"]" * 900),
    "5000-digit number": b'{"score": ' + b"9" * 5000 + b"}",
    "not UTF-8": b'{"type": "\xff\xfe"}',
    "a list": b"[1, 2, 3]",
    "missing fields": b'{"type": "new"}',
}


def test_hostile_payloads_are_skipped_one_line_each_and_the_next_event_is_printed(broker):
    proc = start_alerts(broker, "--count", "1", "--timeout", "30")
    valid = make_event(9)
    publish_raw(broker, [("maskwatch/door-pi/events", p) for p in HOSTILE.values()]
                + [("maskwatch/door-pi/events", json.dumps(valid).encode())])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines() == [format_event(valid)]
    skipped = [line for line in err.splitlines() if line.startswith("skipping a message on maskwatch/door-pi/events: ")]
    assert len(skipped) == len(HOSTILE), err
    assert all(len(line) < 300 for line in skipped), err
    assert "Traceback" not in err
    assert "nested too deeply" in err and "'type'" in err and "'score'" in err and "'box'" in err


TERMINAL_ATTACK = "door\x1b[2J\x1b]0;pwned\x07\x9b31m\u202epi"


def test_control_characters_are_escaped_in_human_output(broker):
    proc = start_alerts(broker, "--count", "1", "--timeout", "30")
    event = {**make_event(1), "device_id": TERMINAL_ATTACK}
    publish_raw(broker, [("maskwatch/door-pi/events", json.dumps(event).encode())])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "door\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\u202epi" in out
    assert all(c.isprintable() for c in out.rstrip("\n")), repr(out)


def test_json_output_stays_exact_json_with_control_characters(broker):
    proc = start_alerts(broker, "--json", "--count", "1", "--timeout", "30")
    event = {**make_event(1), "device_id": TERMINAL_ATTACK}
    publish_raw(broker, [("maskwatch/door-pi/events", json.dumps(event, ensure_ascii=False).encode())])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out) == event
    assert "\x1b" not in out and "\x9b" not in out  # JSON's own escaping: \u001b
