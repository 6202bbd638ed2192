"""The persistent outbox on real files: order, acknowledgement, bound, corruption, crashes."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.comms.outbox import ACK_NAME, LOG_NAME, REJECTED_NAME, UNREADABLE_PREFIX, Outbox, increasing_run

ROOT = Path(__file__).resolve().parents[1]


def payloads(records) -> list[str]:
    return [r.payload for r in records]


def test_reopen_keeps_unacked_in_order_and_seq_grows(tmp_path):
    with Outbox(tmp_path, max_items=100) as ob:
        seqs = [ob.append("t/events", f"e{i}") for i in range(10)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10
        taken = ob.take(4)
        assert payloads(taken) == ["e0", "e1", "e2", "e3"]
        assert payloads(ob.take(2)) == ["e4", "e5"]  # never the same record twice
        for rec in taken:
            ob.ack(rec.seq)
        assert ob.pending == 6 and ob.acked == 4
    assert (tmp_path / ACK_NAME).read_text().strip() == str(seqs[3])
    with Outbox(tmp_path, max_items=100) as ob:
        # e4, e5 were handed out but never acknowledged: they come back.
        assert ob.pending == 6
        assert payloads(ob.take(100)) == [f"e{i}" for i in range(4, 10)]
        assert ob.append("t/events", "later") > seqs[-1]


def test_out_of_order_ack_only_advances_the_contiguous_offset(tmp_path):
    with Outbox(tmp_path) as ob:
        s = [ob.append("t", f"e{i}") for i in range(5)]
        ob.take(5)
        ob.ack(s[2])
        ob.ack(s[0])
        ob.sync()
        assert (tmp_path / ACK_NAME).read_text().strip() == str(s[0])
        assert ob.pending == 3
    with Outbox(tmp_path) as ob:
        # e2 was acknowledged out of order; re-delivering it is a duplicate, not a loss.
        assert payloads(ob.take(10)) == ["e1", "e2", "e3", "e4"]


def test_bound_drops_oldest_and_counts(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="device.comms.outbox"), Outbox(tmp_path, max_items=5) as ob:
        for i in range(3):
            ob.append("t", f"e{i}")
        inflight = ob.take(2)  # e0, e1 handed to the sender
        for i in range(3, 12):
            ob.append("t", f"e{i}")
        assert ob.pending == 5 and ob.dropped == 7
        assert payloads(ob.take(100)) == [f"e{i}" for i in range(7, 12)]
        for rec in inflight:
            ob.ack(rec.seq)  # acks of dropped records are ignored
        assert ob.pending == 5 and ob.acked == 0
    assert "full" in caplog.text
    with Outbox(tmp_path, max_items=3) as ob:
        # A smaller bound at start keeps the newest.
        assert ob.dropped == 2
        assert payloads(ob.take(100)) == ["e9", "e10", "e11"]


def test_corrupt_and_truncated_lines_are_rejected_alone_and_kept_aside(tmp_path, caplog):
    good = [json.dumps({"seq": i, "topic": "t", "payload": f"e{i}"}) for i in (1, 2, 4, 5)]
    bad = [
        b"\x00" * 40 + b"\n",                                # a zeroed block after a power cut
        b'{"seq": 3, "topic": "t", "payl\n',                 # half a line
        b'{"seq": 2, "topic": "t", "payload": "dup"}\n',     # out of sequence
    ]
    torn = good[3].encode()[:-5]                              # torn last line, no newline
    (tmp_path / LOG_NAME).write_bytes(
        (good[0] + "\n" + good[1] + "\n").encode() + b"".join(bad) + (good[2] + "\n").encode() + torn
    )
    with caplog.at_level(logging.WARNING, logger="device.comms.outbox"), Outbox(tmp_path) as ob:
        assert ob.rejected_lines == 4 and ob.status["rejected_lines"] == 4
        assert payloads(ob.take(10)) == ["e1", "e2", "e4"]
        ob.append("t", "fresh")
    for lineno in (3, 4, 5, 7):
        assert f"{tmp_path / LOG_NAME} line {lineno} rejected" in caplog.text
    assert "line 5 rejected (seq 2 out of order)" in caplog.text
    # Nothing is deleted unseen: the rejected lines are kept, as they were, for a person.
    assert (tmp_path / REJECTED_NAME).read_bytes() == b"".join(bad) + torn + b"\n"
    with Outbox(tmp_path) as ob:
        # The file was rewritten clean: the new record did not land on the torn line.
        assert ob.rejected_lines == 0
        assert payloads(ob.take(10)) == ["e1", "e2", "e4", "fresh"]


def write_events(directory: Path, n: int) -> list[bytes]:
    with Outbox(directory) as ob:
        for i in range(1, n + 1):
            ob.append("t/events", f"e{i}")
    return (directory / LOG_NAME).read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(("line", "seq"), [(2, 9), (1, 50), (6, 3), (3, 1)])
def test_one_bad_seq_rejects_that_line_alone(tmp_path, caplog, line, seq):
    """A bit flip or hand edit in one seq used to make every later record 'out of sequence',
    and the start-up compaction then deleted them all from disk."""
    lines = write_events(tmp_path, 6)
    original = lines[line - 1]
    lines[line - 1] = original.replace(f'"seq":{line},'.encode(), f'"seq":{seq},'.encode())
    assert lines[line - 1] != original
    (tmp_path / LOG_NAME).write_bytes(b"".join(lines))
    expected = [f"e{i}" for i in range(1, 7) if i != line]
    with caplog.at_level(logging.WARNING, logger="device.comms.outbox"), Outbox(tmp_path) as ob:
        assert payloads(ob.take(10)) == expected
        assert ob.rejected_lines == 1
        later = ob.append("t/events", "later")
        assert later > max(int(json.loads(x)["seq"]) for x in lines if x != lines[line - 1])
    assert f"line {line} rejected (seq {seq} out of order)" in caplog.text
    assert (tmp_path / REJECTED_NAME).read_bytes() == lines[line - 1]
    for _ in range(2):  # and nothing valid was deleted from disk: the next starts see them all
        with Outbox(tmp_path) as ob:
            assert ob.rejected_lines == 0
            assert payloads(ob.take(10)) == expected + ["later"]


def test_acknowledged_records_stay_done_around_a_bad_seq(tmp_path):
    lines = write_events(tmp_path, 6)
    with Outbox(tmp_path) as ob:
        for rec in ob.take(3):
            ob.ack(rec.seq)
    lines[1] = lines[1].replace(b'"seq":2,', b'"seq":9,')  # an acknowledged record's seq jumps
    (tmp_path / LOG_NAME).write_bytes(b"".join(lines))
    with Outbox(tmp_path) as ob:
        assert payloads(ob.take(10)) == ["e4", "e5", "e6"]


@pytest.mark.parametrize(("seqs", "kept"), [
    ([], []),
    ([1, 2, 3], [0, 1, 2]),
    ([1, 9, 3, 4, 5, 6], [0, 2, 3, 4, 5]),  # a seq that jumped up is left out, not what follows
    ([1, 9, 3], [0, 2]),                    # a tie: the smaller seq is kept
    ([1, 2, 2, 4], [0, 1, 3]),              # equal seqs: the earlier line is kept
    ([50, 2, 3, 4], [1, 2, 3]),
    ([1, 2, 3, 4, 2], [0, 1, 2, 3]),
    ([3, 2, 1], [2]),
])
def test_increasing_run(seqs, kept):
    assert sorted(increasing_run(seqs)) == kept


def test_increasing_run_is_a_longest_one():
    import itertools
    import random

    def longest(seqs):  # by brute force
        return max(r for r in range(len(seqs) + 1) for c in itertools.combinations(seqs, r)
                   if all(a < b for a, b in itertools.pairwise(c)))

    rng = random.Random(1)
    for _ in range(300):
        seqs = [rng.randint(1, 6) for _ in range(rng.randint(0, 7))]
        kept = sorted(increasing_run(seqs))
        assert all(seqs[a] < seqs[b] for a, b in itertools.pairwise(kept)), (seqs, kept)
        assert len(kept) == longest(seqs), (seqs, kept)


def test_increasing_run_on_a_full_queue():
    seqs = list(range(1, 20001))
    seqs[5] = 10**9
    assert len(increasing_run(seqs)) == 19999


def test_intact_last_line_without_newline_is_kept(tmp_path):
    line = json.dumps({"seq": 1, "topic": "t", "payload": "e1"})
    (tmp_path / LOG_NAME).write_text(line)
    with Outbox(tmp_path) as ob:
        assert ob.rejected_lines == 0
        ob.append("t", "e2")
    with Outbox(tmp_path) as ob:
        assert payloads(ob.take(10)) == ["e1", "e2"]


def test_corrupt_offset_file_resends_everything(tmp_path, caplog):
    with Outbox(tmp_path) as ob:
        for i in range(3):
            ob.append("t", f"e{i}")
    (tmp_path / ACK_NAME).write_text("garbage")
    with caplog.at_level(logging.WARNING, logger="device.comms.outbox"), Outbox(tmp_path) as ob:
        assert payloads(ob.take(10)) == ["e0", "e1", "e2"]
    assert "corrupt" in caplog.text


def test_compaction_shrinks_the_log_and_keeps_live_records(tmp_path):
    with Outbox(tmp_path, compact_bytes=1024) as ob:
        for i in range(200):
            ob.append("t", f"event-{i:04d}-" + "x" * 40)
        recs = ob.take(190)
        for r in recs:
            ob.ack(r.seq)
        before = (tmp_path / LOG_NAME).stat().st_size
        ob.sync()
        after = (tmp_path / LOG_NAME).stat().st_size
        assert after < before / 10
        ob.append("t", "tail")
    with Outbox(tmp_path) as ob:
        got = payloads(ob.take(100))
        assert got[:-1] == [f"event-{i:04d}-" + "x" * 40 for i in range(190, 200)] and got[-1] == "tail"


def test_second_user_of_the_same_outbox_is_refused(tmp_path):
    with Outbox(tmp_path), pytest.raises(RuntimeError, match=str(tmp_path)):
        Outbox(tmp_path)
    Outbox(tmp_path).close()  # free again once closed


CHILD = """
import sys, time
sys.path.insert(0, sys.argv[2])
from device.comms.outbox import Outbox
ob = Outbox(sys.argv[1], sync_interval_s=60)   # no fsync: the kernel still has every write
for i in range(50):
    ob.append("t", f"e{i}")
