"""The numbers a model is judged by: classification metrics and latency summaries (plain numpy).

Used by ``maskwatch evaluate``, the converter's parity check, ``maskwatch-device bench`` and the
benchmarks, so precision, recall and a p95 are computed one way everywhere (on the Pi too:
no scikit-learn, no TensorFlow).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_recall_f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; 0.0 where a ratio is undefined."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Counts (n, n): rows are the true label, columns the predicted one."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def per_class(cm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every label, from a confusion matrix."""
    out = {}
    for i, lab in enumerate(labels):
        tp = float(cm[i, i])
        p, r, f1 = precision_recall_f1(tp, float(cm[:, i].sum()) - tp, float(cm[i, :].sum()) - tp)
        out[lab] = {"precision": p, "recall": r, "f1": f1, "support": int(cm[i, :].sum())}
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, positive: int) -> dict[str, float]:
    """Accuracy plus precision / recall / F1 of the ``positive`` label (0.0 where undefined)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels and predictions differ in shape: {y_true.shape} vs {y_pred.shape}")
    n = int(y_true.size)
    if n == 0:
        return {"n": 0, "accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    tp = int(np.sum((y_pred == positive) & (y_true == positive)))
    fp = int(np.sum((y_pred == positive) & (y_true != positive)))
    fn = int(np.sum((y_pred != positive) & (y_true == positive)))
    precision, recall, f1 = precision_recall_f1(tp, fp, fn)
    return {"n": n, "accuracy": float(np.mean(y_true == y_pred)), "precision": precision, "recall": recall,
            "f1": f1}


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows where two models predict the same label."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"prediction arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(a == b)) if a.size else 0.0


def latency_summary(values_ms: Sequence[float] | np.ndarray, digits: int | None = None) -> dict[str, float]:
    """p50 (the median), p95, p99, mean and min of latencies in milliseconds, and their count ``n``.

    ``digits`` rounds the figures (a report that shows microseconds needs no more).
    """
    ms = np.asarray(values_ms, dtype=np.float64)
    if ms.size == 0:
        raise ValueError("no latency samples")
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    out = {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": ms.mean(), "min_ms": ms.min()}
    return {**{k: float(v if digits is None else round(float(v), digits)) for k, v in out.items()}, "n": int(ms.size)}
