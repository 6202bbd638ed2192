"""The persistent outbox: events wait here on disk until the broker has acknowledged them.

Design (why not sqlite3): an event is appended once and deleted once, in order, by one
process. That is a log, not a database: an append-only JSON-lines file plus a small file
holding the acknowledged offset does exactly that with one sequential ``write()`` per event,
which is the cheapest thing an SD card can do, and a person can read both files with ``tail``
and ``cat`` when asking "what is still waiting?". sqlite3 would give the same guarantees but
rewrites pages and a journal/WAL for every insert and delete (several random 4 KiB writes per
event) and hides the queue in a binary file.

Files in ``directory``:

* ``events.jsonl``: one line per event, ``{"seq": N, "topic": ..., "payload": ...}``, ``seq``
  strictly increasing from line to line. Lines are never edited in place.
* ``events.acked``: the highest ``seq`` such that it and everything before it are done
  (acknowledged or dropped), written atomically (temp file + rename).
* ``events.jsonl.rejected``: lines that could not be trusted when the log was read, appended
  as they were, for a person to inspect (nothing is ever deleted from disk unseen).
* ``events.jsonl.unreadable-<UTC time>``: a log that could not be read at all (an SD card's
  I/O error, a directory in its place), moved aside as it was.
* ``lock``: an ``flock`` so two processes never share one outbox.

What ``seq`` means: the order of delivery is the order of the lines, and ``seq`` names a
record (for acknowledgement and for the acked offset). A healthy log has ``seq`` strictly
increasing line by line. When reading, the records kept are the longest run of lines whose
``seq`` increases (a longest increasing subsequence), so one damaged ``seq`` (a bit flip, a
hand edit) rejects that one line and never the lines around it; ties prefer the smaller
``seq``, since a too-high one is what would otherwise hide everything after it. Lines that do
not parse are rejected alone as well. Rejected lines are logged with their line numbers and
kept in ``events.jsonl.rejected``. Delivery stays in order and at least once: consumers drop
repeats by the event's ``event_id``.

Durability:

* Every ``append`` is one ``write()`` into the kernel before it returns, so a crash or
  SIGKILL of the process loses nothing.
* Writes are whole records or nothing: a short write (disk full, file-size limit) is cut back
  to where the record began, and ``append`` raises :class:`OutboxWriteError`; the event is
  then kept in memory (sent while the process runs, written to disk by the next ``sync`` that
  can) and the caller counts the failure.
* ``fsync`` is batched: ``sync()`` (the publisher calls it every ``sync_interval_s``, default
  1 s, and on close) flushes the log when anything was appended. A power cut can therefore
  lose at most the last ``sync_interval_s`` of events; ``sync_interval_s=0`` fsyncs every
  append instead (safest, slowest on an SD card).
* The acked offset is written without fsync: after a power cut it can only be older than the
  truth, which re-delivers a few events (same ``event_id``: duplicates, never losses).
* A torn last line (power cut mid-write) is rejected like any other untrusted line; the log
  is then rewritten with the records kept, so later appends never continue a broken line.
* The log is compacted (live records rewritten to a temp file, fsynced, renamed over) when the
  dead prefix is larger than both ``compact_bytes`` and the live part, so a busy device rewrites
  little and an idle one keeps a tiny file. Compaction only ever leaves out acknowledged,
  dropped or (already copied aside) rejected lines.
* A log that cannot be read is moved aside and a fresh one started (records read before the
  error are kept), so a failing file never stops the daemon; :attr:`Outbox.status` says so.

Bound: at most ``max_items`` unacknowledged events; a new one beyond that drops the oldest,
counted in :attr:`Outbox.dropped` (a week-long broker outage must not fill the SD card).
"""

from __future__ import annotations

import bisect
import errno
import json
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

try:  # flock exists on Linux/macOS (the Pi); elsewhere we run unlocked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOG_NAME = "events.jsonl"
ACK_NAME = "events.acked"
REJECTED_NAME = LOG_NAME + ".rejected"
UNREADABLE_PREFIX = LOG_NAME + ".unreadable-"
LOCK_NAME = "lock"
#: Seconds between tries to write records that are kept in memory after a failed write.
COMPACT_RETRY_S = 30.0
#: Rejected lines reported one by one before the rest are only counted.
_MAX_REJECT_WARNINGS = 5