for rec in ob.take(20):
    ob.ack(rec.seq)
ob.sync()
for i in range(50, 60):
    ob.append("t", f"e{i}")
print("READY", flush=True)
time.sleep(600)
"""


def test_sigkill_loses_nothing(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    box = tmp_path / "box"
    proc = subprocess.Popen([sys.executable, str(script), str(box), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with Outbox(box) as ob:
        assert payloads(ob.take(100)) == [f"e{i}" for i in range(20, 60)]


# --------------------------------------------------------------------------------------------
# An outbox that cannot be read: moved aside, never a daemon that cannot start
# --------------------------------------------------------------------------------------------


def make_directory(log: Path) -> None:
    log.mkdir()
    (log / "inside").write_text("kept")


def make_eio(log: Path) -> None:
    # Reading /proc/self/mem at offset 0 fails with EIO in the kernel: the very error a failing
    # SD card gives, through a real file descriptor.
    log.symlink_to("/proc/self/mem")


@pytest.mark.parametrize(("make", "reason"), [(make_directory, "Is a directory"), (make_eio, "Input/output error")])
def test_unreadable_log_is_moved_aside_and_a_fresh_one_started(tmp_path, caplog, make, reason):
    make(tmp_path / LOG_NAME)
    with caplog.at_level(logging.ERROR, logger="device.comms.outbox"), Outbox(tmp_path) as ob:
        aside = ob.set_aside
        assert aside is not None and aside.name.startswith(UNREADABLE_PREFIX) and aside.parent == tmp_path
        status = ob.status
        assert status["set_aside"] == str(aside) and reason in status["last_error"] and str(aside) in status["last_error"]
        ob.append("t", "after")
    assert f"the outbox {tmp_path / LOG_NAME} was unreadable ({reason}): moved aside to {aside}" in caplog.text
    assert os.path.lexists(aside)  # kept for inspection, as it was
    if make is make_directory:
        assert (aside / "inside").read_text() == "kept"
    else:
        assert os.readlink(aside) == "/proc/self/mem"
    with Outbox(tmp_path) as ob:
        assert ob.set_aside is None and payloads(ob.take(10)) == ["after"]


def test_read_error_midway_keeps_what_was_read(tmp_path, monkeypatch, caplog):
    """An I/O error after some lines (no real mechanism gives one mid-file, so it is injected):
    the lines before it are delivered from the fresh log, the file is moved aside."""
    import builtins

    import device.comms.outbox as outbox_module

    write_events(tmp_path, 4)
    real_open = builtins.open

    class FailsAfterTwoLines:
        def __init__(self, path):
            self.fh = real_open(path, "rb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def __iter__(self):
            for n, line in enumerate(self.fh):
                if n == 2:
                    raise OSError(errno.EIO, "Input/output error")
                yield line

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path) == tmp_path / LOG_NAME and mode == "rb":
            return FailsAfterTwoLines(path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(outbox_module, "open", fake_open, raising=False)
    with caplog.at_level(logging.ERROR, logger="device.comms.outbox"), Outbox(tmp_path) as ob:
        assert ob.set_aside is not None and payloads(ob.take(10)) == ["e1", "e2"]
    monkeypatch.undo()
    assert "was unreadable (Input/output error)" in caplog.text
    assert len(ob.set_aside.read_bytes().splitlines()) == 4  # the whole file, kept as it was
    with Outbox(tmp_path) as ob:  # the fresh log holds what could be read
        assert payloads(ob.take(10)) == ["e1", "e2"]


# --------------------------------------------------------------------------------------------
# Short writes: whole records or nothing
# --------------------------------------------------------------------------------------------

WRITER = """
import json, os, resource, signal, sys
sys.path.insert(0, sys.argv[3])
from device.comms.outbox import LOG_NAME, Outbox, OutboxWriteError

