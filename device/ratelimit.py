"""Rate-limited logging, written once for every repeated complaint of the daemon.

A camera unplugged at night, a broker that is down or a full disk would otherwise write the same
line many times a second until the SD card is full. Everything that may repeat itself goes
through :class:`RateLimitedLog`: the first occurrence is logged, repeats within ``interval_s``
are counted, and the next line that gets through says how many were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class RateLimitedLog:
    """Log a repeated message once per ``interval_s``, then with "(repeated N times)".

    Messages are the same when their formatted text is (:meth:`log`), or when the caller says so
    by a key of its own (:meth:`allow`, for a message whose text carries a changing count).
    """

    def __init__(self, logger: logging.Logger | None = None, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 256):
        self.logger = logger or log
        self.interval_s = float(interval_s)
        self.clock = clock
        self.max_keys = max_keys
        self._seen: OrderedDict[Hashable, list] = OrderedDict()  # key -> [last_logged, suppressed]
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> int | None:
        """None when ``key`` was let through less than ``interval_s`` ago (counted as suppressed);
        otherwise how many were suppressed since it last got through (it gets through now)."""
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.interval_s:
                entry[1] += 1
                return None
            suppressed = entry[1] if entry is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        return suppressed

    def forget(self) -> None:
        """Start afresh (e.g. after a recovery): the next occurrence of anything is logged at once."""
        with self._lock:
            self._seen.clear()

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log now, or count the message as suppressed; True when it was written."""
        text = msg % args if args else msg
        suppressed = self.allow((level, text))
        if suppressed is None:
            return False
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
        for key, n in pending:
            if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], int):
                level, text = key
                self.logger.log(level, "%s (repeated %d times)", text, n)
