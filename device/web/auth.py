"""Who may use the page: one password, sessions in a cookie, a CSRF token per session, a login rate limit.

The password is the first line of ``web.password_file`` (read by
:func:`device.config.read_password_file`, the same rules as the broker's). A successful login
gets a random session id (HttpOnly, SameSite=Strict cookie) and a random CSRF token the page
sends back in the ``X-CSRF-Token`` header of every POST. The login form itself is protected by
a double-submit token (a cookie plus the same value in the form). Failed logins are limited per
client address (``LoginLimiter``), so a password cannot be guessed at network speed.

Everything is in memory: a restart logs everyone out, which is what a device at a door wants.
Pure of I/O and clocks (times are passed in), so the rules are unit tests.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import deque
from dataclasses import dataclass

SESSION_COOKIE = "maskwatch_session"
LOGIN_CSRF_COOKIE = "maskwatch_login"
CSRF_HEADER = "X-CSRF-Token"
#: A session lasts this long after its last use.
SESSION_IDLE_S = 12 * 3600.0
MAX_SESSIONS = 64


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets (hashes first, so lengths leak nothing either)."""
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    sid: str
    csrf: str
    last_used: float


class Sessions:
    """The logged-in sessions; at most :data:`MAX_SESSIONS` (the oldest goes first)."""

    def __init__(self, idle_s: float = SESSION_IDLE_S):
        self.idle_s = idle_s
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, now: float) -> Session:
        s = Session(new_token(), new_token(), now)
        with self._lock:
            self._drop_expired(now)
            while len(self._by_id) >= MAX_SESSIONS:
                del self._by_id[min(self._by_id.values(), key=lambda x: x.last_used).sid]
            self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None, now: float) -> Session | None:
        """The live session with this id (its idle time restarts), or None."""
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is None or now - s.last_used > self.idle_s:
                self._by_id.pop(sid, None)
                return None
            s.last_used = now
            return s

    def end(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)

    def _drop_expired(self, now: float) -> None:
        for sid in [k for k, s in self._by_id.items() if now - s.last_used > self.idle_s]:
            del self._by_id[sid]


class LoginLimiter:
    """At most ``attempts`` failed logins per client address within ``window_s``; then wait."""

    def __init__(self, attempts: int = 5, window_s: float = 60.0, max_clients: int = 1024):
        self.attempts = attempts
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.attempts:
                return 0.0
            return max(0.0, times[0] + self.window_s - now)

    def failed(self, client: str, now: float) -> None:
        with self._lock:
            if client not in self._failures and len(self._failures) >= self.max_clients:
                # Bounded memory: forget the client whose last failure is oldest.
                oldest = min(self._failures, key=lambda c: self._failures[c][-1] if self._failures[c] else 0.0)
                del self._failures[oldest]
            self._recent(client, now).append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times
