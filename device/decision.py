"""The alert decision, written once: a face is flagged when P(alert labels) >= the card's threshold.

With two labels the alert labels are ``without_mask`` alone; a 3-label model alerts on
``without_mask`` and ``incorrect_mask`` together, their probabilities summed (:func:`alert_score`),
so a face the model cannot place between "no mask" and "mask under the nose" still alerts.
The tracker applies it to its smoothed score, the benchmark, ``maskwatch evaluate``, ``predict``
and the converter's parity check to a model's raw probabilities; all of them call these
functions, so "alert" means the same thing on the workstation and on the Pi.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def alert_score(probs: np.ndarray, alert_indices: int | Sequence[int]) -> np.ndarray:
    """P(alert) per row: the summed probability of the alert labels (N,)."""
    idx = [alert_indices] if isinstance(alert_indices, (int, np.integer)) else list(alert_indices)
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2:
        return np.zeros((0,), np.float32)
    return probs[:, idx].sum(axis=1, dtype=np.float32)


def is_alert(score: float, threshold: float) -> bool:
    """The rule itself: P(alert label) at or above the threshold (a tie alerts)."""
    return float(score) >= float(threshold)


def decide(probs: np.ndarray, alert_index: int | Sequence[int], threshold: float) -> np.ndarray:
    """Label index per row: when :func:`is_alert` on the summed alert probability, the likeliest
    alert label; else the likeliest other label.

    With two labels and threshold 0.5 this is argmax (ties go to the alert label).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        return np.zeros((probs.shape[0] if probs.ndim else 0,), dtype=np.int64)
    idx = [alert_index] if isinstance(alert_index, (int, np.integer)) else list(alert_index)
    alert = np.zeros(probs.shape[1], bool)
    alert[idx] = True
    others = np.where(alert, -np.inf, probs)
    pred = np.argmax(others, axis=1).astype(np.int64)
    flagged = probs[:, alert].sum(axis=1) >= threshold  # is_alert, row-wise
    pred[flagged] = np.argmax(np.where(alert, probs, -np.inf), axis=1)[flagged]
    return pred
