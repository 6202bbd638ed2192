"""``maskwatch evaluate``: metric math, and reports + card thresholds for .keras and .tflite models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.contract import ModelCard
from device.decision import decide
from device.metrics import confusion, per_class
from tests import test_train as shared_runs
from train.evaluate import choose_threshold, precision_recall, roc, summarize

# the tiny runs and dataset are trained once per session and shared by the train/evaluate/predict tests
keras_home = shared_runs.keras_home
tiny_data = shared_runs.tiny_data
imagenet_run = shared_runs.imagenet_run

ROOT = Path(__file__).resolve().parents[1]
POS = np.array([1, 1, 0, 1, 0, 0], bool)
SCORES = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])


# ---- metric math ---------------------------------------------------------------------------


def test_roc_auc_counts_ranked_pairs():
    fpr, tpr, _, auc = roc(POS, SCORES)
    assert auc == pytest.approx(8 / 9)  # 8 of the 9 positive/negative pairs are ranked right
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert roc(np.array([1, 0], bool), np.array([0.5, 0.5]))[3] == pytest.approx(0.5)  # a tie is half right
    assert np.isnan(roc(np.array([1, 1], bool), np.array([0.2, 0.9]))[3])


def test_average_precision_is_precision_at_each_positive():
    precision, recall, _, ap = precision_recall(POS, SCORES)
    assert ap == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert recall[-1] == 1.0 and precision[0] == 1.0


def test_threshold_max_f1_and_target_recall():
    # cut below 0.4: P 3/4, R 1 -> F1 0.857 (best); halfway to the next score 0.3
    assert choose_threshold(POS, SCORES, "max_f1") == pytest.approx(0.35)
    # recall >= 0.6 first reached cutting below 0.8 (R 2/3); halfway to 0.7
    assert choose_threshold(POS, SCORES, "recall", 0.6) == pytest.approx(0.75)
    assert choose_threshold(POS, SCORES, "recall", 1.0) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="both alert and non-alert"):
        choose_threshold(np.ones(3, bool), np.array([0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match="target-recall"):
        choose_threshold(POS, SCORES, "recall", 1.5)


def test_summary_numbers_agree_with_each_other():
    y = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.55, 0.45]])
    s = summarize(y, probs, ["with_mask", "without_mask"], "without_mask", 0.5)
    assert s["confusion_matrix"] == [[2, 1], [1, 1]]
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["without_mask_precision"] == pytest.approx(1 / 2) and s["without_mask_recall"] == pytest.approx(1 / 2)
    assert s["per_class"]["with_mask"]["support"] == 3
    cm = confusion(y, decide(probs, 1, 0.4), 2)
    assert per_class(cm, ["a", "b"])["b"]["recall"] == 1.0


def test_three_labels_alert_on_the_summed_probability_and_report_the_alert_view():
    labels = ["with_mask", "without_mask", "incorrect_mask"]
    y = np.array([0, 0, 1, 2, 2])
    # Face 4: neither alert label alone reaches 0.5, together they do (0.3 + 0.35).
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.1, 0.3], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.35, 0.3, 0.35]])
    alerts = ["without_mask", "incorrect_mask"]
    assert decide(probs, [1, 2], 0.5).tolist() == [0, 0, 1, 2, 2]
    assert decide(probs, 1, 0.5).tolist() == [0, 0, 1, 2, 0]  # one alert label: as before
    s = summarize(y, probs, labels, "without_mask", 0.5, alerts)
    assert s["confusion_matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert s["per_class"]["incorrect_mask"]["f1"] == 1.0
    view = s["alert"]
    assert view["labels"] == alerts and view["recall"] == 1.0 and view["precision"] == 1.0
    assert {k: v["flagged"] for k, v in view["flagged"].items()} == {"with_mask": 0, "without_mask": 1,
                                                                     "incorrect_mask": 2}
    # At 0.4 the second masked face (alert probability 0.4) is flagged: a false alarm, counted as one.
    lower = summarize(y, probs, labels, "without_mask", 0.4, alerts)["alert"]
    assert lower["flagged"]["with_mask"] == {"n": 2, "flagged": 1, "rate": 0.5} and lower["precision"] == 0.75


# ---- the command on real models ------------------------------------------------------------


def _copy_model(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "model.json"):
        shutil.copy(run / name, dest / name)
    return dest / "model.keras"


@pytest.fixture(scope="module")
def tflite_model(imagenet_run, tmp_path_factory) -> Path:
    """The small ImageNet run converted to float32 TFLite (card copied, quantization float32)."""
    import tensorflow as tf

    from train.model import load_model

    out = tmp_path_factory.mktemp("tflite") / "model_float32.tflite"
    conv = tf.lite.TFLiteConverter.from_keras_model(load_model(imagenet_run / "model.keras"))
    out.write_bytes(conv.convert())
    card = ModelCard.load(imagenet_run / "model.json")
    card.quantization = "float32"
    card.save(out.with_suffix(".json"))
    return out


def _evaluate(argv: list[str]) -> int:
    from train.cli import main

    return main(["evaluate", *argv])


@pytest.mark.slow
def test_evaluate_keras_model_writes_report_pngs_and_threshold(imagenet_run, tiny_data, tmp_path, capsys):
    model = _copy_model(imagenet_run, tmp_path / "m")
    assert _evaluate([str(model), "--data", str(tiny_data), "--write-threshold", "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "without_mask" in printed
    assert f"written to {model.with_suffix('.json')}" in printed

    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == 16 and report["split"] == "test" and report["threshold_chosen_on"] == "val"
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == 16 and report["accuracy"] == pytest.approx(np.trace(cm) / 16)
    assert report["per_class"]["without_mask"]["support"] == 8
    assert report["roc_auc"] >= 0.8 and report["accuracy"] >= 0.75  # ImageNet features; random gives 0.5
    assert report["n_mistakes"] == 16 - np.trace(cm)
    for name in ("confusion_matrix.png", "roc.png", "pr.png", "mistakes.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:4] == b"\x89PNG", name

    card = ModelCard.load(model.with_suffix(".json"))
    assert card.threshold == pytest.approx(report["threshold"], abs=1e-6)
    assert card.metrics["test"]["accuracy"] == pytest.approx(report["accuracy"])
    assert card.extra["threshold"]["mode"] == "max_f1"


@pytest.mark.slow
def test_evaluate_tflite_without_tensorflow_matches_keras(tflite_model, imagenet_run, tiny_data, tmp_path):
    """The .tflite path runs through the device classifier; TensorFlow is never imported."""
    tfl = tmp_path / tflite_model.name
    shutil.copy(tflite_model, tfl)
    shutil.copy(tflite_model.with_suffix(".json"), tfl.with_suffix(".json"))
    code = (
        "import sys\n"
        "from train.cli import main\n"
        f"rc = main(['evaluate', {str(tfl)!r}, '--data', {str(tiny_data)!r}, '--split', 'test',"
        f" '--threshold-mode', 'recall', '--target-recall', '1.0', '--write-threshold',"
        f" '--out', {str(tmp_path / 'eval')!r}])\n"
        "assert rc == 0, rc\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    card = ModelCard.load(tfl.with_suffix(".json"))
    assert card.quantization == "float32" and report["quantization"] == "float32"
    assert card.threshold == pytest.approx(report["threshold"], abs=1e-6)
    assert card.extra["threshold"] == {"mode": "recall", "chosen_on": "val", "target_recall": 1.0}

    keras_model = _copy_model(imagenet_run, tmp_path / "k")
    assert _evaluate([str(keras_model), "--data", str(tiny_data), "--threshold-mode", "card",
                      "--out", str(tmp_path / "keval")]) == 0
    keras_report = json.loads((tmp_path / "keval" / "report.json").read_text())
    assert report["roc_auc"] == pytest.approx(keras_report["roc_auc"], abs=1e-6)
    assert report["accuracy_argmax"] == pytest.approx(keras_report["accuracy_argmax"])


@pytest.mark.slow
def test_the_card_changes_only_with_write_threshold(imagenet_run, tiny_data, tmp_path, capsys):
    model = _copy_model(imagenet_run, tmp_path / "m")
    before = model.with_suffix(".json").read_bytes()
    assert _evaluate([str(model), "--data", str(tiny_data), "--out", str(tmp_path / "chosen")]) == 0
    assert model.with_suffix(".json").read_bytes() == before  # a threshold was chosen, but not written
    assert "not written to the card (add --write-threshold" in capsys.readouterr().out
    chosen = json.loads((tmp_path / "chosen" / "report.json").read_text())
    assert chosen["threshold_mode"] == "max_f1" and chosen["threshold_chosen_on"] == "val"

    assert _evaluate([str(model), "--data", str(tiny_data), "--split", "val", "--threshold-mode", "card",
                      "--out", str(tmp_path / "eval")]) == 0
    assert model.with_suffix(".json").read_bytes() == before
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["threshold"] == 0.5 and report["threshold_chosen_on"] == "card"

    assert _evaluate([str(model), "--data", str(tiny_data), "--threshold-mode", "card", "--write-threshold"]) == 2
    assert "nothing to write" in capsys.readouterr().err
    assert model.with_suffix(".json").read_bytes() == before


def test_evaluate_bad_input_is_named(tiny_data, tmp_path, capsys):
    assert _evaluate([str(tmp_path / "missing.keras"), "--data", str(tiny_data)]) == 2
    assert "missing.keras" in capsys.readouterr().err
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"x")
    assert _evaluate([str(odd), "--data", str(tiny_data)]) == 2
    assert "expected .keras or .tflite" in capsys.readouterr().err
    no_card = tmp_path / "nocard.tflite"
    no_card.write_bytes(b"x")
    assert _evaluate([str(no_card), "--data", str(tiny_data)]) == 2
    assert "nocard.json is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_on_a_split_the_dataset_lacks(imagenet_run, shared, tmp_path, capsys):
    from tests.test_train import make_dataset

    data = make_dataset(shared / "datasets" / "faces-classify", tmp_path / "data", {"with_mask": 3, "without_mask": 3},
                        splits=(1.0, 0, 0))
    model = _copy_model(imagenet_run, tmp_path / "m")
    assert _evaluate([str(model), "--data", str(data), "--split", "test"]) == 2
    assert "no 'test' rows" in capsys.readouterr().err
