"""Turn per-frame face classifications into per-person events.

One person walking through the entrance is seen in dozens of frames; the daemon must report
them ONCE. The tracker links faces across frames (IoU, with a centre-distance fallback for a
face that moved fast), smooths each person's alert score (EMA), waits for ``evidence_frames``
sightings before it says anything (a one-frame false detection never becomes an event), and
changes its mind only when the smoothed score clearly crosses the threshold (hysteresis), so
noise around the threshold cannot produce a stream of flips.

Events:
  ``new``     a person is confirmed, with their label (counted in :attr:`Tracker.counts`);
  ``update``  a confirmed person's label flipped;
  ``end``     a confirmed person has not been seen for ``timeout_s``.

Cooldown: the face detector loses people for a second now and then. A new track that starts
within ``cooldown_s`` of where a person's track ended, and reaches the same label, is that
person again: it silently takes over the old track id (no second ``new``, not counted again),
and a later ``end`` carries the same id (and the original ``start_time``) once more. A track
that ended at the edge of the picture, or heading out of it, belongs to someone who walked out:
it is never re-opened, because at an entrance the next person takes the very same path seconds
later and must be counted (the caller passes ``frame_size`` for this; without it, no track
counts as having left).

Matching compares a face with a track's last box and with where the track's (smoothed)
velocity predicts it now, so a person walking on while the detector missed them keeps their
track.

Pure logic: no clocks, no I/O. ``now`` is the caller's frame time in seconds (any clock, but
the same one every call). Call :meth:`Tracker.update` for every processed frame, with empty
arrays when there are no faces: that is what ends tracks.

Three labels (``with_mask``, ``without_mask``, ``incorrect_mask``) with two of them alerting:
the alert decision is made on the summed probability of the alert labels (one smoothed score, one
threshold, one hysteresis band, as with two labels), so a face that the model sees sometimes as
"no mask" and sometimes as "mask under the nose" alerts steadily. Which label of a group it
carries is decided on the smoothed per-label probabilities (``update(..., label_probs=...)``):
it changes only when another label of the group leads the current one by more than twice
``hysteresis`` (the width of the alert decision's band), so noise between "incorrect" and "without" cannot flap the label either.

Additions to the shared API: ``update(..., other_labels=...)`` (votes) or
``update(..., label_probs=...)`` (smoothed probabilities) for models with more than two labels, :meth:`Tracker.expire`, :class:`TrackState` (what :attr:`Tracker.tracks` holds),
``dropped_faces`` and ``reopened`` counters, and the pure helpers :func:`iou_matrix`,
:func:`centre_distance_matrix` and :func:`greedy_match`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from device.decision import is_alert

if TYPE_CHECKING:
    from device.config import TrackerConfig

#: A face whose centre moved less than this many box sizes (the larger box's longer side) still
#: belongs to the track when the boxes no longer overlap enough.
MAX_CENTRE_DISTANCE = 1.0
#: ... provided the box size changed by less than this factor.
MAX_SIZE_RATIO = 2.0
#: EMA weight of the newest velocity measurement (for predicting where a missed face went).
VELOCITY_SMOOTHING = 0.5


@dataclass
class TrackEvent:
    """What the tracker says about one person; everything an event message needs but the
    device and model it came from.

    ``score`` and ``top_score`` are probabilities of the event's OWN label (what the event
    schema promises): with per-label probabilities (``label_probs``) the smoothed probability of
    that label and its highest value so far; otherwise, for the alert label the smoothed P(alert)
    and its highest value so far, for any other label ``1 - P(alert)`` and one minus the lowest
    P(alert) so far.
    """

    type: str  # "new" | "update" | "end"
    track_id: int
    label: str
    score: float  # smoothed probability of ``label``
    top_score: float  # the highest smoothed probability of ``label`` for this person so far
    box: tuple[int, int, int, int]
    frame_time: float
    start_time: float
    end_time: float | None  # last time the person was seen ("end" only)


@dataclass
class TrackState:
    """A snapshot of one active track (tentative tracks have ``label`` None)."""

    id: int
    box: tuple[float, float, float, float]
    score: float
    label: str | None
    hits: int
    start_time: float
    last_seen: float
    top_score: float

    @property
    def confirmed(self) -> bool:
        return self.label is not None


@dataclass
class _Track:
    id: int
    box: np.ndarray
    first_box: np.ndarray
    score: float
    hits: int
    start_time: float
    last_seen: float
    top_score: float  # highest smoothed P(alert) so far
    low_score: float  # lowest smoothed P(alert) so far
    label: str | None = None
    other_votes: Counter = field(default_factory=Counter)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # centre motion, px/s
    probs: np.ndarray | None = None  # smoothed per-label probabilities (label_probs given)
    top_probs: np.ndarray | None = None  # their highest values so far
    left: bool = False  # ended at the picture's edge or heading out: walked out, not lost


def _centre(box: np.ndarray) -> np.ndarray:
    return (np.asarray(box[:2], dtype=np.float64) + np.asarray(box[2:], dtype=np.float64)) / 2


# --------------------------------------------------------------------------------------------
# Geometry and matching (pure)
# --------------------------------------------------------------------------------------------


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (M,4) with every box in ``b`` (N,4)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def centre_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centre distance in units of box size; inf where the sizes differ by more than MAX_SIZE_RATIO."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    sa = np.maximum(np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]), 1e-6)
    sb = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1e-6)
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    size = np.maximum(sa[:, None], sb[None, :])
    ratio = size / np.minimum(sa[:, None], sb[None, :])
    return np.where(ratio <= MAX_SIZE_RATIO, dist / size, np.inf)


def greedy_match(
    iou: np.ndarray, dist: np.ndarray, iou_threshold: float, max_distance: float = MAX_CENTRE_DISTANCE
) -> list[tuple[int, int]]:
    """(row, col) pairs: best IoU first (>= threshold), then the closest centres (<= max_distance)."""
    pairs: list[tuple[int, int]] = []
    used_r: set[int] = set()
    used_c: set[int] = set()
    rows, cols = np.nonzero(iou >= iou_threshold)
    for i in np.argsort(-iou[rows, cols], kind="stable"):
        r, c = int(rows[i]), int(cols[i])
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    rows, cols = np.nonzero(dist <= max_distance)
    for i in np.argsort(dist[rows, cols], kind="stable"):
        r, c = int(rows[i]), int(cols[i])
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


#: How close to the picture's edge (fraction of the longer side) a last box must be to count as
#: having walked out.
EDGE_FRACTION = 0.03


def walked_out(box: np.ndarray, shift: np.ndarray, frame_size: tuple[int, int]) -> bool:
    """Did a track whose last box is ``box`` leave the picture?

    True when the box touches the edge, or when its centre moved on by ``shift`` (its velocity
    over the time it was missing) lands outside the picture.
    """
    w, h = frame_size
    m = EDGE_FRACTION * max(w, h)
    x0, y0, x1, y1 = (float(v) for v in box)
    if x0 <= m or y0 <= m or x1 >= w - m or y1 >= h - m:
        return True
    cx, cy = _centre(np.asarray(box)) + np.asarray(shift, dtype=np.float64)
    return not (0 <= cx < w and 0 <= cy < h)


def _near(a: np.ndarray, b: np.ndarray, iou_threshold: float) -> float:
    """A closeness score (higher is nearer) or -inf when the boxes are not near each other."""
    iou = float(iou_matrix(a, b)[0, 0])
    if iou >= iou_threshold:
        return 1.0 + iou
    dist = float(centre_distance_matrix(a, b)[0, 0])
    return 1.0 - dist if dist <= MAX_CENTRE_DISTANCE else -np.inf


# --------------------------------------------------------------------------------------------
# The tracker
# --------------------------------------------------------------------------------------------


class Tracker:
    """``alert_label``: the label that alerts, or several (their probabilities summed by the caller
    into ``alert_scores``)."""

    def __init__(self, cfg: TrackerConfig, labels: Sequence[str], alert_label: str | Sequence[str], threshold: float):
        labels = list(labels)
        alerts = [alert_label] if isinstance(alert_label, str) else list(alert_label)
        if not alerts:
            raise ValueError(f"no alert label given for the model's labels {labels}")
        for lb in alerts:
            if lb not in labels:
                raise ValueError(f"alert label {lb!r} is not one of the model's labels {labels}")
        if len(labels) < 2:
            raise ValueError(f"the tracker needs at least two labels, got {labels}")
        if len(alerts) >= len(labels):
            raise ValueError(f"alert labels {alerts} leave no label of {labels} that does not alert")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold!r}")
        self.cfg = cfg
        self.labels = labels
        self.alert_labels = [lb for lb in labels if lb in alerts]
        self.alert_label = self.alert_labels[0]
        self.other_labels = [lb for lb in labels if lb not in alerts]
        self._index = {lb: i for i, lb in enumerate(labels)}
        self.threshold = float(threshold)
        self.counts: dict[str, int] = dict.fromkeys(labels, 0)
        self.dropped_faces = 0  # faces ignored because max_tracks tracks were active
        self.reopened = 0  # tracks merged back into a recently ended person (cooldown)
        self._tracks: list[_Track] = []
        self._ended: list[_Track] = []  # confirmed tracks that ended less than cooldown_s ago
        self.frame_size: tuple[int, int] | None = None  # (width, height), from update()
        self._next_id = 1

    @property
    def tracks(self) -> list[TrackState]:
        return [
            TrackState(t.id, tuple(float(v) for v in t.box), t.score, t.label, t.hits, t.start_time,
                       t.last_seen, t.top_score)
            for t in self._tracks
        ]

    def update(
        self,
        boxes: np.ndarray,
        alert_scores: np.ndarray,
        now: float,
        other_labels: Sequence[str] | None = None,
        frame_size: tuple[int, int] | None = None,
        label_probs: np.ndarray | None = None,
    ) -> list[TrackEvent]:
        """Feed one frame's faces; returns the events this frame caused.

        ``boxes`` (N,4) x0,y0,x1,y1; ``alert_scores`` (N,) P(alert label) per face;
        ``other_labels`` (N,) optionally the most likely non-alert label of each face (models
        with three labels); by default the first non-alert label is used. ``frame_size``
        (width, height) tells who walked out of the picture (see the module docstring).
        ``label_probs`` (N, len(labels)): each face's probabilities, smoothed per track to choose
        the label within the alert and the non-alert group (replaces ``other_labels``).
        """
        if frame_size is not None:
            self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        boxes, scores, other_labels = self._checked(boxes, alert_scores, other_labels)
        probs = None
        if label_probs is not None:
            probs = np.asarray(label_probs, dtype=np.float64).reshape(len(boxes), -1)
            if probs.shape[1] != len(self.labels) or not np.all(np.isfinite(probs)):
                raise ValueError(f"label_probs must be finite with shape ({len(boxes)}, {len(self.labels)}), "
                                 f"got {probs.shape}")
        events = self._expire(now)
        touched = self._follow(boxes, scores, now)
        touched += self._start_unmatched(boxes, scores, now, {c for _, c in touched})
        w = self.cfg.smoothing
        for t, c in touched:
            if other_labels is not None:
                t.other_votes[other_labels[c]] += 1
            if probs is not None:
                t.probs = probs[c].copy() if t.probs is None else w * probs[c] + (1 - w) * t.probs
                t.top_probs = t.probs.copy() if t.top_probs is None else np.maximum(t.top_probs, t.probs)
            ev = self._decide(t, now)
            if ev is not None:
                events.append(ev)
        return events

    def expire(self, now: float) -> list[TrackEvent]:
        """End tracks not seen for ``timeout_s`` (same as an update without faces)."""
        return self.update(np.zeros((0, 4)), np.zeros(0), now)

    def flush(self, now: float) -> list[TrackEvent]:
        """End every confirmed track (clean shutdown); tentative ones vanish."""
        events = [self._event("end", t, now, end_time=t.last_seen) for t in self._tracks if t.label is not None]
        self._tracks.clear()
        self._ended.clear()
        return events

    # ----------------------------------------------------------------------------- internals

    def _checked(
        self, boxes: np.ndarray, alert_scores: np.ndarray, other_labels: Sequence[str] | None
    ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
        """The frame's inputs as (N,4) float boxes, (N,) scores and a label list, or ValueError."""
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = np.asarray(alert_scores, dtype=np.float64).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
        if len(scores) != len(boxes):
            raise ValueError(f"got {len(boxes)} boxes but {len(scores)} scores")
        if not np.all(np.isfinite(scores)) or not np.all(np.isfinite(boxes)):
            raise ValueError("boxes and scores must be finite numbers")
        if other_labels is None:
            return boxes, scores, None
        other_labels = list(other_labels)
        if len(other_labels) != len(boxes):
            raise ValueError(f"got {len(boxes)} boxes but {len(other_labels)} other_labels")
        unknown = set(other_labels) - set(self.other_labels)
        if unknown:
            raise ValueError(f"other_labels holds {sorted(unknown)}, not non-alert labels {self.other_labels}")
        return boxes, scores, other_labels

    def _match(self, boxes: np.ndarray, now: float) -> list[tuple[int, int]]:
        """(track index, face index) pairs.

        Each face is compared with where the track was AND where its motion says it is now (a
        person walking on while the detector missed them a few frames); the better one counts.
        """
        if not self._tracks or not len(boxes):
            return []
        last = np.array([t.box for t in self._tracks]).reshape(-1, 4)
        shift = np.array([t.velocity * (now - t.last_seen) for t in self._tracks]).reshape(-1, 2)
        predicted = last + np.tile(shift, 2)
        iou = np.maximum(iou_matrix(last, boxes), iou_matrix(predicted, boxes))
        dist = np.minimum(centre_distance_matrix(last, boxes), centre_distance_matrix(predicted, boxes))
        return greedy_match(iou, dist, self.cfg.iou_threshold)

    def _follow(self, boxes: np.ndarray, scores: np.ndarray, now: float) -> list[tuple[_Track, int]]:
        """Move matched tracks to their face and smooth their score: (track, face index) pairs."""
        w = self.cfg.smoothing
        touched: list[tuple[_Track, int]] = []
        for r, c in self._match(boxes, now):
            t = self._tracks[r]
            dt = now - t.last_seen
            if dt > 0:
                v = (_centre(boxes[c]) - _centre(t.box)) / dt
                t.velocity = v if t.hits == 1 else VELOCITY_SMOOTHING * v + (1 - VELOCITY_SMOOTHING) * t.velocity
            t.box = boxes[c].copy()
            t.score = w * float(scores[c]) + (1 - w) * t.score
            t.top_score = max(t.top_score, t.score)
            t.low_score = min(t.low_score, t.score)
            t.hits += 1
            t.last_seen = now
            touched.append((t, c))
        return touched

    def _start_unmatched(self, boxes: np.ndarray, scores: np.ndarray, now: float,
                         matched: set[int]) -> list[tuple[_Track, int]]:
        """A tentative track for every face no track took (as far as max_tracks allows)."""
        started: list[tuple[_Track, int]] = []
        for c in range(len(boxes)):
            if c not in matched:
                t = self._start_track(boxes[c], float(scores[c]), now)
                if t is not None:
                    started.append((t, c))
        return started

    def _expire(self, now: float) -> list[TrackEvent]:
        events: list[TrackEvent] = []
        keep: list[_Track] = []
        for t in self._tracks:
            if now - t.last_seen > self.cfg.timeout_s:
                if t.label is not None:
                    events.append(self._event("end", t, now, end_time=t.last_seen))
                    t.left = self.frame_size is not None and walked_out(
                        t.box, t.velocity * self.cfg.timeout_s, self.frame_size)
                    self._ended.append(t)
            else:
                keep.append(t)
        self._tracks = keep
        self._ended = [t for t in self._ended if now - t.last_seen <= self.cfg.cooldown_s]
        del self._ended[: max(0, len(self._ended) - self.cfg.max_tracks)]
        return events

    def _start_track(self, box: np.ndarray, score: float, now: float) -> _Track | None:
        if len(self._tracks) >= self.cfg.max_tracks:
            # Evict the stalest tentative track, never one seen in this very frame.
            tentative = [t for t in self._tracks if t.label is None and t.last_seen < now]
            if not tentative:
                self.dropped_faces += 1
                return None
            self._tracks.remove(min(tentative, key=lambda t: t.last_seen))
        t = _Track(self._next_id, box.copy(), box.copy(), score, 1, now, now, score, score)
        self._next_id += 1
        self._tracks.append(t)
        return t

    def _group_label(self, t: _Track, alert: bool) -> str:
        """The label within the alert (or non-alert) group: with smoothed probabilities the
        likeliest one, but the current label stays until another leads it by twice ``hysteresis``;
        otherwise the most voted other label, or the group's first."""
        group = self.alert_labels if alert else self.other_labels
        if len(group) == 1:
            return group[0]
        if t.probs is not None:
            best = max(group, key=lambda lb: t.probs[self._index[lb]])
            # The same band as the alert decision's (threshold +- hysteresis): a lead of 2 x hysteresis.
            if t.label in group and t.probs[self._index[best]] - t.probs[self._index[t.label]] <= 2 * self.cfg.hysteresis:
                return t.label
            return best
        if not alert and t.other_votes:
            return t.other_votes.most_common(1)[0][0]
        return group[0]

    def _decide(self, t: _Track, now: float) -> TrackEvent | None:
        if t.label is None:
            if t.hits < self.cfg.evidence_frames:
                return None
            t.label = self._group_label(t, is_alert(t.score, self.threshold))
            if self._reopen(t):
                return None
            self.counts[t.label] = self.counts.get(t.label, 0) + 1
            return self._event("new", t, now)
        h = self.cfg.hysteresis
        alerting = t.label in self.alert_labels
        if alerting and not is_alert(t.score, self.threshold - h):
            label = self._group_label(t, False)
        elif not alerting and is_alert(t.score, self.threshold + h):
            label = self._group_label(t, True)
        else:  # same side: the label within the group may still change (three labels)
            label = self._group_label(t, alerting)
        if label == t.label:
            return None
        t.label = label
        return self._event("update", t, now)

    def _reopen(self, t: _Track) -> bool:
        """Merge a just-confirmed track into a person who ended nearby within cooldown_s."""
        best, best_near = None, -np.inf
        for old in self._ended:
            if old.left or old.label != t.label or not 0 <= t.start_time - old.last_seen <= self.cfg.cooldown_s:
                continue
            near = _near(old.box, t.first_box, self.cfg.iou_threshold)
            if near > best_near:
                best, best_near = old, near
        if best is None:
            return False
        self._ended.remove(best)
        t.id = best.id
        t.start_time = best.start_time
        t.top_score = max(t.top_score, best.top_score)
        t.low_score = min(t.low_score, best.low_score)
        self.reopened += 1
        return True

    def _event(self, kind: str, t: _Track, now: float, end_time: float | None = None) -> TrackEvent:
        box = tuple(int(round(v)) for v in t.box)
        if t.probs is not None and t.label:
            score, top = t.probs[self._index[t.label]], t.top_probs[self._index[t.label]]
        elif t.label in self.alert_labels:
            score, top = t.score, t.top_score
        else:
            score, top = 1.0 - t.score, 1.0 - t.low_score
        return TrackEvent(kind, t.id, t.label or "", _probability(score), _probability(top), box, now,
                          t.start_time, end_time)


def _probability(x: float) -> float:
    """``x`` clipped to 0..1: an int8 model's dequantized output may overshoot 1 by a step."""
    return min(1.0, max(0.0, float(x)))
