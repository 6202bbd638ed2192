"""The tracker turns per-frame faces into per-person events: scripted box sequences."""

from __future__ import annotations

import numpy as np
import pytest

from device.config import TrackerConfig
from device.tracking.tracker import (
    Tracker,
    centre_distance_matrix,
    greedy_match,
    iou_matrix,
)

LABELS = ("with_mask", "without_mask")
ALERT = "without_mask"
DT = 1 / 15  # 15 fps


def make(**overrides) -> Tracker:
    return Tracker(TrackerConfig(**overrides), LABELS, ALERT, threshold=0.5)


def run(tracker, frames, t0=0.0, dt=DT):
    """frames: list of [(box, score), ...] per frame; returns (events, time after the last frame)."""
    events = []
    t = t0
    for faces in frames:
        boxes = np.array([f[0] for f in faces], dtype=float).reshape(-1, 4)
        scores = np.array([f[1] for f in faces], dtype=float)
        events += tracker.update(boxes, scores, t)
        t += dt
    return events, t


def idle(tracker, seconds, t0, dt=DT):
    """Frames without faces for ``seconds``."""
    return run(tracker, [[]] * int(round(seconds / dt)), t0, dt)


def walk(x0, x1, n, y=100, size=60):
    """A face box moving from x0 to x1 over n frames."""
    return [(float(x), float(y), float(x + size), float(y + size)) for x in np.linspace(x0, x1, n)]


def types(events):
    return [(e.type, e.track_id, e.label) for e in events]


# ----------------------------------------------------------------------------- pure helpers


def test_iou_matrix_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_centre_distance_is_in_box_sizes_and_rejects_size_jumps():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[10, 0, 20, 10], [0, 0, 40, 40]])
    d = centre_distance_matrix(a, b)[0]
    assert d[0] == pytest.approx(1.0)
    assert np.isinf(d[1])  # 4x the size: not the same face


def test_greedy_match_prefers_iou_then_distance():
    iou = np.array([[0.9, 0.4], [0.5, 0.0]])
    dist = np.array([[0.1, 0.5], [0.3, 0.8]])
    assert greedy_match(iou, dist, 0.3) == [(0, 0), (1, 1)]  # (1, 1) by distance: IoU 0, moved fast
    assert greedy_match(iou, dist, 0.3, max_distance=0.5) == [(0, 0)]


# ----------------------------------------------------------------------------- behaviour


def test_one_person_walking_across_gives_exactly_one_new_and_one_end():
    tr = make()
    frames = [[(box, 0.9)] for box in walk(0, 580, 60)]  # ~10 px per frame
    events, t = run(tr, frames)
    events += idle(tr, 3.0, t)[0]
    assert types(events) == [("new", 1, ALERT), ("end", 1, ALERT)]
    new, end = events
    assert new.frame_time == pytest.approx(2 * DT)  # third sighting (evidence_frames = 3)
    assert new.start_time == 0.0 and end.start_time == 0.0
    assert end.end_time == pytest.approx(59 * DT)
    assert end.box == (580, 100, 640, 160)
    assert end.top_score == pytest.approx(0.9)
    assert tr.counts == {"with_mask": 0, "without_mask": 1}
    assert tr.tracks == []


def test_a_fast_face_without_overlap_is_followed_by_centre_distance():
    tr = make()
    frames = [[(box, 0.1)] for box in walk(0, 500, 11)]  # 50 px per frame at 60 px boxes: IoU 0.09
    events, t = run(tr, frames)
    events += idle(tr, 3.0, t)[0]
    assert types(events) == [("new", 1, "with_mask"), ("end", 1, "with_mask")]


def test_two_people_at_once_give_two_news():
    tr = make()
    a = walk(0, 200, 20, y=50)
    b = walk(400, 250, 20, y=200)
    events, t = run(tr, [[(ba, 0.95), (bb, 0.05)] for ba, bb in zip(a, b, strict=True)])
    assert sorted((e.type, e.label) for e in events) == [("new", "with_mask"), ("new", ALERT)]
    assert len({e.track_id for e in events}) == 2
    events = idle(tr, 3.0, t)[0]
    assert sorted((e.type, e.label) for e in events) == [("end", "with_mask"), ("end", ALERT)]
    assert tr.counts == {"with_mask": 1, "without_mask": 1}


