"""Tell systemd how the daemon is doing, without a dependency on libsystemd or python-systemd.

The notify protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named in
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Outside systemd the
variable is unset and every call is a no-op, so the daemon needs no "am I under systemd?" code.

The watchdog is fed only while frames flow (:class:`Watchdog`): a daemon whose camera froze is
alive but useless, and systemd's ``WatchdogSec=`` should restart it. Notification failures are
logged (rate limited) and never raised: health reporting must not take the daemon down.

Additions to the shared API: ``Notifier.extend_timeout(seconds)`` (``EXTEND_TIMEOUT_USEC``,
for slow starts such as loading a model from an SD card), ``Notifier.close()``, the ``clock``
argument of :class:`Watchdog` and :class:`RateLimitedLog`, and :meth:`RateLimitedLog.flush`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class RateLimitedLog:
    """Log a repeated identical message once per ``interval_s``, then with "(repeated N times)".

    A camera unplugged at night would otherwise write the same error 15 times a second until
    the SD card is full. Messages are identical when their formatted text is.
    """

    def __init__(self, logger: logging.Logger | None = None, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 256):
        self.logger = logger or log
        self.interval_s = float(interval_s)
        self.clock = clock
        self.max_keys = max_keys
        self._seen: OrderedDict[tuple[int, str], list] = OrderedDict()  # key -> [last_logged, suppressed]
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log now, or count the message as suppressed; True when it was written."""
        text = msg % args if args else msg
        key = (level, text)
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.interval_s:
                entry[1] += 1
                return False
            suppressed = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if suppressed:
            self.logger.log(level, "%s (repeated %d times)", text, suppressed)
        else:
            self.logger.log(level, "%s", text)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)

    def flush(self) -> None:
        """Write the counts of messages suppressed since they were last logged (e.g. at shutdown)."""
        with self._lock:
            pending = [(k, e[1]) for k, e in self._seen.items() if e[1]]
            self._seen.clear()
        for (level, text), n in pending:
            self.logger.log(level, "%s (repeated %d times)", text, n)


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
