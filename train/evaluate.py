"""``maskwatch evaluate``: metrics, curves and a decision threshold for a .keras or .tflite model.

The alert decision the device makes is "P(alert label) >= card.threshold" (:mod:`device.decision`);
this command picks that threshold (best F1 of the alert class, or the strictest one that still
reaches a target recall) and, with ``--write-threshold``, writes it into the model's card. By
default it is chosen on the val split and the requested split (test) is only measured with it,
so the reported numbers are not tuned on the data they describe. All metrics are plain numpy (scikit-learn is not a dependency).

A ``.tflite`` model runs through :class:`device.classifier.MaskClassifier`, exactly as on the
Pi, and that path never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from device.contract import (
    DEFAULT_ALERT_LABELS,
    THREE_CLASS_LABELS,
    ModelCard,
    alert_labels_for,
    card_path,
    load_card_for,
)
from device.decision import alert_score, decide
from device.metrics import confusion, per_class

if TYPE_CHECKING:
    from train.dataset import Split

log = logging.getLogger(__name__)

THRESHOLD_MODES = ("max_f1", "recall", "card")

# --------------------------------------------------------------------------------------------
# Metrics (pure functions)
# --------------------------------------------------------------------------------------------


def _sweep(positive: np.ndarray, scores: np.ndarray):
    """tp, fp at every distinct score cut (predict positive when score >= cut), cuts descending."""
    positive = np.asarray(positive, bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, pos = scores[order], positive[order]
    last_of_run = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(pos)[last_of_run].astype(np.float64)
    fp = np.cumsum(~pos)[last_of_run].astype(np.float64)
    return s[last_of_run], tp, fp


def roc(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """fpr, tpr, thresholds and the area under the ROC curve (trapezoids); NaN AUC for one class."""
    cuts, tp, fp = _sweep(positive, scores)
    n_pos, n_neg = tp[-1], fp[-1]
    if n_pos == 0 or n_neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([np.inf, -np.inf]), float("nan")
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return fpr, tpr, np.r_[np.inf, cuts], auc


def precision_recall(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """precision, recall, thresholds and average precision (sum of precision x recall steps)."""
    cuts, tp, fp = _sweep(positive, scores)
    n_pos = tp[-1]
    if n_pos == 0:
        return np.array([1.0]), np.array([0.0]), np.array([np.inf]), float("nan")
    precision = tp / (tp + fp)
    recall = tp / n_pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return precision, recall, cuts, ap


def choose_threshold(positive: np.ndarray, scores: np.ndarray, mode: str = "max_f1",
                     target_recall: float = 0.98) -> float:
    """Threshold on P(alert): best F1, or the highest one whose recall still reaches the target.

    The threshold sits halfway between the chosen score and the next lower one, so a face
    scored like the borderline ones here falls on the same side on new data too.
    """
    if mode not in ("max_f1", "recall"):
        raise ValueError(f"threshold mode must be max_f1 or recall, got {mode!r}")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"--target-recall must be within (0, 1], got {target_recall}")
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError("choosing a threshold needs both alert and non-alert faces in the data")
    precision, recall, cuts, _ = precision_recall(positive, scores)
    if mode == "max_f1":
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        k = int(np.argmax(f1))
    else:
        k = int(np.argmax(recall >= target_recall - 1e-12))  # first (highest) cut reaching the target
    lower = cuts[k + 1] if k + 1 < len(cuts) else 0.0
    return float(np.clip((cuts[k] + lower) / 2.0, 0.0, 1.0))


def summarize(y: np.ndarray, probs: np.ndarray, labels: Sequence[str], alert_label: str,
              threshold: float, alert_labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Every number of an evaluation report (JSON-ready).

    ``alert_labels`` (default: ``alert_label`` alone) are the labels whose summed probability
    the threshold applies to (:mod:`device.decision`); ``alert`` holds that binary view:
    precision / recall / F1 of "alert" against the truth, and the fraction flagged per true label.
    ``<alert_label>_*`` stay the per-class numbers of that one label.
    """
    labels = list(labels)
    alerts = list(alert_labels or [alert_label])
    idx = [labels.index(lb) for lb in alerts]
    y = np.asarray(y, np.int64)
    pred = decide(probs, idx, threshold)
    cm = confusion(y, pred, len(labels))
    positive = np.isin(y, idx)
    scores = alert_score(probs, idx) if len(y) else np.zeros(0, np.float32)
    _, _, _, auc = roc(positive, scores)
    _, _, _, ap = precision_recall(positive, scores)
    classes = per_class(cm, labels)
    argmax_acc = float(np.mean(np.argmax(probs, axis=1) == y)) if len(y) else float("nan")
    return {
        "n": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "accuracy_argmax": argmax_acc,
        "per_class": classes,
        "macro_f1": float(np.mean([c["f1"] for c in classes.values()])),
        "confusion_matrix": cm.tolist(),
        "alert_label": alert_label,
        "alert": alert_view(y, scores >= threshold, labels, alerts),
        "roc_auc": auc,
        "average_precision": ap,
        f"{alert_label}_precision": classes[alert_label]["precision"],
        f"{alert_label}_recall": classes[alert_label]["recall"],
        f"{alert_label}_f1": classes[alert_label]["f1"],
    }


