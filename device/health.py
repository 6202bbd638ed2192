"""Tell systemd how the daemon is doing, without a dependency on libsystemd or python-systemd.

The notify protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Outside systemd the
variable is unset and every call is a no-op, so the daemon needs no "am I under systemd?" code.

The watchdog is fed only while frames flow (:class:`Watchdog`): a daemon whose camera froze is
alive but useless, and systemd's ``WatchdogSec=`` should restart it. Notification failures are
logged (rate limited, :class:`device.ratelimit.RateLimitedLog`) and never raised: health
reporting must not take the daemon down.

Additions to the shared API: ``Notifier.extend_timeout(seconds)`` (``EXTEND_TIMEOUT_USEC``,
for slow starts such as loading a model from an SD card), ``Notifier.close()``, the ``clock``
argument of :class:`Watchdog`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from device.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)


class Notifier:
    """``sd_notify`` for the daemon; ``enabled`` is False (and calls do nothing) outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.enabled = bool(address)
        self.watchdog_interval_s = _watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._errors = RateLimitedLog(log, interval_s=300.0)

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for more time to start/stop (it would otherwise kill a slow start)."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, message: str) -> bool:
        if not self.enabled:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(message.encode("utf-8"), self.address)
                return True
            except OSError as exc:
                shown = self.address.replace("\0", "@")
                self._errors.warning("systemd notify to %s failed: %s", shown, exc)
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """WatchdogSec= as seconds, if the watchdog is enabled for THIS process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


class Watchdog:
    """Feed systemd's watchdog only while frames are fresh (at most every half interval)."""

    def __init__(self, notifier: Notifier, max_frame_age_s: float, clock: Callable[[], float] = time.monotonic):
        if max_frame_age_s <= 0:
            raise ValueError(f"max_frame_age_s must be > 0, got {max_frame_age_s!r}")
        self.notifier = notifier
        self.max_frame_age_s = float(max_frame_age_s)
        self.clock = clock
        self._last_sent: float | None = None

    @property
    def active(self) -> bool:
        return self.notifier.enabled and self.notifier.watchdog_interval_s is not None

    def tick(self, last_frame_age_s: float | None) -> bool:
        """Send WATCHDOG=1 if frames are fresh and half an interval passed; True when sent."""
        if not self.active or last_frame_age_s is None or last_frame_age_s > self.max_frame_age_s:
            return False
        now = self.clock()
        if self._last_sent is not None and now - self._last_sent < self.notifier.watchdog_interval_s / 2:
            return False
        self.notifier.watchdog()
        self._last_sent = now
        return True
