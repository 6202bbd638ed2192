"""Which detection found which annotated face, and the recall arithmetic over many scenes.

Pure functions (no files, no models) so every number in the scene report can be checked on
hand-made boxes. The geometry is the tracker's: :func:`device.tracking.tracker.iou_matrix` and
its greedy best-IoU-first pairing, so "the same face" means one thing across the project.

Vocabulary:

* a *truth* face is an annotated box; it is *counted* unless it is left out (smaller than the
  import's minimum face size, or a class that is not a mask label);
* a detection *found* a counted face when the one-to-one greedy pairing (highest IoU first,
  IoU >= :data:`MATCH_IOU`) gives it that face; a detection paired with a left-out face is
  neither a hit nor a false alarm (a detector is not punished for seeing a tiny face);
* a detection is *flagged* when the classifier's decision on it is the alert label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from device.tracking.tracker import greedy_match, iou_matrix

Box = tuple[float, float, float, float]

#: A detection and an annotated face are the same face at this IoU or more (as in the issue's
#: measurements: annotators draw boxes from brow or hairline, detectors from brow to chin).
MATCH_IOU = 0.3
#: Face-size bins of the report, in px of the face's size on the 640x480 frame (lower bound
#: inclusive, upper exclusive; None = no upper bound).
SIZE_BINS: tuple[tuple[int, int | None], ...] = ((16, 32), (32, 64), (64, 128), (128, None))
#: "Masked faces this large or larger" (px) for the masked-recall figure.
MASKED_MIN_SIZE = 32

#: The two-sided 95 % quantile of the normal distribution (``scipy.stats.norm.ppf(0.975)``).
Z_95 = 1.959963984540054


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of the proportion ``hits / n`` (95 % by default); None for n = 0.

    Why: a scene figure is a share of a few dozen faces (84 no-mask faces in the faces-voc test
    scenes, 82 flagged; a user's own camera, often fewer), so one face moves it by more than a
    point. The interval says how far a change must move a figure before it is more than which
    photos happened to be chosen. Wilson's interval (what ``scipy.stats.binomtest(...)
    .proportion_ci(method="wilson")`` computes; scipy is not on the Pi, where this also runs) stays
    inside [0, 1] and is sound near 0 and 1, where these figures sit.
    """
    if n <= 0:
        return None
    if not 0 <= hits <= n:
        raise ValueError(f"{hits} hits of {n}: a share needs 0 <= hits <= n")
    p = hits / n
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def match_faces(truth: Sequence[Box], detections: Sequence[Box], iou_threshold: float = MATCH_IOU
                ) -> list[tuple[int, int]]:
    """(truth index, detection index) pairs: one-to-one, greedy by IoU (best first), IoU >= threshold."""
    iou = iou_matrix(np.asarray(truth, np.float64).reshape(-1, 4), np.asarray(detections, np.float64).reshape(-1, 4))
    no_distance_pass = np.full(iou.shape, np.inf)  # the tracker's second (centre distance) pass stays off
    return greedy_match(iou, no_distance_pass, iou_threshold)


def size_bin(size: float) -> str:
    """The report's name of the size bin holding ``size`` px ("16-32", ..., "128+"); "" below all bins."""
    for lo, hi in SIZE_BINS:
        if size >= lo and (hi is None or size < hi):
            return bin_name(lo, hi)
    return ""


