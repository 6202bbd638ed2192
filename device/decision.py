"""The alert decision, written once: a face is flagged when P(alert label) >= the card's threshold.

The tracker applies it to its smoothed score, the benchmark, ``maskwatch evaluate``, ``predict``
and the converter's parity check to a model's raw probabilities; all of them call these two
functions, so "alert" means the same thing on the workstation and on the Pi.
"""

from __future__ import annotations

import numpy as np


def is_alert(score: float, threshold: float) -> bool:
    """The rule itself: P(alert label) at or above the threshold (a tie alerts)."""
    return float(score) >= float(threshold)


def decide(probs: np.ndarray, alert_index: int, threshold: float) -> np.ndarray:
    """Label index per row: the alert label when :func:`is_alert`, else the likeliest other label.

    With two labels and threshold 0.5 this is argmax (ties go to the alert label).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        return np.zeros((probs.shape[0] if probs.ndim else 0,), dtype=np.int64)
    others = probs.copy()
    others[:, alert_index] = -np.inf
    pred = np.argmax(others, axis=1).astype(np.int64)
    pred[probs[:, alert_index] >= threshold] = alert_index  # is_alert, row-wise
    return pred
