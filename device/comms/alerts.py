"""``maskwatch-device alerts``: watch a broker and print maskwatch events as they arrive.

For a person at a terminal (one line per event) or a script (``--json``: one event per line,
nothing else on stdout). Status goes to stderr, so ``--json | jq`` stays clean.
``--count`` / ``--timeout`` make it exit: with ``--count N`` the exit status is 0 when N events
arrived and 1 when the timeout came first; with only ``--timeout`` it is 0.

Payloads are untrusted: anyone who may publish on the broker can send anything. Each one is
checked against the event schema (by :class:`~device.comms.events.Event`, the device's own
validator: the Pi has no ``jsonschema``) before it is printed; anything else is skipped with
one line on stderr and the watch goes on. Human output escapes control characters (``ESC``,
other C0/C1 controls, bidi overrides), so a payload cannot clear the screen, move the cursor
or retitle the terminal; ``--json`` output is plain JSON, whose own escaping does the same.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from device.comms.events import Event

DEFAULT_TOPIC = "maskwatch/+/events"
#: Longest reason printed for a skipped message (a hostile payload can make a huge one).
MAX_REASON_CHARS = 200


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="broker host name or address")
    p.add_argument("--port", type=int, default=None, help="broker port (default 1883, or 8883 with --tls)")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic filter (default {DEFAULT_TOPIC!r})")
    p.add_argument("--json", action="store_true", help="print each event as JSON, one per line")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", type=Path, help="file whose first line is the password (not readable by every user)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca-file", type=Path, help="CA certificate that signed the broker's (with --tls)")
    p.add_argument("--cert-file", type=Path, help="client certificate (with --tls, if the broker wants one)")
    p.add_argument("--key-file", type=Path, help="client key (with --cert-file)")
    p.add_argument("--count", type=int, default=None, help="exit after this many events")
    p.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")


# -- pure: checking and rendering one payload -------------------------------------------------


def escape_controls(text: str) -> str:
    """``text`` safe to show on a terminal: every non-printable character as an escape
    (``\\x1b``, ``\\x9b``, ``\\u202e``), everything else as it is."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def parse_event(payload: bytes) -> dict[str, Any]:
    """The event in a received payload, as sent; ValueError with a short reason if it is not
    valid JSON or breaks the event schema (deep nesting and huge numbers included)."""
    try:
        data = json.loads(payload)
    except RecursionError:
        raise ValueError("not an event: JSON nested too deeply") from None
    except ValueError as exc:  # also bad UTF-8 and integers past Python's digit limit
        raise ValueError(f"not JSON ({exc})") from None
    try:
        Event.from_dict(data)
    except RecursionError:  # repr() of a deeply nested value in the error message
        raise ValueError("not an event: a field is nested too deeply") from None
    return data


def format_event(event: dict) -> str:
    """One human line: local time, device, type, label, score, box, track; control characters
    escaped."""
    try:
        when = datetime.fromtimestamp(float(event["frame_time"])).strftime("%Y-%m-%d %H:%M:%S")
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        when = "????-??-?? ??:??:??"
    score = event.get("score")
    score_s = f"{score:.2f}" if isinstance(score, float) or type(score) is int else "?"
    box = event.get("box")
    box_s = "[" + ",".join(str(v) for v in box) + "]" if isinstance(box, list) else "?"
    line = (
        f"{when}  {event.get('device_id', '?')}  {event.get('type', '?')!s:<6}  {event.get('label', '?')!s:<14}"
        f"  score {score_s}  box {box_s}  track {event.get('track_id', '?')}"
    )
    return escape_controls(line)


def render(event: dict, as_json: bool) -> str:
    return json.dumps(event, separators=(",", ":")) if as_json else format_event(event)


def skip_line(topic: str, reason: str) -> str:
    """The one stderr line for a message that is not shown."""
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + "..."
    return f"skipping a message on {escape_controls(topic)}: {escape_controls(reason)}"


# -- the watch: paho's callbacks and what they share with the main thread ---------------------