def test_label_flips_only_when_clearly_past_the_threshold():
    tr = make(smoothing=0.5, hysteresis=0.1)
    box = (100.0, 100.0, 160.0, 160.0)
    noise = [0.42, 0.58] * 15  # smoothed score wanders around 0.5 but stays inside 0.4..0.6
    scores = [0.2] * 5 + noise + [0.95] * 6 + [0.55, 0.45] * 10
    events, _ = run(tr, [[(box, s)] for s in scores])
    assert types(events) == [("new", 1, "with_mask"), ("update", 1, ALERT)]
    assert events[1].score >= 0.6
    assert tr.counts == {"with_mask": 1, "without_mask": 0}  # counted once, at "new"


def test_events_carry_the_probability_of_their_own_label():
    # The schema promises P(the event's label): 1 - P(alert) for the other label, whose top is
    # one minus the LOWEST alert score the person had; the alert label's own score and highest.
    tr = make(smoothing=1.0, evidence_frames=2)  # smoothing 1: the smoothed score is the raw one
    masked, bare = (0.0, 0.0, 50.0, 50.0), (300.0, 0.0, 350.0, 50.0)
    events, t = run(tr, [[(masked, a), (bare, b)] for a, b in [(0.1, 0.9), (0.2, 0.8), (0.15, 0.85)]])
    events += tr.flush(t)
    assert types(events) == [("new", 1, "with_mask"), ("new", 2, ALERT), ("end", 1, "with_mask"), ("end", 2, ALERT)]
    new_masked, new_bare, end_masked, end_bare = events
    assert (new_masked.score, new_masked.top_score) == (pytest.approx(0.8), pytest.approx(0.9))
    assert (new_bare.score, new_bare.top_score) == (pytest.approx(0.8), pytest.approx(0.9))
    assert (end_masked.score, end_masked.top_score) == (pytest.approx(0.85), pytest.approx(0.9))
    assert (end_bare.score, end_bare.top_score) == (pytest.approx(0.85), pytest.approx(0.9))


def test_an_overshooting_int8_score_is_still_a_probability():
    tr = make(smoothing=1.0, evidence_frames=1)
    events, _ = run(tr, [[((0.0, 0.0, 50.0, 50.0), 1.0039)]])
    assert (events[0].label, events[0].score, events[0].top_score) == (ALERT, 1.0, 1.0)


def test_without_hysteresis_the_same_noise_would_flip():
    # The control for the test above: proves its noise does cross the bare threshold.
    tr = make(smoothing=0.5, hysteresis=0.0)
    box = (100.0, 100.0, 160.0, 160.0)
    events, _ = run(tr, [[(box, s)] for s in [0.2] * 5 + [0.42, 0.58] * 15])
    assert sum(e.type == "update" for e in events) > 3


def test_detector_dropout_within_timeout_keeps_the_track():
    tr = make(timeout_s=1.5)
    boxes = walk(0, 300, 30)
    frames = [[(b, 0.9)] if not 10 <= i < 20 else [] for i, b in enumerate(boxes)]  # 10 frames = 0.67 s lost
    events, t = run(tr, frames)
    events += idle(tr, 3.0, t)[0]
    assert types(events) == [("new", 1, ALERT), ("end", 1, ALERT)]


def test_flicker_within_cooldown_does_not_double_count():
    tr = make(timeout_s=0.5, cooldown_s=10.0)
    box = (200.0, 100.0, 260.0, 160.0)
    events, t = run(tr, [[(box, 0.9)]] * 10)
    gap, t = idle(tr, 2.0, t)  # longer than timeout_s: the track ends
    events += gap
    back, t = run(tr, [[((205.0, 102.0, 265.0, 162.0), 0.9)]] * 10, t0=t)
    events += back + idle(tr, 2.0, t)[0]
    assert types(events) == [("new", 1, ALERT), ("end", 1, ALERT), ("end", 1, ALERT)]
    assert events[2].start_time == 0.0  # the same person, since the first sighting
    assert tr.counts[ALERT] == 1 and tr.reopened == 1


def test_after_the_cooldown_the_same_place_is_a_new_person():
    tr = make(timeout_s=0.5, cooldown_s=1.0)
    box = (200.0, 100.0, 260.0, 160.0)
    events, t = run(tr, [[(box, 0.9)]] * 10)
    events += idle(tr, 3.0, t)[0]
    events += run(tr, [[(box, 0.9)]] * 10, t0=t + 3.0)[0]
    assert [e.type for e in events] == ["new", "end", "new"]
    assert events[2].track_id != 1 and tr.counts[ALERT] == 2


