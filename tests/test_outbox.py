"""The persistent outbox on real files: order, acknowledgement, bound, corruption, crashes."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.comms.outbox import ACK_NAME, LOG_NAME, Outbox

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


def test_corrupt_and_truncated_lines_are_skipped_with_a_warning(tmp_path, caplog):
    good = [json.dumps({"seq": i, "topic": "t", "payload": f"e{i}"}) for i in (1, 2, 4, 5)]
    (tmp_path / LOG_NAME).write_bytes(
        (good[0] + "\n" + good[1] + "\n").encode()
        + b"\x00" * 40 + b"\n"                                # a zeroed block after a power cut
        + b'{"seq": 3, "topic": "t", "payl\n'                 # half a line
        + b'{"seq": 2, "topic": "t", "payload": "dup"}\n'     # out of sequence
        + (good[2] + "\n").encode()
        + good[3].encode()[:-5]                               # torn last line, no newline
    )
    with caplog.at_level(logging.WARNING, logger="device.comms.outbox"), Outbox(tmp_path) as ob:
        assert ob.corrupt_lines == 4
        assert payloads(ob.take(10)) == ["e1", "e2", "e4"]
        ob.append("t", "fresh")
    assert f"{tmp_path / LOG_NAME} line 3 is corrupt" in caplog.text
    assert "line 7 is corrupt" in caplog.text
    with Outbox(tmp_path) as ob:
        # The file was rewritten clean: the new record did not land on the torn line.
        assert ob.corrupt_lines == 0
        assert payloads(ob.take(10)) == ["e1", "e2", "e4", "fresh"]


def test_intact_last_line_without_newline_is_kept(tmp_path):
    line = json.dumps({"seq": 1, "topic": "t", "payload": "e1"})
    (tmp_path / LOG_NAME).write_text(line)
    with Outbox(tmp_path) as ob:
        assert ob.corrupt_lines == 0
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