def alert_view(y: np.ndarray, flagged: np.ndarray, labels: Sequence[str], alert_labels: Sequence[str]) -> dict[str, Any]:
    """The binary "alert" view: P/R/F1 of flagging the ``alert_labels`` faces, and per true label
    how many faces were flagged (a masked face flagged is a false alarm at the door)."""
    labels = list(labels)
    y, flagged = np.asarray(y, np.int64), np.asarray(flagged, bool)
    truth = np.isin(y, [labels.index(lb) for lb in alert_labels if lb in labels])
    m = per_class(confusion(truth.astype(np.int64), flagged.astype(np.int64), 2), ["ok", "alert"])["alert"]
    by_label = {}
    for i, lb in enumerate(labels):
        n = int(np.sum(y == i))
        k = int(np.sum(flagged[y == i]))
        by_label[lb] = {"n": n, "flagged": k, "rate": (k / n) if n else float("nan")}
    return {"labels": list(alert_labels), "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
            "flagged": by_label}


# --------------------------------------------------------------------------------------------
# Models: .keras through Keras, .tflite through the device's classifier
# --------------------------------------------------------------------------------------------


class Classifier(Protocol):
    card: ModelCard

    def predict_crops(self, crops: np.ndarray) -> np.ndarray: ...


class KerasClassifier:
    """A saved ``.keras`` model with the same interface as the device's MaskClassifier."""

    def __init__(self, path: Path):
        from train.model import load_model

        self.path = Path(path)
        self.card = load_card_for(self.path)
        self.model = load_model(self.path)
        shape = tuple(self.model.input_shape[1:])
        size = self.card.input_size
        if shape != (size, size, 3):
            raise ValueError(f"{self.path}: input shape {shape} does not match its card (input_size {size})")
        n_out = int(self.model.output_shape[-1])
        if n_out != len(self.card.labels):
            raise ValueError(f"{self.path}: {n_out} outputs but its card lists {len(self.card.labels)} labels")

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if not len(crops):
            return np.zeros((0, len(self.card.labels)), np.float32)
        return np.asarray(self.model.predict_on_batch(crops.astype(np.float32)), np.float32)


def load_classifier(path: Path, num_threads: int | None = None) -> Classifier:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.suffix == ".tflite":
        from device.classifier import MaskClassifier

        return MaskClassifier(path, num_threads=num_threads)
    if path.suffix in (".keras", ".h5"):
        return KerasClassifier(path)
    raise ValueError(f"{path}: unknown model type {path.suffix!r} (expected .keras or .tflite)")


