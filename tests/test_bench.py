"""``maskwatch-device bench``: real float32 + int8 models on real labelled faces, no TensorFlow needed.

The model pair comes from tests/test_convert.py (a tiny CNN trained on faces-classify and
converted through ``maskwatch convert``). The workstation run also keeps a copy in the test-asset
cache so the device-only run (no TensorFlow, numpy 1.x) benchmarks the very same files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device import bench
from device.contract import ModelCard, card_path
from tests import conftest
from tests.test_convert import LABELS, PER_CLASS, SIZE, THRESHOLD, converted_assets, dataset

ROOT = Path(__file__).resolve().parents[1]
PAIR_CACHE = Path(getattr(conftest, "ASSETS", ROOT / ".cache" / "test-assets")) / "convert-pair"
N_TEST = 2 * PER_CLASS[2]


@pytest.fixture(scope="module")
def pair(shared, tmp_path_factory) -> tuple[Path, Path]:
    """(float32, int8) .tflite files with cards; from the cache when TensorFlow is absent."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        f32, i8 = PAIR_CACHE / "tiny_float32.tflite", PAIR_CACHE / "tiny_int8.tflite"
        if all(p.exists() and card_path(p).exists() for p in (f32, i8)):
            return f32, i8
        pytest.skip("TensorFlow is absent and no cached model pair: run the workstation tests first")
    assets = converted_assets(shared, tmp_path_factory)
    assert assets.rc == 0
    PAIR_CACHE.mkdir(parents=True, exist_ok=True)
    for p in (assets.float32, assets.int8):
        shutil.copy(p, PAIR_CACHE / p.name)
        shutil.copy(card_path(p), card_path(PAIR_CACHE / p.name))
    return assets.float32, assets.int8


@pytest.fixture(scope="module")
def faces(shared, tmp_path_factory) -> Path:
    return dataset(shared, tmp_path_factory)


def _check_png(doc: dict, out: Path) -> None:
    """The PNG when matplotlib is there (workstation); a note instead on a Pi without it."""
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and doc["png"] == str(out / "bench.png")
    else:
        assert doc["png"] is None and "matplotlib" in doc["png_note"] and not (out / "bench.png").exists()