def test_a_different_label_in_the_same_place_is_a_new_person():
    tr = make(timeout_s=0.5, cooldown_s=10.0)
    box = (200.0, 100.0, 260.0, 160.0)
    events, t = run(tr, [[(box, 0.9)]] * 10)
    gap, t = idle(tr, 1.0, t)
    events += gap + run(tr, [[(box, 0.1)]] * 10, t0=t)[0]
    assert [(e.type, e.label) for e in events] == [("new", ALERT), ("end", ALERT), ("new", "with_mask")]


def test_a_single_frame_false_detection_never_emits():
    tr = make()
    frames = [[]] * 5 + [[((300.0, 300.0, 340.0, 340.0), 0.99)]] + [[]] * 40
    events, t = run(tr, frames)
    assert events == [] and tr.flush(t) == []
    assert tr.counts == {"with_mask": 0, "without_mask": 0}


def test_flush_ends_confirmed_tracks_only():
    tr = make()
    events, t = run(tr, [[((0.0, 0.0, 50.0, 50.0), 0.9)]] * 5 + [[((0.0, 0.0, 50.0, 50.0), 0.9),
                                                                   ((300.0, 0.0, 350.0, 50.0), 0.9)]])
    assert len(tr.tracks) == 2 and [s.confirmed for s in tr.tracks] == [True, False]
    ends = tr.flush(t)
    assert [(e.type, e.track_id) for e in ends] == [("end", 1)]
    assert tr.tracks == []


def test_max_tracks_bounds_memory():
    tr = make(max_tracks=4, evidence_frames=2)
    rng = np.random.default_rng(0)
    for i in range(50):
        xs = rng.uniform(0, 2000, 10)
        boxes = np.stack([xs, np.zeros(10), xs + 20, np.full(10, 20.0)], axis=1)
        tr.update(boxes, np.full(10, 0.5), i * DT)
        assert len(tr.tracks) <= 4
    assert tr.dropped_faces > 0


def test_three_labels_use_the_most_likely_non_alert_label():
    tr = Tracker(TrackerConfig(), ("with_mask", "without_mask", "incorrect_mask"), ALERT, 0.5)
    box = np.array([[0.0, 0.0, 50.0, 50.0]])
    events = []
    for i in range(5):
        events += tr.update(box, np.array([0.1]), i * DT, other_labels=["incorrect_mask"])
    assert types(events) == [("new", 1, "incorrect_mask")]


