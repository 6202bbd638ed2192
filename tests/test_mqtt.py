"""MqttPublisher against a real Mosquitto: availability, ordered QoS 1 events, outages, restarts,
SIGKILL, the outbox bound, Home Assistant discovery, authentication and TLS."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.comms.discovery import STATE_KEYS
from device.comms.events import Event, model_info
from device.comms.mqtt import MqttConfig, MqttPublisher
from device.config import ConfigError
from train.broker import Broker, find_mosquitto

ROOT = Path(__file__).resolve().parents[1]
MODEL = model_info("tiny", "cd" * 32, "int8", 0.5)

pytestmark = pytest.mark.broker


def make_event(i: int, device_id: str = "pi", kind: str = "new") -> dict:
    now = 1_760_000_000.0 + i
    return Event(
        type=kind, label="without_mask", score=0.9, top_score=0.95, box=[i, 2, i + 50, 80],
        frame_time=now, start_time=now, device_id=device_id, model=MODEL, track_id=i,
    ).to_dict()


def fast(broker: Broker, **over) -> MqttConfig:
    """A config that reconnects quickly, for tests."""
    return MqttConfig(host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5, **over)


class Sub:
    """A real subscriber that records everything it receives."""

    def __init__(self, broker: Broker, topic: str, client_id: str | None = None, clean: bool = True,
                 **connect_kw):
        self.messages: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        kw = {"client_id": client_id} if client_id else {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, clean_session=clean, **kw)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, **connect_kw)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait(self, predicate, timeout: float = 15.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        with self.cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def payloads(self, suffix: str) -> list[bytes]:
        return [m.payload for m in self.on(suffix)]

    def tracks(self) -> list[int]:
        return [json.loads(m.payload)["track_id"] for m in self.on("/events")]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def first_seen(seq: list[int]) -> list[int]:
    """Order of first delivery (at-least-once allows repeats of the same event)."""
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


@pytest.fixture
def publishers():
    made: list[MqttPublisher] = []

    def make(*args, **kw) -> MqttPublisher:
        pub = MqttPublisher(*args, **kw)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.stop(clean=False)


def test_availability_online_then_stopped_retained(broker, tmp_path, publishers):
    pub = publishers(fast(broker, discovery=False), "pi", tmp_path / "state")
    assert pub.topics.availability == "maskwatch/pi/availability"
    live = Sub(broker, pub.topics.availability)
    pub.start()
    assert live.wait(lambda s: s.payloads("availability") == [b"online"])
    late = Sub(broker, pub.topics.availability)  # joins later: sees the retained value
    assert late.wait(lambda s: s.payloads("availability") == [b"online"])
    assert late.on("availability")[0].retain
    pub.stop(clean=True)
    assert live.wait(lambda s: s.payloads("availability") == [b"online", b"stopped"])
    after = Sub(broker, pub.topics.availability)
    assert after.wait(lambda s: s.payloads("availability") == [b"stopped"])
    assert after.on("availability")[0].retain
    assert pub.status["connected"] is False
    for s in (live, late, after):
        s.close()


def test_events_arrive_in_order_with_qos1(broker, tmp_path, publishers):
    sub = Sub(broker, "maskwatch/+/events")
    pub = publishers(fast(broker, discovery=False), "pi", tmp_path / "state")
    pub.start()
    sent = [make_event(i) for i in range(300)]
    for e in sent:
        pub.publish_event(e)
    assert sub.wait(lambda s: len(s.on("/events")) >= 300)
    got = sub.on("/events")
    assert [json.loads(m.payload) for m in got] == sent
    assert all(m.qos == 1 and not m.retain for m in got)
    assert wait_until(lambda: pub.status["queued"] == 0)
    assert pub.status["delivered"] == 300 and pub.status["dropped"] == 0
    sub.close()


def test_broker_restart_delivers_everything_in_order(tmp_path, publishers):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    # The broker keeps the subscriber's session across its restart (persistence), like a real
    # deployment; so the test does not depend on who reconnects first.
    work = tmp_path / "broker"
    broker = Broker(work, extra_conf=f"persistence true\npersistence_location {work}/\n").start()
    try:
        sub = Sub(broker, "maskwatch/pi/events", client_id="persistent-sub", clean=False)
        pub = publishers(fast(broker, discovery=False), "pi", tmp_path / "state")
        pub.start()
        for i in range(20):
            pub.publish_event(make_event(i))
        assert sub.wait(lambda s: len(s.tracks()) >= 20)
        assert wait_until(lambda: pub.status["queued"] == 0)
        broker.stop()
        assert wait_until(lambda: not pub.connected)
        for i in range(20, 50):
            pub.publish_event(make_event(i))
        assert pub.status["queued"] == 30 and not pub.connected
        time.sleep(0.5)  # a few failed reconnects while the broker is away
        assert pub.status["connect_failures"] >= 1
        broker.start()
        assert sub.wait(lambda s: set(s.tracks()) >= set(range(50)), timeout=30), sub.tracks()
        assert first_seen(sub.tracks()) == list(range(50))
        assert wait_until(lambda: pub.status["queued"] == 0)
        assert pub.status["reconnects"] >= 1
        sub.close()
    finally:
        broker.stop()


CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from device.comms.events import Event, model_info
from device.comms.mqtt import MqttConfig, MqttPublisher
host, port, state_dir, n, wait = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
cfg = MqttConfig(host=host, port=port, reconnect_min_s=0.1, reconnect_max_s=0.5, discovery=False)
pub = MqttPublisher(cfg, "kid", state_dir)
pub.start()
while wait == "connected" and not pub.connected:
    time.sleep(0.02)
model = model_info("tiny", "cd" * 32, "int8", 0.5)
for i in range(n):
    pub.publish_event(Event(type="new", label="with_mask", score=0.8, top_score=0.8, box=[0, 0, 9, 9],
                            frame_time=1.0 + i, start_time=1.0, device_id="kid", model=model, track_id=i))
print("READY", flush=True)
time.sleep(600)
"""


