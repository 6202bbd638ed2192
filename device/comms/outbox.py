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
  strictly increasing. Lines are never edited in place.
* ``events.acked``: the highest ``seq`` such that it and everything before it are done
  (acknowledged or dropped), written atomically (temp file + rename).
* ``lock``: an ``flock`` so two processes never share one outbox.

Durability:

* Every ``append`` is one ``write()`` into the kernel before it returns, so a crash or
  SIGKILL of the process loses nothing.
* ``fsync`` is batched: ``sync()`` (the publisher calls it every ``sync_interval_s``, default
  1 s, and on close) flushes the log when anything was appended. A power cut can therefore
  lose at most the last ``sync_interval_s`` of events; ``sync_interval_s=0`` fsyncs every
  append instead (safest, slowest on an SD card).
* The acked offset is written without fsync: after a power cut it can only be older than the
  truth, which re-delivers a few events (same ``event_id``: duplicates, never losses).
* A corrupt or truncated line (power cut mid-write) is skipped with a warning when the file is
  read; the file is then rewritten clean, so later appends never continue a broken line.
* The log is compacted (live records rewritten to a temp file, fsynced, renamed over) when the
  dead prefix is larger than both ``compact_bytes`` and the live part, so a busy device rewrites
  little and an idle one keeps a tiny file.

Bound: at most ``max_items`` unacknowledged events; a new one beyond that drops the oldest,
counted in :attr:`Outbox.dropped` (a week-long broker outage must not fill the SD card).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

try:  # flock exists on Linux/macOS (the Pi); elsewhere we run unlocked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOG_NAME = "events.jsonl"
ACK_NAME = "events.acked"
LOCK_NAME = "lock"
#: Corrupt lines reported one by one before the rest are only counted.
_MAX_CORRUPT_WARNINGS = 5


@dataclass(frozen=True)
class Record:
    seq: int
    topic: str
    payload: str
    size: int  # bytes of its line in the log


def _encode(seq: int, topic: str, payload: str) -> bytes:
    return (json.dumps({"seq": seq, "topic": topic, "payload": payload}, separators=(",", ":")) + "\n").encode()


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
        self._lock = threading.RLock()
        self._live: OrderedDict[int, Record] = OrderedDict()
        self._live_size = 0  # bytes of the live records' lines
        self._unsent: deque[Record] = deque()
        self.dropped = 0
        self.acked = 0
        self.corrupt_lines = 0
        self._dirty = False
        self._write_failed = False
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"cannot create the outbox folder {self.directory}: {exc.strerror}") from None
        self._lock_fh = self._take_lock()
        try:
            self._load()
            self._fh = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - lives with the outbox
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

    def append(self, topic: str, payload: str) -> int:
        """Persist one record (written to the kernel before returning); returns its seq."""
        with self._lock:
            self._check_open()
            seq = self._next_seq
            self._next_seq += 1
            data = _encode(seq, topic, payload)
            rec = Record(seq, topic, payload, len(data))
            self._write(data)
            self._add(rec)
            while len(self._live) > self.max_items:
                self._drop_oldest()
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
        """fsync the log if needed, persist the acked offset, compact when worthwhile."""
        with self._lock:
            if self._closed:
                return
            if self._dirty:
                self._fsync()
            self._write_offset()
            dead = self._file_bytes - self._live_size
            if dead >= self.compact_bytes and dead >= self._live_size:
                self._compact()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self.sync()
            finally:
                self._closed = True
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

    def _write(self, data: bytes) -> None:
        try:
            if self._write_failed:
                # A failed write may have left half a line: start a fresh one.
                data = b"\n" + data
            self._fh.write(data)
            self._file_bytes += len(data)
            self._write_failed = False
            self._dirty = True
        except OSError as exc:
            # Disk full or failing: keep the event in memory so it is still sent while we
            # run, and say so; crashing the daemon would lose more.
            if not self._write_failed:
                log.error("cannot write the outbox %s (%s): events are kept in memory only", self.log_path, exc)
            self._write_failed = True

    def _fsync(self) -> None:
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

    def _compact(self) -> None:
        tmp = self.log_path.with_name(self.log_path.name + ".tmp")
        written = 0
        try:
            with open(tmp, "wb") as f:
                for rec in self._live.values():
                    written += f.write(_encode(rec.seq, rec.topic, rec.payload))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.log_path)
            _fsync_dir(self.directory)
        except OSError as exc:
            log.error("cannot compact the outbox %s: %s", self.log_path, exc)
            return
        if hasattr(self, "_fh"):
            self._fh.close()
            self._fh = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - lives with the outbox
        self._file_bytes = written
        self._dirty = False
        self._write_failed = False
        log.debug("outbox %s compacted to %d events", self.log_path, len(self._live))

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

    def _load(self) -> None:
        offset = self._read_offset()
        self._saved_offset = offset
        last_seq = offset
        records: list[Record] = []
        file_bytes = 0
        corrupt = 0
        unterminated = False
        if self.log_path.exists():
            with open(self.log_path, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    file_bytes += len(raw)
                    if not raw.strip():
                        continue
                    # The last line may lack its newline (power cut); it still counts if intact.
                    unterminated = not raw.endswith(b"\n")
                    rec = _parse(raw)
                    if rec is not None and rec.seq <= offset:
                        continue  # acknowledged in an earlier run
                    if rec is None or rec.seq <= last_seq:  # unreadable, or out of sequence
                        corrupt += 1
                        if corrupt <= _MAX_CORRUPT_WARNINGS:
                            log.warning("outbox %s line %d is corrupt: skipped (%r)", self.log_path, lineno, raw[:60])
                        continue
                    records.append(rec)
                    last_seq = rec.seq
        if corrupt > _MAX_CORRUPT_WARNINGS:
            log.warning("outbox %s: %d corrupt lines skipped in all", self.log_path, corrupt)
        self.corrupt_lines = corrupt
        self._next_seq = last_seq + 1
        for rec in records:
            self._add(rec)
        overflow = len(self._live) - self.max_items
        if overflow > 0:
            for _ in range(overflow):
                self._remove(next(iter(self._live)))
            self.dropped += overflow
            log.warning(
                "outbox %s held %d events, more than queue_max %d: dropped the %d oldest",
                self.log_path, len(records), self.max_items, overflow,
            )
        self._file_bytes = file_bytes
        if self._live:
            log.info("outbox %s: %d undelivered events from an earlier run will be sent", self.log_path, len(self._live))
        if corrupt or unterminated:
            # Rewrite without the broken lines so appends start on a clean line.
            self._compact()


def _parse(raw: bytes) -> Record | None:
    try:
        obj = json.loads(raw)
        seq, topic, payload = obj["seq"], obj["topic"], obj["payload"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return None
    if not isinstance(topic, str) or not topic or not isinstance(payload, str):
        return None
    return Record(seq, topic, payload, len(raw))


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