def test_bad_input_is_rejected_with_a_clear_error():
    tr = make()
    with pytest.raises(ValueError, match="shape"):
        tr.update(np.zeros((2, 3)), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        tr.update(np.zeros((2, 4)), np.zeros(1), 0.0)
    with pytest.raises(ValueError, match="finite"):
        tr.update(np.zeros((1, 4)), np.array([np.nan]), 0.0)
    with pytest.raises(ValueError, match="alert label"):
        Tracker(TrackerConfig(), LABELS, "nobody", 0.5)


def run_in_frame(tracker, frames, size, t0=0.0, dt=DT):
    """Like run(), telling the tracker the picture's size."""
    events, t = [], t0
    for faces in frames:
        boxes = np.array([f[0] for f in faces], dtype=float).reshape(-1, 4)
        scores = np.array([f[1] for f in faces], dtype=float)
        events += tracker.update(boxes, scores, t, frame_size=size)
        t += dt
    return events, t


def test_people_walking_through_one_after_another_are_each_counted():
    # An entrance: three people without masks cross the 640x480 picture on the same path, a
    # second or two apart (well within the cooldown). Each walked out, so each is a new person.
    tr = make(timeout_s=0.5, cooldown_s=10.0)
    events, t = [], 0.0
    for _ in range(3):
        ev, t = run_in_frame(tr, [[(b, 0.9)] for b in walk(5, 575, 30)], (640, 480), t0=t)
        events += ev
        ev, t = run_in_frame(tr, [[]] * 20, (640, 480), t0=t)
        events += ev
    assert [e.type for e in events] == ["new", "end"] * 3
    assert len({e.track_id for e in events}) == 3 and tr.counts[ALERT] == 3 and tr.reopened == 0


def test_a_person_lost_in_the_middle_of_the_picture_is_reopened_with_frame_size():
    tr = make(timeout_s=0.5, cooldown_s=10.0)
    box = (300.0, 200.0, 360.0, 260.0)
    events, t = run_in_frame(tr, [[(box, 0.9)]] * 10, (640, 480))
    gap, t = run_in_frame(tr, [[]] * 15, (640, 480), t0=t)
    back, t = run_in_frame(tr, [[(box, 0.9)]] * 10, (640, 480), t0=t)
    assert types(events + gap + back) == [("new", 1, ALERT), ("end", 1, ALERT)]
    assert tr.counts[ALERT] == 1 and tr.reopened == 1


def test_walked_out():
    from device.tracking.tracker import walked_out

    assert walked_out(np.array([0, 100, 60, 160]), np.zeros(2), (640, 480))  # touches the left edge
    assert walked_out(np.array([560, 100, 638, 160]), np.zeros(2), (640, 480))  # right edge
    assert not walked_out(np.array([300, 200, 360, 260]), np.zeros(2), (640, 480))
    assert walked_out(np.array([500, 200, 560, 260]), np.array([200.0, 0.0]), (640, 480))  # heading out


# ----------------------------------------------------------------------------- three labels, two alerting

THREE = ("with_mask", "without_mask", "incorrect_mask")
ALERTS = ("without_mask", "incorrect_mask")


def run_probs(tracker, probs_per_frame, t0=0.0):
    """One face standing still; ``probs_per_frame`` its (with, without, incorrect) per frame."""
    events, box = [], np.array([[100.0, 100.0, 160.0, 160.0]])
    for i, p in enumerate(probs_per_frame):
        p = np.asarray(p, dtype=float)[None]
        events += tracker.update(box, p[:, 1] + p[:, 2], t0 + i * DT, label_probs=p)
    return events


def test_mask_on_under_the_nose_off_gives_one_person_and_two_updates():
    tr = Tracker(TrackerConfig(), THREE, ALERTS, 0.5)
    on, under, off = (0.9, 0.04, 0.06), (0.1, 0.2, 0.7), (0.02, 0.9, 0.08)
    events = run_probs(tr, [on] * 8 + [under] * 8 + [off] * 8)
    assert types(events) == [("new", 1, "with_mask"), ("update", 1, "incorrect_mask"), ("update", 1, "without_mask")]
    # Scores are the smoothed probability of each event's own label.
    assert events[0].score > 0.85 and events[1].score > 0.5 and events[2].score > 0.5
    assert tr.counts == {"with_mask": 1, "without_mask": 0, "incorrect_mask": 0}


def test_noise_between_incorrect_and_without_does_not_flap():
    """The model wavers between "under the nose" and "no mask": the summed alert probability
    stays high (one alert, no flip to with_mask) and the label moves only on a clear lead."""
    tr = Tracker(TrackerConfig(), THREE, ALERTS, 0.5)
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(60):
        a = rng.uniform(0.4, 0.6)  # P(incorrect) share of a 0.95 alert probability
        frames.append((0.05, 0.95 * (1 - a), 0.95 * a))
    events = run_probs(tr, frames)
    assert [e.type for e in events] == ["new"] and events[0].label in ALERTS
    # Without the hysteresis on the label, the same noise flips it between the two.
    loose = Tracker(TrackerConfig(hysteresis=0.0), THREE, ALERTS, 0.5)
    assert len(run_probs(loose, frames)) > 3


def test_a_label_outside_the_alert_group_decides_nothing_alone():
    """Alert on incorrect_mask only: a face the model calls without_mask is not an alert."""
    tr = Tracker(TrackerConfig(), THREE, ["incorrect_mask"], 0.5)
    box = np.array([[0.0, 0.0, 50.0, 50.0]])
    events = []
    for i in range(5):
        p = np.array([[0.1, 0.85, 0.05]])
        events += tr.update(box, p[:, 2], i * DT, label_probs=p)
    assert types(events) == [("new", 1, "without_mask")]
    with pytest.raises(ValueError, match="leave no label"):
        Tracker(TrackerConfig(), LABELS, LABELS, 0.5)
    with pytest.raises(ValueError, match="label_probs"):
        tr.update(box, np.array([0.5]), 1.0, label_probs=np.ones((1, 2)))