class Watcher:
    """Subscribes once connected, prints each valid event, counts them, and says when done.

    The callbacks run in paho's network thread; an exception there would stop it for good
    (the command would then print nothing ever again), so ``on_message`` lets none escape.
    """

    def __init__(self, topic: str, as_json: bool, count: int | None, where: str):
        self.topic = topic
        self.as_json = as_json
        self.count = count
        self.where = where
        self.received = 0
        self.refused: str | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()

    def attach(self, client: Any) -> None:
        client.on_connect = self.on_connect
        client.on_subscribe = self.on_subscribe
        client.on_message = self.on_message

    def on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            self.done.set()
            return
        client.subscribe(self.topic, qos=1)

    def on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.refused = f"subscription to {self.topic!r} refused"
            self.done.set()
            return
        print(f"subscribed to {self.topic} on {self.where}", file=sys.stderr, flush=True)

    def on_message(self, client, userdata, msg) -> None:
        if self.done.is_set():
            return
        try:
            self.show(msg.topic, msg.payload)
        except Exception as exc:  # never let one message end the watch
            print(skip_line(msg.topic, f"cannot show it ({type(exc).__name__}: {exc})"), file=sys.stderr, flush=True)

    def show(self, topic: str, payload: bytes) -> None:
        try:
            event = parse_event(payload)
        except ValueError as exc:
            print(skip_line(topic, str(exc)), file=sys.stderr, flush=True)
            return
        with self._lock:
            print(render(event, self.as_json), flush=True)
            self.received += 1
            if self.count is not None and self.received >= self.count:
                self.done.set()

    def wait(self, timeout: float | None) -> None:
        """Until done (refused, or ``count`` events) or ``timeout`` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            self.done.wait(timeout=0.5 if remaining is None else min(0.5, remaining))


# -- the command --------------------------------------------------------------------------------


def _port(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    return args.port or (8883 if args.tls else 1883)


def _set_credentials(client: Any, args: argparse.Namespace) -> None:
    from device.config import read_password_file

    if args.username:
        try:
            password = read_password_file(args.password_file) if args.password_file else None
        except ValueError as exc:
            raise ValueError(f"--password-file: {exc}") from None
        client.username_pw_set(args.username, password)
    elif args.password_file:
        raise ValueError("--password-file needs --username")


def _set_tls(client: Any, args: argparse.Namespace) -> None:
    if not args.tls:
        return
    for flag, path in (("--ca-file", args.ca_file), ("--cert-file", args.cert_file), ("--key-file", args.key_file)):
        if path and not path.is_file():
            raise FileNotFoundError(f"{flag} not found: {path}")
    try:
        client.tls_set(
            ca_certs=str(args.ca_file) if args.ca_file else None,
            certfile=str(args.cert_file) if args.cert_file else None,
            keyfile=str(args.key_file) if args.key_file else None,
        )
    except ssl.SSLError as exc:
        raise ValueError(f"TLS files could not be loaded: {exc}") from None


def make_client(args: argparse.Namespace) -> Any:
    """A paho client with the credentials and TLS the arguments ask for (not yet connected)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"maskwatch-alerts-{uuid.uuid4().hex[:8]}")
    _set_credentials(client, args)
    _set_tls(client, args)
    return client


def _watch(client: Any, watcher: Watcher, host: str, port: int, timeout: float | None) -> None:
    from device.comms.mqtt import describe_connect_error

    watcher.attach(client)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise RuntimeError(f"cannot connect to {host}:{port}: {describe_connect_error(exc, host, port)}") from None
    client.loop_start()
    try:
        watcher.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def main(args: argparse.Namespace) -> int:
    port = _port(args)
    client = make_client(args)
    watcher = Watcher(args.topic, args.json, args.count, f"{args.host}:{port}")
    _watch(client, watcher, args.host, port, args.timeout)
    if watcher.refused:
        raise RuntimeError(f"{args.host}:{port}: {watcher.refused}")
    if args.count is not None and watcher.received < args.count:
        print(f"timeout: {watcher.received} of {args.count} events after {args.timeout} s", file=sys.stderr)
        return 1
    return 0
