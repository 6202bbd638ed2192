"""Is this box a face's chin and neck rather than another face?

Why: below a score of about 0.6 YuNet also boxes the chin, mask and neck under a face it has
already found (``../shared/media/demo2.jpg``: the face at 0.89 and, under it, a 0.58 box over
the mask, chin and neck). At a door that box stays put frame after frame, so the tracker would
follow it like a second person. Its shape gives it away: it starts inside the stronger face's
box, reaches below it, and sits across the same columns. Two real people's faces overlap like
that only when one is hidden behind the other: on the faces-voc val and test scenes (265 photos,
951 faces, crowds included) the rule dropped nothing at all. It is for the close faces at a door.

Pure functions on :class:`~device.detectors.base.Face` lists, used by the YuNet detectors on
their own output and by the mirror pass on the merged one.
"""

from __future__ import annotations

from collections.abc import Sequence

from device.detectors.base import Face

#: Only detections scoring under this are checked: a confident detection is a face wherever it
#: sits (YuNet's chin boxes measured 0.55-0.6; its real faces mostly score 0.8-0.95).
CHIN_MAX_SCORE = 0.6
#: Share of the narrower box's width the two boxes must have in common to count as one column.
SAME_COLUMNS = 0.5


def is_chin_of(candidate: Face, face: Face, same_columns: float = SAME_COLUMNS) -> bool:
    """True when ``candidate`` starts inside ``face`` (its top edge between face's top and
    bottom), ends below it, and shares at least ``same_columns`` of the narrower width."""
    x0, y0, x1, y1 = candidate.box
    fx0, fy0, fx1, fy1 = face.box
    narrower = min(x1 - x0, fx1 - fx0)
    if narrower <= 0:
        return False
    shared = max(0.0, min(x1, fx1) - max(x0, fx0))
    return fy0 < y0 < fy1 < y1 and shared >= same_columns * narrower


def drop_chins(faces: Sequence[Face], max_score: float = CHIN_MAX_SCORE) -> list[Face]:
    """``faces`` without those scoring under ``max_score`` that are the chin of a stronger kept
    face; the rest keep their order."""
    kept: list[Face] = []
    dropped: set[int] = set()
    for i in sorted(range(len(faces)), key=lambda k: -faces[k].score):
        face = faces[i]
        if face.score < max_score and any(g.score > face.score and is_chin_of(face, g) for g in kept):
            dropped.add(i)
            continue
        kept.append(face)
    return [f for i, f in enumerate(faces) if i not in dropped]