def predict_all(clf: Classifier, x: np.ndarray, batch_size: int = 64, desc: str = "predicting") -> np.ndarray:
    from tqdm import tqdm

    out = []
    for i in tqdm(range(0, len(x), batch_size), desc=desc, unit="batch", mininterval=2.0, leave=False):
        out.append(clf.predict_crops(x[i : i + batch_size]))
    n = len(clf.card.labels)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, n), np.float32)


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help=".keras or .tflite model (its card .json beside it)")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (maskwatch data import/split)")
    parser.add_argument("--split", default="test", help="train, val, test or all (default: %(default)s)")
    parser.add_argument("--threshold-mode", choices=THRESHOLD_MODES, default="max_f1",
                        help="max_f1: best F1 of the alert class; recall: highest threshold reaching "
                             "--target-recall; card: keep the card's threshold (default: %(default)s)")
    parser.add_argument("--target-recall", type=float, default=0.98, help="for --threshold-mode recall")
    parser.add_argument("--threshold-split", default="val",
                        help="split the threshold is chosen on (default: %(default)s; falls back to --split "
                             "when the dataset has no such rows)")
    parser.add_argument("--write-threshold", action="store_true",
                        help="write the chosen threshold (and these metrics) into the model's card, so that "
                             "convert and the device use it; without it the card is left as it is")
    parser.add_argument("--out", type=Path, help="report folder (default: eval_<model>_<split> beside the model)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads for .tflite")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--worst", type=int, default=24, help="mistakes on the contact sheet")
    parser.add_argument("--alert-labels", default=None, metavar="LABEL[,LABEL]",
                        help="labels that raise an alert, their probabilities summed (default: "
                             f"{','.join(DEFAULT_ALERT_LABELS)} as far as the model has them)")


def _metrics_key(card: ModelCard, split: str, data: Path) -> str:
    """``test`` for the model's own dataset, ``test:<folder>`` for any other."""
    from device.manifest import manifest_sha256

    try:
        same = manifest_sha256(data) == card.dataset_manifest_sha256
    except FileNotFoundError:
        same = False
    return split if same else f"{split}:{Path(data).resolve().name}"


@dataclass
class Threshold:
    """The decision threshold an evaluation uses, and how it came about."""

    value: float
    mode: str
    chosen_on: str  # a split name, or "card" when the card's own threshold is kept
    target_recall: float | None = None