def run_child(tmp_path: Path, broker: Broker, state_dir: Path, n: int, wait: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ROOT), broker.host, str(broker.port), str(state_dir), str(n), wait],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()
    if line != "READY":
        proc.kill()
        pytest.fail(f"child publisher did not start: {line!r}")
    return proc


def test_last_will_offline_when_the_process_is_killed(broker, tmp_path):
    proc = run_child(tmp_path, broker, tmp_path / "state", 0, "connected")
    sub = Sub(broker, "maskwatch/kid/availability")
    try:
        assert sub.wait(lambda s: s.payloads("availability") == [b"online"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert sub.wait(lambda s: s.payloads("availability")[-1:] == [b"offline"])
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()


def test_outbox_survives_sigkill_and_the_next_process_delivers(broker, tmp_path, publishers):
    state = tmp_path / "state"
    broker.stop()  # the device cannot reach the broker while it records events
    proc = run_child(tmp_path, broker, state, 40, "no")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    broker.start()
    sub = Sub(broker, "maskwatch/kid/events")
    pub = publishers(fast(broker, discovery=False), "kid", state)
    assert pub.status["queued"] == 40
    pub.start()
    assert sub.wait(lambda s: set(s.tracks()) >= set(range(40)))
    assert first_seen(sub.tracks()) == list(range(40))
    sub.close()


def test_outbox_bound_drops_the_oldest(broker, tmp_path, publishers):
    sub = Sub(broker, "maskwatch/pi/events")
    pub = publishers(fast(broker, discovery=False, queue_max=5), "pi", tmp_path / "state")
    for i in range(12):  # recorded before the connection exists
        pub.publish_event(make_event(i))
    assert pub.status["queued"] == 5 and pub.status["dropped"] == 7
    pub.start()
    assert sub.wait(lambda s: len(s.tracks()) >= 5)
    assert wait_until(lambda: pub.status["queued"] == 0)
    pub.stop()
    assert sub.tracks() == [7, 8, 9, 10, 11]
    sub.close()


def test_state_is_retained_latest_and_snapshots_skip_while_offline(broker, tmp_path, publishers):
    pub = publishers(fast(broker, discovery=False), "pi", tmp_path / "state")
    state = {"no_mask_present": True, "with_mask_total": 3, "without_mask_total": 1,
             "with_mask_today": 2, "without_mask_today": 1, "fps": 9.5}
    pub.publish_state({**state, "fps": 1.0})
    pub.publish_state(state)
    pub.publish_snapshot(b"\xff\xd8jpeg")
    assert pub.status["snapshots_skipped"] == 1
    sub = Sub(broker, "maskwatch/pi/#")
    pub.start()
    # Only the latest state is sent when the connection comes up.
    assert sub.wait(lambda s: len(s.on("/state")) == 1 and len(s.on("/availability")) == 1)
    assert json.loads(sub.on("/state")[0].payload) == state
    late = Sub(broker, "maskwatch/pi/state")
    assert late.wait(lambda s: len(s.on("/state")) == 1)
    assert late.on("/state")[0].retain and json.loads(late.on("/state")[0].payload) == state
    pub.publish_snapshot(b"\xff\xd8jpeg")
    assert sub.wait(lambda s: s.payloads("/snapshot") == [b"\xff\xd8jpeg"])
    assert not sub.on("/snapshot")[0].retain and len(sub.on("/state")) == 1
    sub.close()
    late.close()


def test_home_assistant_discovery_published_and_resent(broker, tmp_path, publishers):
    pub = publishers(fast(broker), "door-pi", tmp_path / "state", device_name="Front door",
                     model_info=MODEL)
    sub = Sub(broker, "homeassistant/+/+/+/config")
    pub.start()
    assert sub.wait(lambda s: len(s.messages) >= 8)
    late = Sub(broker, "homeassistant/+/+/+/config")
    assert late.wait(lambda s: len(s.messages) >= 8)
    time.sleep(0.2)
    assert all(m.retain for m in late.messages) and len(late.messages) == 8
    configs = {m.topic: json.loads(m.payload) for m in late.messages}
    assert len(configs) == 8
    components = sorted(t.split("/")[1] for t in configs)
    assert components == ["binary_sensor", "binary_sensor", "event", "sensor", "sensor", "sensor", "sensor", "sensor"]
    assert len({c["unique_id"] for c in configs.values()}) == 8
    assert {json.dumps(c["device"], sort_keys=True) for c in configs.values()} == {
        json.dumps(next(iter(configs.values()))["device"], sort_keys=True)
    }
    for topic, c in configs.items():
        assert c["device"]["identifiers"] == ["maskwatch_door_pi"] and c["device"]["name"] == "Front door"
        assert c["availability_topic"] == pub.topics.availability and c["payload_available"] == "online"
        assert c["default_entity_id"].startswith(topic.split("/")[1] + ".")
        if topic.split("/")[1] == "event":
            assert c["state_topic"] == pub.topics.events and c["event_types"] == ["new", "update", "end", "test"]
        else:
            assert c["state_topic"] == pub.topics.state
            used = set(re.findall(r"value_json\.(\w+)", c["value_template"]))
            assert used and used <= set(STATE_KEYS), used
    binary = {t.split("/")[3]: c for t, c in configs.items() if "/binary_sensor/" in t}
    assert "no_mask_present" in binary["no_mask_present"]["value_template"]
    # A 2-label model: "alert present" means a person without mask, as no_mask_present does.
    assert "alert_present" in binary["alert_present"]["value_template"]
    assert binary["alert_present"]["name"] == "Alert: person without mask present"

    with sub.cond:
        sub.messages.clear()
    sub.client.publish("homeassistant/status", "online", qos=1)
    assert sub.wait(lambda s: len({m.topic for m in s.messages}) >= 8)
    assert {m.topic for m in sub.messages} == set(configs)
    sub.close()
    late.close()


def _password_broker(tmp_path: Path) -> Broker:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed (package mosquitto): cannot make a password file")
    pwfile = tmp_path / "passwords"
    subprocess.run([tool, "-c", "-b", str(pwfile), "alice", "right-horse-battery"], check=True)
    return Broker(tmp_path / "broker", extra_conf=f"allow_anonymous false\npassword_file {pwfile}\n").start()


def test_wrong_password_keeps_retrying_quietly_and_never_logs_the_password(tmp_path, publishers, caplog):
    broker = _password_broker(tmp_path)
    caplog.set_level(logging.DEBUG)
    try:
        bad = publishers(fast(broker, username="alice", password="Wr0ng-Secret-xyz"), "pi", tmp_path / "s1")
        bad.start()
        bad.publish_event(make_event(0))
        assert wait_until(lambda: bad.status["connect_failures"] >= 4)
        assert not bad.connected and bad.status["queued"] == 1
        assert "refused" in bad.status["last_error"] and "username/password" in bad.status["last_error"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]
        assert len(warnings) == 1  # the same reason is not repeated at every attempt
        assert "Not authorized" in warnings[0].getMessage() or "Bad user name" in warnings[0].getMessage()

        good = publishers(fast(broker, username="alice", password="right-horse-battery", discovery=False),
                          "pi2", tmp_path / "s2")
        good.start()
        assert wait_until(lambda: good.connected)
        good.stop()
        assert bad.status["connect_failures"] >= 4 and not bad.connected  # still trying, no crash
    finally:
        broker.stop()
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "Wr0ng-Secret-xyz" not in text and "right-horse-battery" not in text
    assert "Traceback" not in text and not any(r.exc_info for r in caplog.records)
    assert "right-horse-battery" not in repr(good.cfg)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(d: Path) -> None:
    """Two CAs; a server cert for 127.0.0.1 and a client cert, both signed by the first."""
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl CLI is available to make test certificates")
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
                 "-subj", f"/CN=maskwatch test {ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *ext, cwd=d)


def test_tls_good_ca_connects_wrong_ca_does_not_and_client_cert_works(tmp_path, publishers):
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    pki = tmp_path / "pki"
    _make_pki(pki)
    server = f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
    broker = Broker(tmp_path / "b1", extra_conf=server).start()
    strict = Broker(tmp_path / "b2", extra_conf=server + "require_certificate true\n").start()
    try:
        good = publishers(fast(broker, tls=True, ca_file=str(pki / "ca.crt"), discovery=False), "a", tmp_path / "s1")
        wrong = publishers(fast(broker, tls=True, ca_file=str(pki / "other_ca.crt"), discovery=False),
                           "b", tmp_path / "s2")
        with_cert = publishers(
            fast(strict, tls=True, ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"),
                 key_file=str(pki / "client.key"), discovery=False), "c", tmp_path / "s3")
        without_cert = publishers(fast(strict, tls=True, ca_file=str(pki / "ca.crt"), discovery=False),
                                  "d", tmp_path / "s4")
        for p in (good, wrong, with_cert, without_cert):
            p.start()
        assert wait_until(lambda: good.connected and with_cert.connected)
        assert wait_until(lambda: wrong.status["connect_failures"] >= 2 and without_cert.status["connect_failures"] >= 2)
        assert not wrong.connected and not without_cert.connected
        assert "certificate verif" in wrong.status["last_error"]
    finally:
        broker.stop()
        strict.stop()


def test_missing_tls_file_is_a_clear_error(tmp_path):
    cfg = MqttConfig(tls=True, ca_file=str(tmp_path / "nope.crt"))
    with pytest.raises(ConfigError, match="mqtt.ca_file: file not found: .*nope.crt"):
        MqttPublisher(cfg, "pi", tmp_path / "state")
    # The outbox lock was released: a corrected config can use the same state dir.
    MqttPublisher(MqttConfig(), "pi", tmp_path / "state").stop()


def test_two_devices_with_one_id_are_named_as_the_likely_cause(broker, tmp_path, publishers, caplog):
    # Two real clients with the same client id on a real Mosquitto: the broker drops the older
    # connection whenever the other one connects, so both keep being kicked off right after
    # connecting. The log must say so, not only "the broker closed the connection".
    caplog.set_level(logging.WARNING, logger="device.comms.mqtt")
    one = publishers(fast(broker, discovery=False), "raspberrypi", tmp_path / "s1")
    two = publishers(fast(broker, discovery=False), "raspberrypi", tmp_path / "s2")
    one.start()
    two.start()
    hint = "another client with the same id 'maskwatch-raspberrypi'?"
    assert wait_until(lambda: any(hint in r.getMessage() for r in caplog.records), timeout=30), \
        [r.getMessage() for r in caplog.records]
    assert hint in (one.status["last_error"] or "") + (two.status["last_error"] or "")


def test_quick_drops_count_only_connections_lost_right_after_connecting():
    from device.comms.mqtt import QuickDrops

    drops = QuickDrops(within_s=10, count=3, window_s=60)
    assert not drops.lost(1.0, now=100) and not drops.lost(2.0, now=102)
    assert drops.lost(1.5, now=104)  # the third within seconds of connecting, within a minute
    assert drops.lost(0.5, now=106)
    assert not drops.lost(600.0, now=800)  # a long-lived connection lost once: a network problem
    assert not drops.lost(1.0, now=801) and not drops.lost(1.0, now=900) and not drops.lost(1.0, now=1000)


def test_unreachable_broker_never_raises(tmp_path, publishers):
    from train.broker import free_port

    pub = publishers(MqttConfig(host="127.0.0.1", port=free_port(), reconnect_min_s=0.1, reconnect_max_s=0.2),
                     "pi", tmp_path / "state")
    pub.start()
    pub.publish_event(make_event(1))
    assert wait_until(lambda: pub.status["connect_failures"] >= 2)
    assert "connection refused" in pub.status["last_error"]
    pub.stop(clean=True, flush_timeout=0.2)
    assert pub.status["queued"] == 1
