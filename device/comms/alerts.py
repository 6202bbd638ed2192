"""``maskwatch-device alerts``: watch a broker and print maskwatch events as they arrive.

For a person at a terminal (one line per event) or a script (``--json``: one raw event per
line, nothing else on stdout). Status goes to stderr, so ``--json | jq`` stays clean.
``--count`` / ``--timeout`` make it exit: with ``--count N`` the exit status is 0 when N events
arrived and 1 when the timeout came first; with only ``--timeout`` it is 0.
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

DEFAULT_TOPIC = "maskwatch/+/events"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="broker host name or address")
    p.add_argument("--port", type=int, default=None, help="broker port (default 1883, or 8883 with --tls)")
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic filter (default {DEFAULT_TOPIC!r})")
    p.add_argument("--json", action="store_true", help="print each event as raw JSON, one per line")
    p.add_argument("--username", help="broker user name")
    p.add_argument("--password-file", type=Path, help="file whose first line is the password (not readable by every user)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca-file", type=Path, help="CA certificate that signed the broker's (with --tls)")
    p.add_argument("--cert-file", type=Path, help="client certificate (with --tls, if the broker wants one)")
    p.add_argument("--key-file", type=Path, help="client key (with --cert-file)")
    p.add_argument("--count", type=int, default=None, help="exit after this many events")
    p.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")


def format_event(event: dict) -> str:
    """One human line: local time, device, type, label, score, box, track."""
    try:
        when = datetime.fromtimestamp(float(event["frame_time"])).strftime("%Y-%m-%d %H:%M:%S")
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        when = "????-??-?? ??:??:??"
    score = event.get("score")
    score_s = f"{score:.2f}" if isinstance(score, (int, float)) else "?"
    box = event.get("box")
    box_s = "[" + ",".join(str(v) for v in box) + "]" if isinstance(box, list) else "?"
    return (
        f"{when}  {event.get('device_id', '?')}  {event.get('type', '?'):<6}  {event.get('label', '?'):<14}"
        f"  score {score_s}  box {box_s}  track {event.get('track_id', '?')}"
    )


def main(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from device.comms.mqtt import describe_connect_error
    from device.config import read_password_file

    if args.count is not None and args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    port = args.port or (8883 if args.tls else 1883)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"maskwatch-alerts-{uuid.uuid4().hex[:8]}")
    if args.username:
        try:
            password = read_password_file(args.password_file) if args.password_file else None
        except ValueError as exc:
            raise ValueError(f"--password-file: {exc}") from None
        client.username_pw_set(args.username, password)
    elif args.password_file:
        raise ValueError("--password-file needs --username")
    if args.tls:
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

    done = threading.Event()
    lock = threading.Lock()
    state = {"count": 0, "refused": None}

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            state["refused"] = str(reason_code)
            done.set()
            return
        c.subscribe(args.topic, qos=1)

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        if any(rc.is_failure for rc in reason_codes):
            state["refused"] = f"subscription to {args.topic!r} refused"
            done.set()
            return
        print(f"subscribed to {args.topic} on {args.host}:{port}", file=sys.stderr, flush=True)

    def on_message(c, userdata, msg):
        if done.is_set():
            return
        try:
            event = json.loads(msg.payload)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError):
            print(f"skipping a message on {msg.topic} that is not a JSON event", file=sys.stderr, flush=True)
            return
        with lock:
            line = json.dumps(event, separators=(",", ":")) if args.json else format_event(event)
            print(line, flush=True)
            state["count"] += 1
            if args.count is not None and state["count"] >= args.count:
                done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(args.host, port, keepalive=30)
    except OSError as exc:
        raise RuntimeError(f"cannot connect to {args.host}:{port}: {describe_connect_error(exc, args.host, port)}") from None
    client.loop_start()
    try:
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while not done.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            done.wait(timeout=0.5 if remaining is None else min(0.5, remaining))
    finally:
        client.disconnect()
        client.loop_stop()
    if state["refused"]:
        raise RuntimeError(f"{args.host}:{port}: {state['refused']}")
    if args.count is not None and state["count"] < args.count:
        print(f"timeout: {state['count']} of {args.count} events after {args.timeout} s", file=sys.stderr)
        return 1
    return 0
