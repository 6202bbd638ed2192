"""The alert decision and the metrics, each written once (device.decision, device.metrics) and
used by the benchmark, ``maskwatch evaluate``, ``predict``, the converter and the tracker."""

from __future__ import annotations

import numpy as np
import pytest

from device.decision import decide, is_alert
from device.metrics import agreement, classification_metrics, confusion, latency_summary, per_class


def test_is_alert_is_at_or_above_the_threshold():
    assert is_alert(0.5, 0.5) and is_alert(0.51, 0.5) and not is_alert(0.49, 0.5)


def test_decide_uses_the_alert_threshold():
    probs = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.1, 0.2]], np.float32)
    assert decide(probs, 1, 0.5).tolist() == [0, 1, 1, 0]
    assert decide(probs, 1, 0.35).tolist() == [1, 1, 1, 0]
    # Alert below threshold: the most likely of the others wins, even over the alert label.
    three = np.array([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.7, 0.3, 0.0]], np.float32)
    assert decide(three, 1, 0.65).tolist() == [2, 2, 0]
    assert decide(three, 1, 0.31).tolist() == [2, 1, 0]
    assert decide(np.zeros((0, 2)), 1, 0.5).shape == (0,)


def test_decide_agrees_with_is_alert_row_by_row():
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=200)
    for t in (0.2, 0.5, float(probs[17, 2])):  # the last one is a tie
        flagged = decide(probs, 2, t) == 2
        assert flagged.tolist() == [is_alert(p, t) for p in probs[:, 2]]


def test_classification_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    m = classification_metrics(y, p, positive=1)
    assert m["n"] == 8 and m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    none = classification_metrics(np.zeros(4), np.zeros(4), positive=1)
    assert none["f1"] == 0.0 and none["accuracy"] == 1.0
    assert classification_metrics(np.zeros(0), np.zeros(0), 1)["n"] == 0
    with pytest.raises(ValueError, match="differ in shape"):
        classification_metrics(np.zeros(3), np.zeros(4), 1)


def test_per_class_from_the_confusion_matrix_matches_the_positive_class_metrics():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    cm = confusion(y, p, 3)
    assert cm.sum() == 300 and cm[0, 2] == int(np.sum((y == 0) & (p == 2)))
    classes = per_class(cm, ["a", "b", "c"])
    for i, lab in enumerate("abc"):
        m = classification_metrics(y, p, positive=i)
        assert classes[lab]["precision"] == pytest.approx(m["precision"])
        assert classes[lab]["recall"] == pytest.approx(m["recall"])
        assert classes[lab]["f1"] == pytest.approx(m["f1"])
        assert classes[lab]["support"] == int(np.sum(y == i))


def test_agreement():
    assert agreement(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])) == 0.75
    assert agreement(np.zeros(0), np.zeros(0)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        agreement(np.zeros(3), np.zeros(4))


def test_latency_summary():
    s = latency_summary([1.0] * 98 + [10.0, 20.0])
    assert s["p50_ms"] == pytest.approx(1.0) and s["n"] == 100 and s["min_ms"] == pytest.approx(1.0)
    assert s["p99_ms"] > s["p95_ms"] >= s["p50_ms"]
    assert s["mean_ms"] == pytest.approx((98 + 30) / 100)
    assert latency_summary([1.23456, 2.0], digits=3)["p50_ms"] == 1.617
    assert latency_summary([3.0, 1.0, 2.0])["p50_ms"] == 2.0  # the median
    with pytest.raises(ValueError, match="no latency samples"):
        latency_summary([])