def evaluate(model: Path, data: Path, split: str = "test", threshold_mode: str = "max_f1",
             target_recall: float = 0.98, threshold_split: str = "val", out: Path | None = None,
             threads: int | None = None, batch_size: int = 64, worst: int = 24,
             write_threshold: bool = False, alert_labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure ``model`` on a split: PNGs and report.json in ``out``; returns the report.

    With ``write_threshold`` the chosen threshold (and these metrics) go into the model's card,
    which is what conversion and the device then use; otherwise the card is not touched.
    ``alert_labels``: see :func:`device.contract.alert_labels_for`. Faces of the split whose label
    the model does not have (``incorrect_mask`` for a 2-label model) are predicted too, for the
    alert view's "flagged" rates only.
    """
    from train.dataset import load_split_data

    _check_options(threshold_mode, target_recall, write_threshold)
    model, data = Path(model), Path(data)
    clf = load_classifier(model, threads)
    card = clf.card
    alerts = alert_labels_for(card.labels, alert_labels, "--alert-labels")
    out = Path(out) if out else model.parent / f"eval_{model.stem}_{split.replace(':', '_')}"

    ds = load_split_data(data, split, card.input_size, list(card.labels))
    log.info("evaluating %s on %s/%s: %d faces %s", model.name, data, split, len(ds), ds.counts())
    probs = predict_all(clf, ds.x, batch_size, desc=f"predicting {split}")
    threshold = pick_threshold(clf, data, split, ds.y, probs, threshold_mode, target_recall, threshold_split,
                               batch_size, alerts)
    report = build_report(model, data, split, ds, probs, card, threshold, alerts)
    flag_other_labels(report, clf, data, split, threshold.value, alerts, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    report["files"] = {k: str(v) for k, v in draw_figures(report, ds, probs, out, worst).items()}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if write_threshold:
        write_threshold_to_card(model, card, report, threshold, _metrics_key(card, split, data))
    return report


def flag_other_labels(report: dict[str, Any], clf: Classifier, data: Path, split: str, threshold: float,
                      alerts: Sequence[str], batch_size: int = 64) -> None:
    """Add to the alert view how many faces of labels the model lacks it flags (e.g. how many
    masks worn under the nose a 2-label model catches as "no mask")."""
    from train.dataset import dataset_rows, load_rows, rows_of_split

    card = clf.card
    missing = [lb for lb in THREE_CLASS_LABELS if lb not in card.labels]
    if not missing:
        return
    try:
        rows = rows_of_split(dataset_rows(data, missing), split)
    except ValueError:
        return  # the dataset has none of them
    if not rows:
        return
    other = load_rows(data, rows, card.input_size, missing, progress=False)
    probs = predict_all(clf, other.x, batch_size, desc=f"predicting {split} ({', '.join(missing)})")
    flagged = alert_score(probs, [list(card.labels).index(lb) for lb in alerts]) >= threshold
    for i, lb in enumerate(missing):
        n, k = int(np.sum(other.y == i)), int(np.sum(flagged[other.y == i]))
        if n:
            report["alert"]["flagged"][lb] = {"n": n, "flagged": k, "rate": k / n, "label_not_in_model": True}


def _check_options(threshold_mode: str, target_recall: float, write_threshold: bool) -> None:
    if threshold_mode not in THRESHOLD_MODES:
        raise ValueError(f"--threshold-mode must be one of {', '.join(THRESHOLD_MODES)}, got {threshold_mode!r}")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"--target-recall must be within (0, 1], got {target_recall}")
    if write_threshold and threshold_mode == "card":
        raise ValueError("--write-threshold with --threshold-mode card: the card's threshold is kept, "
                         "there is nothing to write (choose max_f1 or recall)")


def pick_threshold(clf: Classifier, data: Path, split: str, y: np.ndarray, probs: np.ndarray, mode: str,
                   target_recall: float, threshold_split: str, batch_size: int,
                   alerts: Sequence[str] | None = None) -> Threshold:
    """The card's threshold, or one chosen on ``threshold_split`` (on ``split`` itself when the
    dataset has no such rows), so the reported numbers are not tuned on the data they describe."""
    from train.dataset import dataset_rows, load_split_data, rows_of_split

    card = clf.card
    if mode == "card":
        return Threshold(float(card.threshold), mode, "card")
    labels = list(card.labels)
    idx = [labels.index(lb) for lb in (alerts or card.alerts)]
    chosen_on = split
    if threshold_split != split:
        if rows_of_split(dataset_rows(data, labels), threshold_split):
            tds = load_split_data(data, threshold_split, card.input_size, labels)
            y, chosen_on = tds.y, threshold_split
            probs = predict_all(clf, tds.x, batch_size, desc=f"predicting {threshold_split}")
        else:
            log.warning("%s has no %s rows: the threshold is chosen on %s itself", data, threshold_split, split)
    value = choose_threshold(np.isin(y, idx), alert_score(probs, idx), mode, target_recall)
    return Threshold(value, mode, chosen_on, target_recall if mode == "recall" else None)


def build_report(model: Path, data: Path, split: str, ds: Split, probs: np.ndarray, card: ModelCard,
                 threshold: Threshold, alerts: Sequence[str] | None = None) -> dict[str, Any]:
    """Every number of the report: the metrics at the threshold, at 0.5 for comparison, and what was run."""
    labels, alert = list(card.labels), card.alert_label
    alerts = list(alerts or card.alerts)
    report = summarize(ds.y, probs, labels, alert, threshold.value, alerts)
    at_half = summarize(ds.y, probs, labels, alert, 0.5, alerts)
    report.update({
        "model": str(model), "data": str(data), "split": split, "labels": labels,
        "threshold_mode": threshold.mode, "target_recall": threshold.target_recall,
        "threshold_chosen_on": threshold.chosen_on,
        "at_0.5": {k: at_half[k] for k in ("accuracy", f"{alert}_f1", f"{alert}_recall", f"{alert}_precision")},
        "counts": ds.counts(), "quantization": card.quantization,
    })
    return report


def draw_figures(report: dict[str, Any], ds: Split, probs: np.ndarray, out: Path, worst: int) -> dict[str, Path]:
    """Confusion matrix, ROC and PR curves (with the operating point) and the worst mistakes as PNGs.

    Adds the mistakes and a thinned PR curve to ``report``; returns the files written.
    """
    from train import plots

    labels, alert, threshold = report["labels"], report["alert_label"], report["threshold"]
    a = labels.index(alert)
    idx = [labels.index(lb) for lb in report["alert"]["labels"]]
    name = Path(report["model"]).name
    positive, scores = np.isin(ds.y, idx), alert_score(probs, idx)
    fpr, tpr, _, auc = roc(positive, scores)
    prec, rec, _, ap = precision_recall(positive, scores)
    cm = np.asarray(report["confusion_matrix"])
    flagged = report["alert"]["flagged"]
    pt_fp = sum(flagged[lb]["flagged"] for i, lb in enumerate(labels) if i not in idx) / max(1, int((~positive).sum()))
    pt_tp = report["alert"]["recall"]
    alert_name = "+".join(report["alert"]["labels"])
    files = {
        "confusion_matrix": plots.confusion_matrix(cm, labels, out / "confusion_matrix.png",
                                                   f"{name} on {report['split']} (threshold {threshold:.3f})"),
        "roc": plots.roc_curve(fpr, tpr, auc, out / "roc.png", alert_name, (float(pt_fp), float(pt_tp))),
        "pr": plots.pr_curve(rec, prec, ap, out / "pr.png", alert_name,
                             (float(pt_tp), float(report["alert"]["precision"]))),
    }
    pred = decide(probs, idx, threshold)
    wrong = np.flatnonzero(pred != ds.y)
    confidence = probs[wrong, pred[wrong]]
    worst_idx = wrong[np.argsort(-confidence, kind="mergesort")][:worst]
    files["mistakes"] = plots.contact_sheet(
        [ds.x[i] for i in worst_idx],
        [f"{labels[ds.y[i]]}->{labels[pred[i]]}\np({alert})={probs[i, a]:.2f}" for i in worst_idx],
        out / "mistakes.png", title=f"worst {len(worst_idx)} of {len(wrong)} mistakes")
    report["mistakes"] = [{"path": ds.paths[i], "true": labels[ds.y[i]], "predicted": labels[pred[i]],
                           f"p_{alert}": float(probs[i, a])} for i in worst_idx]
    report["n_mistakes"] = int(len(wrong))
    report["pr_curve"] = {"recall": rec[:: max(1, len(rec) // 200)].round(5).tolist(),
                          "precision": prec[:: max(1, len(prec) // 200)].round(5).tolist()}
    return files


def write_threshold_to_card(model: Path, card: ModelCard, report: dict[str, Any], threshold: Threshold,
                            key: str) -> Path:
    """The chosen threshold, how it was chosen and the headline metrics, into the model's card."""
    alert = card.alert_label
    card.threshold = round(threshold.value, 6)
    card.alert_labels = list(report["alert"]["labels"]) if len(card.labels) > 2 else []
    card.metrics[key] = {k: report[k] for k in ("n", "accuracy", "roc_auc", "average_precision", "threshold",
                                                f"{alert}_precision", f"{alert}_recall", f"{alert}_f1")}
    card.extra["threshold"] = {"mode": threshold.mode, "chosen_on": threshold.chosen_on,
                               "target_recall": threshold.target_recall}
    path = card_path(model)
    card.save(path)
    return path


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"{r['model']} on {r['split']} ({r['n']} faces), threshold {r['threshold']:.4f} "
        f"({r['threshold_mode']}, chosen on {r['threshold_chosen_on']})",
        f"accuracy {r['accuracy']:.4f}  (argmax {r['accuracy_argmax']:.4f})   "
        f"ROC AUC({'+'.join(r['alert']['labels'])}) {r['roc_auc']:.4f}"
        f"   AP {r['average_precision']:.4f}",
        f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for lab, c in r["per_class"].items():
        lines.append(f"{lab:<16}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>9d}")
    lines.append("confusion (rows true, cols predicted): " + json.dumps(r["confusion_matrix"]))
    view = r["alert"]
    flagged = ", ".join(f"{lb} {v['flagged']}/{v['n']} ({v['rate']:.3f})" for lb, v in view["flagged"].items() if v["n"])
    lines.append(f"alert = {' or '.join(view['labels'])}: precision {view['precision']:.4f}  recall "
                 f"{view['recall']:.4f}  f1 {view['f1']:.4f}; flagged: {flagged}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    report = evaluate(args.model, args.data, args.split, args.threshold_mode, args.target_recall,
                      args.threshold_split, args.out, args.threads, args.batch_size, args.worst,
                      write_threshold=args.write_threshold,
                      alert_labels=[v.strip() for v in args.alert_labels.split(",")] if args.alert_labels else None)
    print(format_report(report))
    print(f"report: {Path(report['files']['confusion_matrix']).parent / 'report.json'}")
    if args.write_threshold:
        print(f"threshold {report['threshold']:.4f} written to {card_path(args.model)}")
    elif args.threshold_mode != "card":
        print(f"threshold {report['threshold']:.4f} not written to the card (add --write-threshold to use it)")
    return 0