def bin_name(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


# --------------------------------------------------------------------------------------------
# One scene
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TruthFace:
    box: Box  # on the frame, clipped to the photo
    label: str  # canonical label ("" when the class is not a mask label)
    size: float  # px on the frame (see train.data.voc.face_side)
    counted: bool  # False: left out of every figure


@dataclass(frozen=True)
class FaceOutcome:
    label: str
    size: float
    found: bool
    flagged: bool  # found, and the detection that found it is flagged


@dataclass(frozen=True)
class DetectionOutcome:
    flagged: bool
    matched_label: str | None  # the class of the counted face it found; None when it found none
    on_left_out: bool = False  # paired with a left-out face (neither hit nor false alarm)


@dataclass
class SceneOutcome:
    faces: list[FaceOutcome] = field(default_factory=list)  # counted faces only
    detections: list[DetectionOutcome] = field(default_factory=list)


def score_scene(truth: Sequence[TruthFace], detections: Sequence[Box], flagged: Sequence[bool],
                iou_threshold: float = MATCH_IOU) -> SceneOutcome:
    """Match one frame's detections (with their flagged decisions) against its annotated faces."""
    if len(detections) != len(flagged):
        raise ValueError(f"got {len(detections)} detections but {len(flagged)} flagged decisions")
    pairs = match_faces([t.box for t in truth], detections, iou_threshold)
    det_of = {t: d for t, d in pairs}
    truth_of = {d: t for t, d in pairs}
    out = SceneOutcome()
    for i, t in enumerate(truth):
        if t.counted:
            d = det_of.get(i)
            out.faces.append(FaceOutcome(t.label, t.size, d is not None, d is not None and bool(flagged[d])))
    for d in range(len(detections)):
        t = truth_of.get(d)
        if t is None:
            out.detections.append(DetectionOutcome(bool(flagged[d]), None))
        elif truth[t].counted:
            out.detections.append(DetectionOutcome(bool(flagged[d]), truth[t].label))
        else:
            out.detections.append(DetectionOutcome(bool(flagged[d]), None, on_left_out=True))
    return out


#: The alert's two kinds of mistake on a found face (what ``mistakes.png`` shows).
FALSE_ALERT = "false_alert"  # flagged, and it found a masked face
MISSED_ALERT = "missed_alert"  # not flagged, and it found an alert-class face


def alert_mistakes(truth: Sequence[TruthFace], detections: Sequence[Box], flagged: Sequence[bool],
                   alert_label: str, masked_label: str, iou_threshold: float = MATCH_IOU
                   ) -> list[tuple[int, int, str]]:
    """(detection index, truth index, kind) for every found face the alert got wrong, with
    :func:`score_scene`'s matching: the detections behind the flagged precision's misses
    (:data:`FALSE_ALERT`) and the alert recall's found-but-not-flagged faces (:data:`MISSED_ALERT`).
    Faces left out of the figures are left out here too."""
    if len(detections) != len(flagged):
        raise ValueError(f"got {len(detections)} detections but {len(flagged)} flagged decisions")
    out = []
    for t, d in sorted(match_faces([f.box for f in truth], detections, iou_threshold)):
        face = truth[t]
        if not face.counted:
            continue
        if flagged[d] and face.label == masked_label:
            out.append((d, t, FALSE_ALERT))
        elif not flagged[d] and face.label == alert_label:
            out.append((d, t, MISSED_ALERT))
    return out


# --------------------------------------------------------------------------------------------
# Many scenes
# --------------------------------------------------------------------------------------------


def fraction(part: int, whole: int) -> float | None:
    """part / whole, None when there is nothing to divide (shown as a dash, never as 0 or 1)."""
    return part / whole if whole else None


def _recall(faces: Sequence[FaceOutcome]) -> dict:
    found = sum(f.found for f in faces)
    return {"faces": len(faces), "found": found, "recall": fraction(found, len(faces))}


def summarize(scenes: Sequence[SceneOutcome], labels: Sequence[str], alert_label: str,
              masked_label: str, other_label: str | None = None) -> dict:
    """Every figure of the report for one detector over ``scenes``.

    ``labels``: the classes reported one by one (all annotated classes); ``alert_label``: the
    class an alert is for (without_mask); ``masked_label``: with_mask; ``other_label``: a class
    left out of the flagged precision and reported on its own (incorrect_mask), or None.

    * ``alert_recall``: alert-class faces found AND flagged / all alert-class faces;
    * ``flagged_precision``: flagged detections that found an alert-class face / flagged
      detections that found an alert- or masked-class face (``other_label`` faces left out);
    * ``unmatched`` / ``flagged_unmatched``: detections that found no annotated face at all.
    """
    faces = [f for s in scenes for f in s.faces]
    dets = [d for s in scenes for d in s.detections]
    by_size = {bin_name(lo, hi): _recall([f for f in faces if size_bin(f.size) == bin_name(lo, hi)])
               for lo, hi in SIZE_BINS}
    alert_faces = [f for f in faces if f.label == alert_label]
    hits = sum(f.found and f.flagged for f in alert_faces)
    judged = [d for d in dets if d.flagged and d.matched_label in (alert_label, masked_label)]
    right = sum(d.matched_label == alert_label for d in judged)
    out = {
        "scenes": len(scenes),
        **_recall(faces),
        "by_class": {lab: _recall([f for f in faces if f.label == lab]) for lab in labels},
        "by_size": by_size,
        f"{masked_label}_{MASKED_MIN_SIZE}px": _recall(
            [f for f in faces if f.label == masked_label and f.size >= MASKED_MIN_SIZE]),
        "alert_recall": {"faces": len(alert_faces), "found_and_flagged": hits,
                         "recall": fraction(hits, len(alert_faces))},
        "flagged_precision": {"flagged": len(judged), f"really_{alert_label}": right,
                              "precision": fraction(right, len(judged))},
        "detections": len(dets),
        "unmatched": sum(d.matched_label is None and not d.on_left_out for d in dets),
        "flagged_unmatched": sum(d.flagged and d.matched_label is None and not d.on_left_out for d in dets),
        "on_left_out_faces": sum(d.on_left_out for d in dets),
    }
    if other_label is not None:
        other = [f for f in faces if f.label == other_label]
        out[other_label] = {"faces": len(other), "found": sum(f.found for f in other),
                            "found_and_flagged": sum(f.found and f.flagged for f in other),
                            "recall": fraction(sum(f.found for f in other), len(other))}
    return out