mode, box = sys.argv[1], sys.argv[2]
payload = lambda i: f"e{i}-" + "x" * 3000   # records of ~3 KB: a short write cuts one in two
if mode == "read":
    with Outbox(box) as ob:
        print(json.dumps({"payloads": [r.payload[:2] for r in ob.take(100)], "rejected": ob.rejected_lines}))
    sys.exit(0)

ob = Outbox(box, sync_interval_s=60)
ob.append("t", payload(0))
ob.append("t", payload(1))
size = os.path.getsize(os.path.join(box, LOG_NAME))
if mode == "fsize":
    # The kernel writes up to the limit, then fails the rest with EFBIG (SIGXFSZ ignored).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1500, hard))
else:
    # A full disk: fill the file system; the log's last page still takes part of a record.
    filler = open(os.path.join(box, "filler"), "wb", buffering=0)
    try:
        while True:
            filler.write(b"\\0" * 4096)
    except OSError:
        pass
error = None
try:
    ob.append("t", payload(2))
except OutboxWriteError as exc:
    error = str(exc)
if mode == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
else:
    filler.close()
    os.remove(os.path.join(box, "filler"))
ob.append("t", payload(3))
with open(os.path.join(box, LOG_NAME), "rb") as f:
    on_disk = [json.loads(line)["payload"][:2] for line in f]   # every line whole