class OutboxWriteError(OSError):
    """An appended record did not reach the disk; it is kept in memory only."""


@dataclass(frozen=True)
class Record:
    seq: int
    topic: str
    payload: str
    size: int  # bytes of its line in the log


@dataclass(frozen=True)
class Rejected:
    """A line of the log that is not delivered: why, and its bytes as they were."""

    lineno: int
    raw: bytes
    reason: str


def _encode(seq: int, topic: str, payload: str) -> bytes:
    return (json.dumps({"seq": seq, "topic": topic, "payload": payload}, separators=(",", ":")) + "\n").encode()


def _parse(raw: bytes) -> Record | None:
    try:
        obj = json.loads(raw)
        seq, topic, payload = obj["seq"], obj["topic"], obj["payload"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    if not isinstance(topic, str) or not topic or not isinstance(payload, str):
        return None
    return Record(seq, topic, payload, len(raw))


def increasing_run(seqs: Sequence[int]) -> set[int]:
    """Indices of a longest strictly increasing subsequence of ``seqs``.

    Among equally long ones it ends on the smallest values (patience sorting), so of ``1, 9, 3``
    it keeps ``1, 3``: a ``seq`` that jumped up is the one left out; of equal values it keeps
    the earliest (``1, 2, 2, 4`` keeps the first 2). O(n log n).
    """
    tails: list[int] = []  # tails[k]: smallest last value of an increasing run of length k+1
    tail_index: list[int] = []  # index in seqs of that value
    parent = [-1] * len(seqs)
    for i, s in enumerate(seqs):
        k = bisect.bisect_left(tails, s)
        parent[i] = tail_index[k - 1] if k else -1
        if k == len(tails):
            tails.append(s)
            tail_index.append(i)
        elif tails[k] > s:
            tails[k] = s
            tail_index[k] = i
    keep: set[int] = set()
    i = tail_index[-1] if tail_index else -1
    while i >= 0:
        keep.add(i)
        i = parent[i]
    return keep


def select_records(lines: Sequence[tuple[int, bytes]]) -> tuple[list[Record], list[Rejected]]:
    """Split the log's (line number, bytes) into the records to trust, in order, and the rest."""
    parsed: list[tuple[int, bytes, Record]] = []
    rejected: list[Rejected] = []
    for lineno, raw in lines:
        rec = _parse(raw)
        if rec is None:
            rejected.append(Rejected(lineno, raw, "not a complete record"))
        else:
            parsed.append((lineno, raw, rec))
    keep = increasing_run([rec.seq for _, _, rec in parsed])
    records = []
    for i, (lineno, raw, rec) in enumerate(parsed):
        if i in keep:
            records.append(rec)
        else:
            rejected.append(Rejected(lineno, raw, f"seq {rec.seq} out of order"))
    rejected.sort(key=lambda r: r.lineno)
    return records, rejected


@dataclass
class _LogText:
    """What reading the log gave: its non-blank lines numbered from 1, its size, whether the
    last line lacks its newline, and the error that stopped the reading (lines before it kept)."""

    lines: list[tuple[int, bytes]] = field(default_factory=list)
    size: int = 0
    unterminated: bool = False
    error: OSError | None = None


class Outbox:
    """Ordered, bounded, persistent FIFO of (topic, payload) with out-of-order acknowledgement.

    ``append`` adds, ``take`` hands the next records to the sender (each once per process),
    ``ack`` removes one for good. Thread-safe.
    """

    def __init__(
        self,
        directory: Path,
        max_items: int = 10000,
        sync_interval_s: float = 1.0,
        compact_bytes: int = 256 * 1024,
    ):
        if max_items < 1:
            raise ValueError(f"outbox max_items must be >= 1, got {max_items}")
        self.directory = Path(directory)
        self.max_items = int(max_items)
        self.sync_interval_s = float(sync_interval_s)
        self.compact_bytes = int(compact_bytes)
        self.log_path = self.directory / LOG_NAME
        self.ack_path = self.directory / ACK_NAME
        self.rejected_path = self.directory / REJECTED_NAME
        self._lock = threading.RLock()
        self._live: OrderedDict[int, Record] = OrderedDict()
        self._live_size = 0  # bytes of the live records' lines
        self._unsent: deque[Record] = deque()
        self._memory_only: set[int] = set()  # live seqs whose write failed
        self.dropped = 0
        self.acked = 0
        #: Lines of the log not trusted at start (kept in ``events.jsonl.rejected``).
        self.rejected_lines = 0
        #: Where an unreadable log was moved at start, if it was.
        self.set_aside: Path | None = None
        self.write_errors = 0
        #: The latest problem with the files (kept after it is over; see ``status``).
        self.last_error: str | None = None
        self._fh: BinaryIO | None = None
        self._file_bytes = 0
        self._needs_newline = False  # the log may end in a torn line we could not cut off
        self._compact_failing = False
        self._write_failing = False
        self._retry_at = 0.0  # monotonic time of the next try to write records kept in memory
        self._dirty = False
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"cannot create the outbox folder {self.directory}: {exc.strerror}") from None
        self._lock_fh = self._take_lock()
        try:
            self._load()
            if self._fh is None:
                self._fh = self._open_log()
        except BaseException:
            self._lock_fh.close()
            raise

    # -- public ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events not yet acknowledged (in flight or waiting)."""
        return len(self._live)

    def __len__(self) -> int:
        return len(self._live)

    @property
    def waiting(self) -> int:
        """Events not yet handed to the sender in this process."""
        return len(self._unsent)

    @property
    def status(self) -> dict[str, Any]:
        """Problems with the files, for the retained ``state`` message (via the publisher)."""
        return {
            "rejected_lines": self.rejected_lines,
            "set_aside": str(self.set_aside) if self.set_aside else None,
            "write_errors": self.write_errors,
            "memory_only": len(self._memory_only),
            "last_error": self.last_error,
        }

    def append(self, topic: str, payload: str) -> int:
        """Queue one record, written to the kernel before returning; returns its seq.

        Raises :class:`OutboxWriteError` when the write failed: the record is then queued in
        memory only (sent while this process runs, persisted by a later ``sync`` if it can).
        """
        with self._lock:
            self._check_open()
            seq = self._next_seq
            self._next_seq += 1
            data = _encode(seq, topic, payload)
            rec = Record(seq, topic, payload, len(data))
            failure = self._write(data)
            self._add(rec)
            if failure is not None:
                self._memory_only.add(seq)
            while len(self._live) > self.max_items:
                self._drop_oldest()
            if failure is not None:
                raise OutboxWriteError(
                    f"outbox {self.log_path}: event kept in memory only, not on disk ({failure})"
                )
            if self.sync_interval_s <= 0:
                self._fsync()
            return seq

    def take(self, n: int) -> list[Record]:
        """The next ``n`` records not yet taken, oldest first."""
        with self._lock:
            out = []
            while self._unsent and len(out) < n:
                rec = self._unsent.popleft()
                if rec.seq in self._live:
                    out.append(rec)
            return out

    def ack(self, seq: int) -> None:
        """The broker has it: forget it (unknown or dropped seqs are ignored)."""
        with self._lock:
            if self._remove(seq) is not None:
                self.acked += 1

    def sync(self) -> None:
        """fsync the log if needed, persist the acked offset, compact when worthwhile (or when
        records are waiting in memory after a failed write)."""
        with self._lock:
            if self._closed:
                return
            if self._dirty:
                self._fsync()
            self._write_offset()
            dead = self._file_bytes - self._live_size
            worthwhile = dead >= self.compact_bytes and dead >= self._live_size
            overdue = bool(self._memory_only) and time.monotonic() >= self._retry_at
            if worthwhile or overdue:
                self._compact()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self.sync()
            finally:
                self._closed = True
                if self._fh is not None:
                    self._fh.close()
                self._lock_fh.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"outbox {self.directory} is closed")

    def _take_lock(self):
        fh = open(self.directory / LOCK_NAME, "a+")  # noqa: SIM115 - held for the outbox's life
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise RuntimeError(
                    f"outbox {self.directory} is in use by another process (lock {self.directory / LOCK_NAME})"
                ) from None
        return fh

    def _open_log(self) -> BinaryIO | None:
        """The log for appending, or None (then every record stays in memory, and says so)."""
        try:
            return open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - lives with the outbox
        except OSError as exc:
            self._error(f"cannot open the outbox {self.log_path} ({exc.strerror or exc}): "
                        "events are kept in memory only")
            return None

    def _error(self, message: str) -> None:
        self.last_error = message
        log.error("%s", message)

    def _offset(self) -> int:
        """Everything at or below this seq is done."""
        if self._live:
            return next(iter(self._live)) - 1
        return self._next_seq - 1

    def _add(self, rec: Record) -> None:
        self._live[rec.seq] = rec
        self._live_size += rec.size
        self._unsent.append(rec)

    def _remove(self, seq: int) -> Record | None:
        rec = self._live.pop(seq, None)
        if rec is not None:
            self._live_size -= rec.size
            self._memory_only.discard(seq)
            # Only the oldest live record can still be waiting at the front (it is dropped).
            if self._unsent and self._unsent[0].seq == seq:
                self._unsent.popleft()
        return rec

    def _drop_oldest(self) -> None:
        self._remove(next(iter(self._live)))
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning(
                "outbox %s is full (%d events): dropped the oldest (%d dropped so far)",
                self.directory, self.max_items, self.dropped,
            )

    def _write(self, data: bytes) -> str | None:
        """Append one whole record, or nothing: returns None, or why it is not on disk."""
        if self._fh is None:
            self.write_errors += 1
            return "the log could not be opened"
        fd = self._fh.fileno()
        if self._needs_newline:
            data = b"\n" + data  # never continue a torn line we could not cut off
        start = written = 0
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            view = memoryview(data)
            while written < len(data):
                n = os.write(fd, view[written:])
                if n <= 0:  # pragma: no cover - regular files fail with an errno instead
                    raise OSError(errno.EIO, "write returned 0")
                written += n  # a short write (disk full, size limit) is retried: the retry fails
        except OSError as exc:
            return self._write_failed(fd, start, written, exc)
        if self._write_failing:
            self._write_failing = False
            log.info("outbox %s: writing works again", self.log_path)
        self._needs_newline = False
        self._file_bytes = start + written
        self._dirty = True
        return None

    def _write_failed(self, fd: int, start: int, written: int, exc: OSError) -> str:
        """Cut a partly written record back off the log, count and report the failure."""
        if written:
            try:
                os.ftruncate(fd, start)
            except OSError as trunc_exc:
                # The torn line stays; the reader rejects it alone, the next append starts a line.
                self._needs_newline = True
                log.error("cannot cut a torn record off the outbox %s: %s", self.log_path, trunc_exc)
        self.write_errors += 1
        reason = exc.strerror or str(exc)
        if not self._write_failing:  # once per run of failures, not once per event
            self._write_failing = True
            self._error(f"cannot write the outbox {self.log_path} ({reason}): events are kept in memory "
                        "until it can be written")
        return reason

    def _fsync(self) -> None:
        if self._fh is None:
            return
        try:
            os.fsync(self._fh.fileno())
            self._dirty = False
        except OSError as exc:
            log.error("cannot fsync the outbox %s: %s", self.log_path, exc)

    def _write_offset(self) -> None:
        offset = self._offset()
        if offset == self._saved_offset:
            return
        tmp = self.ack_path.with_name(self.ack_path.name + ".tmp")
        try:
            tmp.write_text(f"{offset}\n", encoding="ascii")
            os.replace(tmp, self.ack_path)
            self._saved_offset = offset
        except OSError as exc:
            log.error("cannot write the outbox offset %s: %s", self.ack_path, exc)

    def _compact(self) -> bool:
        """Rewrite the log with the live records only (also those kept in memory so far)."""
        tmp = self.log_path.with_name(self.log_path.name + ".tmp")
        written = 0
        try:
            try:
                with open(tmp, "wb") as f:
                    for rec in self._live.values():
                        written += f.write(_encode(rec.seq, rec.topic, rec.payload))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.log_path)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(self.directory)
            fh = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - lives with the outbox
        except OSError as exc:
            # Retried at most every COMPACT_RETRY_S for records kept in memory; logged once.
            self._retry_at = time.monotonic() + COMPACT_RETRY_S
            if not self._compact_failing:
                log.error("cannot compact the outbox %s: %s", self.log_path, exc)
            self._compact_failing = True
            return False
        self._compact_failing = False
        if self._fh is not None:
            self._fh.close()
        self._fh = fh
        self._file_bytes = written
        self._dirty = False
        self._needs_newline = False
        if self._memory_only:
            log.info("outbox %s: %d events kept in memory are on disk now", self.log_path, len(self._memory_only))
            self._memory_only.clear()
        log.debug("outbox %s compacted to %d events", self.log_path, len(self._live))
        return True

    def _read_offset(self) -> int:
        try:
            text = self.ack_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("outbox offset %s unreadable (%s): re-sending everything in the log", self.ack_path, exc)
            return 0
        try:
            return max(0, int(text))
        except ValueError:
            log.warning("outbox offset %s is corrupt (%r): re-sending everything in the log", self.ack_path, text[:40])
            return 0

    def _read_log(self) -> _LogText:
        """The log as far as it can be read (a read error is returned, not raised)."""
        text = _LogText()
        try:
            with open(self.log_path, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    text.size += len(raw)
                    if raw.strip():
                        text.lines.append((lineno, raw))
                    text.unterminated = not raw.endswith(b"\n")
        except FileNotFoundError:
            pass
        except OSError as exc:
            text.error = exc
        return text

    def _move_aside(self, exc: OSError) -> None:
        """An unreadable log: keep it for inspection under another name, start a fresh one."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        reason = exc.strerror or str(exc)
        for n in range(100):
            dest = self.directory / f"{UNREADABLE_PREFIX}{stamp}{f'-{n}' if n else ''}"
            if not os.path.lexists(dest):
                break
        try:
            os.rename(self.log_path, dest)
        except OSError as mv_exc:
            self._error(f"the outbox {self.log_path} is unreadable ({reason}) and cannot be moved aside "
                        f"({mv_exc.strerror or mv_exc}): events are kept in memory only")
            return
        self.set_aside = dest
        self._error(f"the outbox {self.log_path} was unreadable ({reason}): moved aside to {dest} "
                    "for inspection, started a fresh one")

    def _keep_rejected(self, rejected: Sequence[Rejected]) -> bool:
        """Append rejected lines to ``events.jsonl.rejected`` (fsynced); False if that failed."""
        try:
            with open(self.rejected_path, "ab") as f:
                for r in rejected:
                    f.write(r.raw if r.raw.endswith(b"\n") else r.raw + b"\n")
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError as exc:
            log.error("cannot keep the rejected outbox lines in %s (%s): the log is left as it is",
                      self.rejected_path, exc.strerror or exc)
            return False

    def _load(self) -> None:
        offset = self._read_offset()
        self._saved_offset = offset
        text = self._read_log()
        if text.error is not None:
            self._move_aside(text.error)
        records, rejected = select_records(text.lines)
        for n, r in enumerate(rejected):
            if n < _MAX_REJECT_WARNINGS:
                log.warning("outbox %s line %d rejected (%s): %r", self.log_path, r.lineno, r.reason, r.raw[:60])
        if len(rejected) > _MAX_REJECT_WARNINGS:
            log.warning("outbox %s: %d lines rejected in all", self.log_path, len(rejected))
        if rejected:
            log.warning("outbox %s: the rejected lines are kept in %s", self.log_path, self.rejected_path)
        self.rejected_lines = len(rejected)
        self._file_bytes = text.size
        live = [rec for rec in records if rec.seq > offset]  # the rest was acknowledged earlier
        self._next_seq = max([offset, *(rec.seq for rec in records)]) + 1
        for rec in live:
            self._add(rec)
        overflow = len(self._live) - self.max_items
        if overflow > 0:
            for _ in range(overflow):
                self._remove(next(iter(self._live)))
            self.dropped += overflow
            log.warning(
                "outbox %s held %d events, more than queue_max %d: dropped the %d oldest",
                self.log_path, len(live), self.max_items, overflow,
            )
        if self._live:
            log.info("outbox %s: %d undelivered events from an earlier run will be sent", self.log_path, len(self._live))
        if text.error is not None:
            # The fresh log, with whatever was read before the error; what it cannot take
            # stays in memory and is written by a later sync.
            self._memory_only.update(self._live)
            if self.set_aside is not None:
                self._compact()
            return
        if rejected and not self._keep_rejected(rejected):
            self._needs_newline = text.unterminated
            return
        if (rejected or text.unterminated) and not self._compact():
            # Rewriting with the records kept failed: at least start appends on a clean line.
            self._needs_newline = text.unterminated


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
