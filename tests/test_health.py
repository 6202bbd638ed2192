"""systemd notify over a real unix datagram socket, the frame-gated watchdog, rate-limited logs."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from device.health import Notifier, Watchdog
from device.ratelimit import RateLimitedLog


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket standing in for systemd; yields (address for NOTIFY_SOCKET, socket)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, without blocking for more."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return out


def test_notifier_sends_the_protocol_messages(notify_socket):
    address, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": address})
    assert n.enabled and n.watchdog_interval_s is None
    n.ready("camera ok,\nmodel loaded")
    n.status("3 people")
    n.watchdog()
    n.extend_timeout(30)
    n.stopping()
    n.close()
    assert received(sock) == [
        "READY=1\nSTATUS=camera ok, model loaded",  # a newline would end the STATUS value early
        "STATUS=3 people",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=30000000",
        "STOPPING=1",
    ]


def test_notifier_handles_the_abstract_namespace():
    name = f"maskwatch-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_notifier_is_a_no_op_outside_systemd():
    n = Notifier({})
    assert not n.enabled
    n.ready("x")
    n.watchdog()  # nothing to assert but that it does not fail: there is nowhere to send to
    assert not Watchdog(n, 5.0).tick(0.1)


def test_a_vanished_socket_is_logged_not_raised(tmp_path, caplog):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING, logger="device.health"):
        n.ready()
        n.status("again")
    assert sum("systemd notify" in r.getMessage() for r in caplog.records) == 1  # rate limited


def test_watchdog_interval_comes_from_watchdog_usec_for_this_process_only(notify_socket):
    address, _ = notify_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000000"}
    assert Notifier(env).watchdog_interval_s == 20.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 20.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval_s is None
    assert Notifier({**env, "WATCHDOG_USEC": "junk"}).watchdog_interval_s is None


def test_watchdog_is_fed_only_while_frames_are_fresh(notify_socket):
    address, sock = notify_socket
    clock = FakeClock()
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())})
    wd = Watchdog(n, max_frame_age_s=3.0, clock=clock)
    assert wd.tick(0.1)  # fresh frames: feed
    assert received(sock) == ["WATCHDOG=1"]
    clock.t += 1.0
    assert not wd.tick(0.1)  # fresh, but fed 1 s ago (rate limit: half of 10 s)
    clock.t += 5.0
    assert wd.tick(0.2)
    assert received(sock) == ["WATCHDOG=1"]
    for _ in range(5):  # the camera froze: no feeding, however long we wait
        clock.t += 6.0
        assert not wd.tick(10.0)
    assert not wd.tick(None)  # no frame yet at all
    assert received(sock) == []
    clock.t += 6.0
    assert wd.tick(0.05)  # frames are back
    assert received(sock) == ["WATCHDOG=1"]


def test_rate_limited_log_counts_repeats(caplog):
    clock = FakeClock()
    logger = logging.getLogger("test.ratelimit")
    rl = RateLimitedLog(logger, interval_s=60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        assert rl.error("camera %s unplugged", "usb0")
        for _ in range(9):
            assert not rl.error("camera %s unplugged", "usb0")
        assert rl.warning("something else")  # a different message is not held back
        clock.t += 61
        assert rl.error("camera %s unplugged", "usb0")
        assert not rl.error("camera %s unplugged", "usb0")
        rl.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "camera usb0 unplugged",
        "something else",
        "camera usb0 unplugged (repeated 9 times)",
        "camera usb0 unplugged (repeated 1 times)",
    ]
    assert [r.levelno for r in caplog.records][:2] == [logging.ERROR, logging.WARNING]


def test_rate_limited_log_by_a_key_of_the_callers_own():
    """A message whose text changes (an attempt count) is held back by its key; forget() starts afresh."""
    clock = FakeClock()
    rl = RateLimitedLog(logging.getLogger("test.ratelimit"), interval_s=60.0, clock=clock)
    assert rl.allow("refused") == 0
    assert rl.allow("refused") is None and rl.allow("refused") is None
    assert rl.allow("timed out") == 0  # another reason gets through at once
    clock.t += 60
    assert rl.allow("refused") == 2  # let through again, with the count of those held back
    rl.forget()
    assert rl.allow("refused") == 0