def _bench(capsys, *argv: str) -> tuple[int, str, str]:
    from device.cli import main as device_main

    rc = device_main(["bench", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# --------------------------------------------------------------------------------------------
# The command on real models
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_pair_with_data(pair, faces, tmp_path, capsys):
    f32, i8 = pair
    out = tmp_path / "bench"
    rc, stdout, err = _bench(capsys, str(i8), str(f32), "--data", str(faces), "--threads", "1,2",
                             "--runs", "15", "--warmup", "2", "--out", str(out))
    assert rc == 0, err
    assert "| model | quant | threads |" in stdout and "tiny_int8.tflite" in stdout
    doc = json.loads((out / "bench.json").read_text())
    assert set(doc) >= {"settings", "machine", "reference", "models", "png", "png_note"}
    assert doc["reference"] == "tiny_float32.tflite"  # float32 even when not listed first
    assert doc["settings"]["split"] == "test" and doc["settings"]["n_images"] == N_TEST
    assert doc["machine"]["backend"] and doc["machine"]["cpu_count"] >= 1
    by = {m["quantization"]: m for m in doc["models"]}
    assert set(by) == {"float32", "int8"}
    assert by["float32"]["size_ratio"] == 1.0
    assert by["int8"]["size_ratio"] == pytest.approx(i8.stat().st_size / f32.stat().st_size)
    for m in by.values():
        assert set(m["latency"]) == {"1", "2"}
        for t, lat in m["latency"].items():
            assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] and lat["runs"] == 15
            assert lat["load_ms"] > 0
            assert lat["p50_ratio"] == pytest.approx(lat["p50_ms"] / by["float32"]["latency"][t]["p50_ms"])
        mem = m["memory"]  # measured in a fresh process per model
        assert mem["baseline_mb"] > 0 and mem["peak_mb"] >= mem["baseline_mb"]
        assert m["peak_rss_delta_mb"] == mem["peak_delta_mb"] >= 0
        acc = m["accuracy"]
        assert acc["n"] == N_TEST and 0.0 <= acc["accuracy"] <= 1.0
        assert {"without_mask_precision", "without_mask_recall", "without_mask_f1"} <= set(acc)
    assert by["float32"]["accuracy"]["agreement_with_reference"] == 1.0
    assert by["float32"]["accuracy"]["accuracy_delta_points"] == 0.0
    i8acc = by["int8"]["accuracy"]
    assert i8acc["accuracy_delta_points"] == pytest.approx(
        100 * (i8acc["accuracy"] - by["float32"]["accuracy"]["accuracy"]))
    assert 0.0 <= i8acc["agreement_with_reference"] <= 1.0
    _check_png(doc, out)
    assert (out / "bench.md").read_text().startswith("| model |")


@pytest.mark.slow
def test_bench_accuracy_matches_keras_on_the_test_split(pair, faces, tmp_path):
    """The float32 model's bench accuracy is what its Keras source scores on the same images."""
    pytest.importorskip("tensorflow")
    import keras

    from tests.test_convert import _BUILT
    from train.augment import custom_layers
    from train.dataset import load_split

    f32, _ = pair
    doc = bench.run_bench(bench.BenchConfig([f32], threads=[1], runs=3, warmup=0, data=faces, split="test"))
    custom_layers()
    model = keras.saving.load_model(_BUILT["assets"].model, compile=False)
    x, y = load_split(faces, "test", SIZE, LABELS)
    probs = keras.ops.convert_to_numpy(model(x.astype("float32"), training=False))
    pred = np.where(probs[:, 1] >= THRESHOLD, 1, 0)
    acc = doc["models"][0]["accuracy"]
    assert acc["accuracy"] == pytest.approx(float(np.mean(pred == y)))
    tp = np.sum((pred == 1) & (y == 1))
    f1 = 2 * tp / (np.sum(pred == 1) + np.sum(y == 1))
    assert acc["without_mask_f1"] == pytest.approx(float(f1))


@pytest.mark.slow
def test_bench_runs_without_tensorflow_on_a_class_folder_tree(pair, faces, tmp_path):
    """Device side: TensorFlow and Keras made unimportable; labelled images as a folder per class."""
    tree = tmp_path / "tree"
    from device.manifest import read_manifest

    for row in read_manifest(faces):
        if row.split == "test":
            (tree / row.label).mkdir(parents=True, exist_ok=True)
            shutil.copy(faces / row.path, tree / row.label / Path(row.path).name)
    (tree / "notes").mkdir()  # not a class: ignored
    (tree / "notes" / "x.jpg").write_bytes(b"")
    (tree / "with_mask" / "broken.jpg").write_bytes(b"not an image")  # skipped and listed
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from device.cli import main\n"
        f"rc = main(['bench', {str(pair[0])!r}, {str(pair[1])!r}, '--data', {str(tree)!r}, "
        f"'--threads', '1', '--runs', '5', '--warmup', '1', '--out', {str(out)!r}])\n"
        "assert not any(m.startswith(('tensorflow', 'keras')) and sys.modules[m] is not None for m in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "bench.json").read_text())
    assert doc["settings"]["n_images"] == N_TEST and doc["settings"]["split"] is None
    assert [s["path"] for s in doc["settings"]["skipped_images"]] == [str(tree / "with_mask" / "broken.jpg")]
    assert all(m["accuracy"]["n"] == N_TEST for m in doc["models"])


def test_bench_without_data(tiny_classifier, tmp_path, capsys):
    rc, stdout, err = _bench(capsys, str(tiny_classifier), "--threads", "1", "--runs", "5", "--warmup", "1",
                             "--out", str(tmp_path))
    assert rc == 0, err
    doc = json.loads((tmp_path / "bench.json").read_text())
    m = doc["models"][0]
    assert doc["reference"] == tiny_classifier.name  # no float32 model: the first one
    assert m["size_ratio"] == 1.0 and "accuracy" not in m and doc["settings"]["n_images"] == 0
    assert m["size_bytes"] == tiny_classifier.stat().st_size
    _check_png(doc, tmp_path)  # latency vs size without labels


def test_bench_bad_models_and_options(tiny_classifier, tmp_path, capsys):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\x00" * 64)
    shutil.copy(card_path(tiny_classifier), card_path(broken))
    rc, _, err = _bench(capsys, str(tiny_classifier), str(broken), "--runs", "2", "--out", str(tmp_path / "o"))
    assert rc == 2 and "broken.tflite" in err and "not a TFLite model" in err

    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(tiny_classifier.read_bytes()[:400])
    shutil.copy(card_path(tiny_classifier), card_path(truncated))
    rc, _, err = _bench(capsys, str(truncated), "--runs", "2", "--out", str(tmp_path / "o"))
    assert rc == 2 and "truncated.tflite" in err

    no_card = tmp_path / "lonely.tflite"
    shutil.copy(tiny_classifier, no_card)
    rc, _, err = _bench(capsys, str(no_card), "--out", str(tmp_path / "o"))
    assert rc == 2 and "lonely.json" in err

    other = tmp_path / "three.tflite"
    shutil.copy(tiny_classifier, other)
    ModelCard(input_size=64, labels=["with_mask", "without_mask", "incorrect_mask"]).save(card_path(other))
    rc, _, err = _bench(capsys, str(tiny_classifier), str(other), "--out", str(tmp_path / "o"))
    assert rc == 2 and "disagree on labels" in err

    rc, _, err = _bench(capsys, str(tiny_classifier), "--threads", "1,two", "--out", str(tmp_path / "o"))
    assert rc == 2 and "--threads" in err
    rc, _, err = _bench(capsys, str(tiny_classifier), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert rc == 2 and "nowhere" in err
    assert not (tmp_path / "o").exists()


def test_labelled_files_from_a_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "path,label,split\nwith_mask/a.jpg,with_mask,train\nwithout_mask/b.jpg,no_mask,test\nc.jpg,mask,test\n"
    )
    paths, labels, split = bench.list_labelled_files(tmp_path, "test")
    assert paths == [tmp_path / "without_mask/b.jpg", tmp_path / "c.jpg"]
    assert labels == ["without_mask", "with_mask"] and split == "test"  # aliases normalized
    with pytest.raises(ValueError, match=r"no images in split 'val' \(splits present: \['test', 'train'\]\)"):
        bench.list_labelled_files(tmp_path, "val")
    (tmp_path / "manifest.csv").write_text("path,label\nx.jpg,banana\n")
    with pytest.raises(ValueError, match="unknown label 'banana'"):
        bench.list_labelled_files(tmp_path, None)
    with pytest.raises(ValueError, match="none of the 1 listed images could be decoded"):
        (tmp_path / "manifest.csv").write_text("path,label\nx.jpg,mask\n")
        bench.load_labelled_images(tmp_path, None)


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def test_ratios_and_threads():
    assert bench.ratio(3.0, 4.0) == 0.75 and bench.ratio(None, 4.0) is None and bench.ratio(1.0, 0.0) is None
    assert bench.parse_threads("1,2,4,2") == [1, 2, 4]
    for bad in ("", "0", "1,x", "-2"):
        with pytest.raises(ValueError, match="--threads"):
            bench.parse_threads(bad)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="Linux /proc only")
