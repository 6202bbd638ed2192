"""``make bench-device`` (``python -m benchmarks.daemon``): it runs end to end on generated
frames, its JSON holds what the README quotes, a missed target exits 1 and a benchmark that
cannot run exits 2. The speed targets themselves are judged by the benchmark, not here."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.daemon import (
    EXIT_CANNOT_RUN,
    EXIT_MISSED,
    TARGETS,
    best_round,
    exit_status,
    paired_change,
    parse_target,
)

ROOT = Path(__file__).resolve().parents[1]


def _round(median: float, p95: float) -> dict:
    return {"total": {"median_ms": median, "p95_ms": p95}, "stages": {}}


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.daemon", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_best_round_is_the_fastest_and_every_round_is_kept():
    best = best_round([_round(5.2, 6.0), _round(4.1, 5.0), _round(4.6, 7.0)])
    assert best["total"] == {"median_ms": 4.1, "p95_ms": 5.0}
    assert [r["median_ms"] for r in best["rounds"]] == [5.2, 4.1, 4.6]


def test_paired_change_is_the_median_over_pairs_so_one_noisy_pair_does_not_decide():
    pairs = [(10.0, 10.1), (10.0, 9.9), (10.0, 30.0), (5.0, 5.05), (20.0, 8.0)]  # two pairs hit by a neighbour
    pct, ms = paired_change(pairs)
    assert pct == 1.0 and ms == 0.05


def test_exit_status_is_1_when_any_target_is_missed():
    ok, missed = {"value": 1.0, "target": 2.0, "ok": True}, {"value": 3.0, "target": 2.0, "ok": False}
    assert exit_status({"median_ms": ok, "rss_mb": ok}) == 0
    assert exit_status({"median_ms": ok, "rss_mb": missed}) == EXIT_MISSED == 1


def test_target_option_names_a_known_target_and_a_number():
    assert parse_target("median_ms=0.5") == ("median_ms", 0.5)
    for bad in ("median_ms", "speed=1", "p95_ms=fast"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE|not a number"):
            parse_target(bad)


def test_a_missing_model_is_an_error_not_a_pass(tmp_path):
    proc = _bench("--model", str(tmp_path / "absent_int8.tflite"), "--out", str(tmp_path / "bench.json"))
    assert proc.returncode == EXIT_CANNOT_RUN == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot run" in proc.stderr and "absent_int8.tflite" in proc.stderr
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.slow
def test_benchmark_runs_writes_its_json_and_fails_on_an_impossible_target(detector_model, tiny_classifier, tmp_path):
    out = tmp_path / "bench.json"
    generous = [f"--target={k}=1e9" for k in TARGETS if k != "import_s"]
    proc = _bench("--model", str(tiny_classifier), "--frames", "40", "--rounds", "2", "--rss-seconds", "3",
                  "--web-rounds", "2",
                  "--out", str(out), *generous, "--target", "import_s=0")  # no interpreter starts in 0 s
    assert proc.returncode == EXIT_MISSED, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "target missed: import_s" in proc.stderr
    doc = json.loads(out.read_text())
    assert {k: v["ok"] for k, v in doc["verdicts"].items()} == {"median_ms": True, "p95_ms": True, "rss_mb": True,
                                                                 "import_s": False, "web_idle_pct": True}
    assert doc["verdicts"]["import_s"]["target"] == 0
    e2e = doc["end_to_end"]
    assert e2e["frames"] == 40 and len(e2e["rounds"]) == 2
    assert e2e["total"]["median_ms"] == min(r["median_ms"] for r in e2e["rounds"])
    assert set(e2e["stages"]) >= {"capture", "detect", "classify", "track", "publish"}
    assert e2e["events"] >= 2  # the two people, published through the outbox
    assert doc["detectors"]["short"]["faces"] == 2 and doc["detectors"]["full"]["faces"] == 2
    assert doc["detectors"]["yunet"]["faces"] == 2
    # every detector is named with its input size, the daemon's own (the default) too
    assert doc["detectors"]["short"]["detector"] == "blazeface-short 128x128 float32 + mirror"
    assert e2e["detector"] == doc["detectors"]["yunet"]["detector"] == "yunet-litert 640x480 int8 + mirror"
    assert doc["imports"]["tensorflow_or_keras_modules"] == []
    assert 0 < doc["memory"]["rss_max_mb"] < 1000
    assert doc["broker"].startswith("mosquitto on 127.0.0.1:")
    assert "rounds (median / p95 ms)" in proc.stdout and "MISSED" in proc.stdout
    web = doc["web"]  # the page disabled vs served to nobody, alternating, then one viewer
    assert len(web["interleaved"]) == 2 and len(web["viewer_pairs"]) == 2
    for r in web["interleaved"]:  # both daemons processed every frame, in turn
        assert r["disabled"]["n"] == r["idle"]["n"] == 40
    assert web["idle_pct"] == paired_change([(r["disabled"]["median_ms"], r["idle"]["median_ms"])
                                             for r in web["interleaved"]])[0]
    assert 0 <= web["web_stage_ms"] < 0.1  # nobody watching: a check per frame
    assert all(n >= 1 for n in web["viewer_jpegs"])  # the viewer really got the live view
    assert web["viewer_stage_ms"] >= 0 and web["jpeg_ms"]["median_ms"] > 0
    assert "enabled with nobody watching vs disabled, frame by frame" in proc.stdout