status = ob.status
ob.close()   # sync: the record kept in memory is written now that there is room
print(json.dumps({"error": error, "on_disk": on_disk, "status": status}))
"""


def short_write_run(tmp_path: Path, mode: str) -> tuple[dict, dict]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    box = tmp_path / "box"
    box.mkdir()
    steps = [[sys.executable, str(script), m, str(box), str(ROOT)] for m in (mode, "read")]
    if mode == "fsize":
        runs = [subprocess.run(cmd, capture_output=True, text=True, timeout=60) for cmd in steps]
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        return json.loads(runs[0].stdout), json.loads(runs[1].stdout)
    # A 64 KiB tmpfs in a private mount namespace; both processes run while it is mounted.
    mount = f'mount -t tmpfs -o size=64k tmpfs "{box}"'
    script_sh = " && ".join([mount] + [" ".join(f'"{a}"' for a in cmd) for cmd in steps])
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script_sh],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    return json.loads(first), json.loads(second)


def can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f'mount -t tmpfs -o size=64k tmpfs "{where}"'], capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("mode", ["fsize", "tmpfs-full"])
def test_short_write_leaves_no_half_record_and_the_event_is_kept(tmp_path, mode):
    """A short write used to leave half a line; the next record was glued onto it and both were
    lost at the next start, with nothing logged."""
    if mode == "tmpfs-full" and not can_mount_tmpfs(tmp_path):
        pytest.skip("a full disk needs root and mount namespaces (unshare) to mount a small tmpfs")
    first, second = short_write_run(tmp_path, mode)
    reason = "File too large" if mode == "fsize" else "No space left on device"
    assert first["error"] and reason in first["error"] and "kept in memory only" in first["error"]
    assert first["on_disk"] == ["e0", "e1", "e3"]  # the failed record was cut back off: no torn line
    status = first["status"]
    assert status["write_errors"] == 1 and status["memory_only"] == 1 and reason in status["last_error"]
    # Restart: everything, in order, once there was room to write the record kept in memory.
    assert second == {"payloads": ["e0", "e1", "e2", "e3"], "rejected": 0}