def test_memory_readings_follow_an_allocation():
    before = bench.current_rss_bytes()
    bench.reset_peak_rss()
    block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
    after = bench.current_rss_bytes()
    assert after - before > 48 * 2**20
    assert bench.peak_rss_bytes() >= after
    del block


# --------------------------------------------------------------------------------------------
# make bench (benchmarks.quantization): targets and the whole flow on the tiny run
# --------------------------------------------------------------------------------------------


def _doc(size_ratio=0.27, p50_ratio=0.5, delta=-0.4, agree=0.995, f1=0.985, threads=("1",)):
    lat = {t: {"p50_ms": 1.0, "p50_ratio": p50_ratio} for t in threads}
    acc = {"accuracy_delta_points": delta, "agreement_with_reference": agree, "alert_f1": f1}
    return {"models": [
        {"quantization": "float32", "size_ratio": 1.0, "latency": {t: {"p50_ratio": 1.0} for t in threads}},
        {"quantization": "int8", "size_ratio": size_ratio, "latency": lat, "accuracy": acc},
    ]}


def test_targets_pass_and_fail_at_their_limits():
    from benchmarks.quantization import evaluate_targets

    assert all(t.passed for t in evaluate_targets(_doc()))
    assert all(t.passed for t in evaluate_targets(_doc(0.30, 0.60, -0.5, 0.99, 0.98)))  # limits are inclusive
    failed = [t.name for t in evaluate_targets(_doc(0.31, 0.61, -0.6, 0.98, 0.97)) if not t.passed]
    assert len(failed) == 5
    assert not evaluate_targets(_doc(delta=+3.0))[2].passed  # "within 0.5 points" both ways
    assert evaluate_targets(_doc(delta=+0.5))[2].passed
    no_1t = evaluate_targets(_doc(threads=("2",)))[1]
    assert not no_1t.passed and "not measured" in no_1t.line()
    with pytest.raises(ValueError, match="float32"):
        evaluate_targets({"models": [_doc()["models"][1]]})


@pytest.mark.slow
def test_make_bench_flow_on_the_tiny_run(pair, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from benchmarks.quantization import main as make_bench
    from tests.test_convert import _BUILT

    model = _BUILT["assets"].model  # the pair fixture built it (workstation run)
    rc = make_bench(["--model", str(model), "--out", str(tmp_path / "b"), "--threads", "1", "--runs", "5",
                     "--warmup", "1", "--calibration-size", "8"])
    out = capsys.readouterr().out
    assert rc == 1  # the tiny CNN is mostly graph: its int8 file is not 0.30x float32
    assert "FAIL  int8 file size / float32" in out and out.count("PASS  ") + out.count("FAIL  ") == 5
    assert "maskwatch-device bench models/tiny_float32.tflite models/tiny_int8.tflite --data" in out
    summary = json.loads((tmp_path / "b" / "targets.json").read_text())
    assert summary["all_passed"] is False and len(summary["targets"]) == 5
    assert summary["conversion"]["models"][1]["quantization"] == "int8"
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert doc["settings"]["split"] == "test" and doc["settings"]["n_images"] == N_TEST
    assert ModelCard.load(tmp_path / "b" / "models" / "tiny_int8.json").calibration_size == 8

    rc = make_bench(["--model", str(tmp_path / "runs" / "default" / "model.keras")])
    err = capsys.readouterr().err
    assert rc == 2 and "maskwatch train --data DATASET" in err and "runs/default/model.keras" in err
