"""The device's MQTT side: events that are never lost, retained state, availability, snapshots.

Topics (prefix ``maskwatch/<device_id>`` by default):

* ``availability`` (retained, QoS 1): ``online`` on every (re)connect, ``stopped`` on a clean
  exit, ``offline`` from the broker (last will) when the device vanishes.
* ``events`` (QoS 1, not retained): one JSON event (``device/schemas/event.schema.json``) each,
  in order, at least once.
* ``state`` (retained, QoS 0): the latest state only; re-published on every reconnect.
* ``snapshot`` (QoS 0, not retained): JPEG bytes, skipped while offline.

How "nothing is lost" works: ``publish_event`` appends the event to the persistent
:class:`~device.comms.outbox.Outbox` and returns. A pump thread hands the oldest events to paho
(at most ``max_inflight`` at a time, only while connected) and removes each from the outbox
only when its PUBACK arrives (``on_publish``). After a reconnect paho first re-sends what was
in flight (it resends from its own queue after ``on_connect``), so the pump hands over nothing
new until those are acknowledged: order is kept across broker restarts. Events still in the
outbox at exit, or after SIGKILL or a crash, are sent by the next process (duplicates with the
same ``event_id`` are possible, losses are not).

Threads: paho's network thread runs the callbacks; they only append to small queues and notify
the pump, which is the only caller of ``client.publish`` for events and never holds its own lock
while calling paho (paho calls ``on_publish`` holding its message lock, so holding ours across
``publish`` would deadlock).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from device.comms import discovery
from device.comms.events import Event
from device.comms.outbox import Outbox
from device.comms.topics import Topics
from device.config import MqttConfig
from device.contract import ALERT_LABEL, BINARY_LABELS
from device.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)
paho_log = logging.getLogger(f"{__name__}.paho")

ONLINE = "online"
OFFLINE = "offline"
STOPPED = "stopped"
#: The same connection problem is logged at most once per this many seconds (then counted).
LOG_REPEAT_S = 60.0
_BAD_CREDENTIALS = (134, 135)  # "Bad user name or password", "Not authorized"
_SESSION_TAKEN_OVER = 142  # MQTT 5's reason when another client connected with our id


class QuickDrops:
    """Counts connections the broker closed soon after accepting them.

    Several in a row is the signature of another client using the same client id: the broker
    drops the older connection whenever the other one (re)connects, so two devices left with
    one id knock each other off every few seconds. MQTT 3.1.1 gives no reason, hence the count.
    """

    def __init__(self, within_s: float = 10.0, count: int = 3, window_s: float = 60.0):
        self.within_s, self.count, self.window_s = within_s, count, window_s
        self._times: list[float] = []

    def lost(self, connected_for_s: float, now: float) -> bool:
        """Record one lost connection; True when it is (at least) the ``count``-th quick one in ``window_s``."""
        if connected_for_s > self.within_s:
            self._times.clear()
            return False
        self._times = [t for t in self._times if now - t <= self.window_s] + [now]
        return len(self._times) >= self.count


def _plain(value: Any) -> Any:
    """JSON for the odd non-JSON value in a state dict (numpy scalars/arrays, paths)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed.

    paho's ``on_connect_fail`` callback gets no exception; this is the one place it is seen.
    """

    last_connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise


def describe_connect_error(exc: BaseException | None, host: str, port: int) -> str:
    """One line a person can act on, for a failed TCP/TLS connection attempt."""
    if exc is None:
        return "connection failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc} (check ca_file / the broker's name)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name {host!r} could not be resolved ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "connection timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


class MqttPublisher:
    """Publishes one device's events, state, availability and snapshots. See the module doc.

    One of the daemon's event sinks (:class:`device.comms.sink.EventSink`).
    """

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        state_dir: Path,
        device_name: str = "maskwatch",
        model_info: dict | None = None,
        labels: Sequence[str] = BINARY_LABELS,
        alert_labels: Sequence[str] = (ALERT_LABEL,),
    ):
        """``labels`` / ``alert_labels``: the model's labels and those that alert, for Home
        Assistant discovery (a counter per label, one "alert present" binary sensor)."""
        cfg.check(device_id)  # ConfigError naming the field, for a config built in code
        self.cfg = cfg
        self.device_id = device_id
        self.device_name = device_name
        self.model_info = dict(model_info or {})
        self.labels = tuple(labels)
        self.alert_labels = tuple(alert_labels)
        self.topics = Topics.build(cfg.topic_prefix, device_id)
        self._ha_status = discovery.status_topic(cfg.discovery_prefix)
        self._outbox = Outbox(
            Path(state_dir) / "outbox", max_items=cfg.queue_max, sync_interval_s=cfg.outbox_sync_s
        )
        try:
            self._client = self._make_client()
        except BaseException:
            self._outbox.close()
            raise
        # Shared with the callbacks; guarded by _cond.
        self._cond = threading.Condition()
        self._acks: list[int] = []
        self._links: list[bool] = []  # connection up/down notices, in order
        self._kick = False
        self._exit = False
        # Pump thread only.
        self._handed: dict[int, int] = {}  # paho mid -> outbox seq
        self._online = False
        self._draining = False
        self._pump: threading.Thread | None = None
        # Status (plain attributes written by one thread, read by anyone).
        self._connected = False
        self._connected_at = 0.0
        self._quick_drops = QuickDrops()
        self._ever_connected = False
        self._reconnects = 0
        self._failures = 0
        self._failures_since_ok = 0
        self._attempt_reported = False
        self._socket_error: str | None = None
        self._last_error: str | None = None
        self._connect_log = RateLimitedLog(log, interval_s=LOG_REPEAT_S)
        self._latest_state: str | None = None
        self._snapshots_skipped = 0
        self._started = False
        self._stopped = False

    # -- setup ----------------------------------------------------------------------------

    def _make_client(self) -> _Client:
        cfg = self.cfg
        self.client_id = cfg.client_id or f"maskwatch-{self.device_id}"
        client = _Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.suppress_exceptions = True  # a bug in a callback must not kill the network thread
        # paho's own log says each connection problem again at ERROR level, every attempt; we
        # report them once (rate-limited) ourselves, so its messages go to DEBUG.
        client.on_log = self._on_log
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            try:
                client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file)
            except (ssl.SSLError, OSError) as exc:
                files = ", ".join(p for p in (cfg.ca_file, cfg.cert_file, cfg.key_file) if p) or "system CAs"
                raise ValueError(f"mqtt TLS files could not be loaded ({files}): {exc}") from None
            if cfg.tls_insecure:
                client.tls_insecure_set(True)
                log.warning("MQTT TLS: the broker's host name is NOT verified (tls_insecure)")
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(cfg.max_inflight + 32)  # room for availability/discovery
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect in the background; never raises for an unreachable broker (it retries)."""
        if self._started:
            return
        self._started = True
        self._pump = threading.Thread(target=self._run_pump, name="maskwatch-mqtt-outbox", daemon=True)
        self._pump.start()
        log.info("MQTT: connecting to %s:%d as %s (topics under %s/)",
                 self.cfg.host, self.cfg.port, self.client_id, self.topics.prefix)
        try:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        except ValueError as exc:
            raise ValueError(f"mqtt host/port: {exc}") from None
        self._client.loop_start()

    # -- public API -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def status(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "queued": self._outbox.pending,
            "dropped": self._outbox.dropped,
            "delivered": self._outbox.acked,
            "last_error": self._last_error,
            "reconnects": self._reconnects,
            "connect_failures": self._failures,
            "snapshots_skipped": self._snapshots_skipped,
            "outbox": self._outbox.status,
        }

    def publish_event(self, event: Event | dict) -> None:
        """Queue one event (QoS 1, not retained) persistently; it is sent in order when possible.

        An :class:`Event` is already valid; a dict (hand-made, or received) is parsed first and
        raises ValueError naming the field if it breaks the schema.
        Raises :class:`~device.comms.outbox.OutboxWriteError` if it could not be written to disk (it is
        then sent from memory all the same).
        """
        payload = (event if isinstance(event, Event) else Event.from_dict(event)).to_json()
        try:
            self._outbox.append(self.topics.events, payload)
        finally:
            with self._cond:
                self._kick = True
                self._cond.notify()

    def publish_state(self, state: dict) -> None:
        """Publish the retained state; only the latest counts, so it is not queued."""
        payload = json.dumps(state, separators=(",", ":"), default=_plain)
        self._latest_state = payload
        if self._connected:
            self._client.publish(self.topics.state, payload, qos=0, retain=True)

    def publish_snapshot(self, jpeg: bytes) -> None:
        if not self._connected:
            self._snapshots_skipped += 1
            return
        self._client.publish(self.topics.snapshot, bytes(jpeg), qos=0, retain=False)

    def stop(self, clean: bool = True, flush_timeout: float = 5.0) -> None:
        """Stop. ``clean``: give the outbox up to ``flush_timeout`` s to drain (also while a
        connection is still coming up), publish retained ``stopped``, disconnect. Not clean:
        drop the connection without DISCONNECT, so the broker publishes the last will
        (``offline``). Undelivered events stay on disk for the next start either way."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            if clean:
                self._flush(flush_timeout)
                if self._connected:
                    info = self._client.publish(self.topics.availability, STOPPED, qos=1, retain=True)
                    try:
                        info.wait_for_publish(timeout=2.0)
                    except (ValueError, RuntimeError) as exc:
                        log.warning("MQTT: could not publish %r on %s: %s", STOPPED, self.topics.availability, exc)
                self._client.disconnect()
            else:
                sock = self._client.socket()
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            self._client.loop_stop()
            self._connected = False
            with self._cond:
                self._exit = True
                self._cond.notify()
            if self._pump is not None:
                self._pump.join(timeout=10)
        left = self._outbox.pending
        self._outbox.close()
        if left:
            log.warning("MQTT: %d events not yet acknowledged stay in %s for the next start",
                        left, self._outbox.log_path)
        log.info("MQTT: stopped (%s)", "clean" if clean else "without goodbye")

    # -- callbacks (paho network thread) --------------------------------------------------

    def _on_log(self, client, userdata, level, buf) -> None:
        if buf.startswith("Caught exception"):
            log.error("MQTT: %s", buf)  # a bug in one of our callbacks
            return
        if level == mqtt.MQTT_LOG_ERR and buf.startswith(("failed to receive", "timeout on socket")):
            self._socket_error = buf
        paho_log.debug("%s", buf)

    def _on_pre_connect(self, client, userdata) -> None:
        self._attempt_reported = False
        self._socket_error = None

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            hint = " (check username/password)" if reason_code.value in _BAD_CREDENTIALS else ""
            self._connect_failed(f"broker refused the connection: {reason_code}{hint}")
            return
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._connected = True
        self._connected_at = time.monotonic()
        failures, self._failures_since_ok = self._failures_since_ok, 0
        log.info("MQTT: connected to %s:%d%s", self.cfg.host, self.cfg.port,
                 f" after {failures} failed attempts" if failures else "")
        self._connect_log.forget()
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        if self._latest_state is not None:
            client.publish(self.topics.state, self._latest_state, qos=0, retain=True)
        if self.cfg.discovery:
            client.subscribe(self._ha_status, qos=1)
            self._publish_discovery()
        with self._cond:
            self._links.append(True)
            self._cond.notify()

    def _on_connect_fail(self, client, userdata) -> None:
        self._connect_failed(describe_connect_error(client.last_connect_error, self.cfg.host, self.cfg.port))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        with self._cond:
            self._links.append(False)
            self._cond.notify()
        if self._stopped:
            return
        reason = self._socket_error or str(reason_code)
        if was:
            if reason == "Unspecified error":  # what paho says when the socket just closed
                reason = "the broker closed the connection or the network failed"
            now = time.monotonic()
            if self._quick_drops.lost(now - self._connected_at, now) or reason_code.value == _SESSION_TAKEN_OVER:
                reason += (f"; the broker keeps closing the connection right after accepting it: "
                           f"another client with the same id {self.client_id!r}? (give each device its own device_id)")
            self._last_error = f"connection lost: {reason}"
            log.warning("MQTT: connection to %s:%d lost (%s); events wait in the outbox, reconnecting",
                        self.cfg.host, self.cfg.port, reason)
        elif not self._attempt_reported:
            # Dropped before CONNACK: typically TLS 1.3 telling us after the handshake that
            # it wanted a client certificate, or a broker closing on us.
            hint = " (the broker wants a client certificate: cert_file/key_file)" if "CERTIFICATE_REQUIRED" in reason else ""
            self._connect_failed(f"connection closed during the handshake: {reason}{hint}")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acks.append(mid)
            self._cond.notify()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self._ha_status and msg.payload.strip().lower() == b"online" and self.cfg.discovery:
            log.info("MQTT: Home Assistant is online: re-sending discovery")
            self._publish_discovery()

    def _connect_failed(self, reason: str) -> None:
        self._attempt_reported = True
        self._failures += 1
        self._failures_since_ok += 1
        self._last_error = reason
        suppressed = self._connect_log.allow(reason)  # keyed by the reason: the attempt count changes
        if suppressed is None:
            log.debug("MQTT: cannot connect to %s:%d: %s", self.cfg.host, self.cfg.port, reason)
            return
        more = f", {suppressed} more like it not logged" if suppressed else ""
        log.warning("MQTT: cannot connect to %s:%d: %s (attempt %d%s; retrying, at most every %g s)",
                    self.cfg.host, self.cfg.port, reason, self._failures_since_ok, more, self.cfg.reconnect_max_s)

    def _publish_discovery(self) -> None:
        for topic, payload in discovery.discovery_messages(
            device_id=self.device_id,
            device_name=self.device_name,
            availability_topic=self.topics.availability,
            state_topic=self.topics.state,
            events_topic=self.topics.events,
            discovery_prefix=self.cfg.discovery_prefix,
            model_info=self.model_info,
            labels=self.labels,
            alert_labels=self.alert_labels,
        ):
            self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=1, retain=True)

    # -- the pump (its own thread) --------------------------------------------------------

    def _run_pump(self) -> None:
        interval = self.cfg.outbox_sync_s if self.cfg.outbox_sync_s > 0 else 1.0
        next_sync = time.monotonic() + interval
        while True:
            with self._cond:
                if not (self._acks or self._links or self._kick or self._exit):
                    self._cond.wait(timeout=max(0.0, next_sync - time.monotonic()))
                acks, self._acks = self._acks, []
                links, self._links = self._links, []
                self._kick = False
                exiting = self._exit
            try:
                for up in links:
                    self._online = up
                    # paho re-sends what was in flight after a reconnect; wait for those first.
                    self._draining = up and bool(self._handed)
                for mid in acks:
                    seq = self._handed.pop(mid, None)
                    if seq is not None:
                        self._outbox.ack(seq)
                if self._draining and not self._handed:
                    self._draining = False
                if self._online and not self._draining and not exiting:
                    self._feed()
                if exiting or time.monotonic() >= next_sync:
                    self._outbox.sync()
                    next_sync = time.monotonic() + interval
            except Exception:  # keep the pump alive whatever happens; the outbox still holds everything
                log.exception("MQTT outbox pump error")
                time.sleep(0.5)
            if exiting:
                return

    def _feed(self) -> None:
        room = self.cfg.max_inflight - len(self._handed)
        if room <= 0:
            return
        for rec in self._outbox.take(room):
            info = self._client.publish(rec.topic, rec.payload, qos=1, retain=False)
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._handed[info.mid] = rec.seq  # NO_CONN: paho keeps it and sends it on reconnect
            else:
                log.error("MQTT: paho refused event %d (%s); it stays in the outbox for the next start",
                          rec.seq, mqtt.error_string(info.rc))

    def _flush(self, timeout: float) -> None:
        """Give the outbox up to ``timeout`` s to drain (a connection may still be coming up)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self._outbox.pending and time.monotonic() < deadline:
            time.sleep(0.02)
