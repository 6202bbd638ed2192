"""Where a detector's box sits on a face: each detector's box moved onto the face as annotated.

Detectors draw their boxes their own way. YuNet's takes in the forehead: against the faces-voc
annotations (brows to chin) its centre sits 0.13 of its side higher and it is ~10 % larger. The
classifier learns from faces-classify's tight crops (brows to chin, the face filling the picture)
and from the faces-voc scene faces cut where the daemon's detector finds them
(:mod:`train.data.detector_boxes`); cropping the detector's raw box shows it the forehead and cuts
off the chin, the part that tells a mask under the nose from one worn right, and the two sources
frame a face differently. A :class:`BoxCalibration` moves and resizes a detector's box onto the
face as annotated, and the daemon's crops (:mod:`device.pipeline`) and the import's crops of scene
faces use it alike, so training and the Pi see the same framing. Tracking, events and snapshots
keep the detector's own box; so does the scene benchmark's matching.

The numbers come from :func:`fit_calibration` on detector boxes matched to annotated faces, which
``maskwatch evaluate-scenes`` reports for every detector it runs (``box_calibration`` in
report.json); each detector's constant says which scenes it was fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BoxCalibration:
    """The annotated face relative to a detector box, in units of the box's longer side ``s``:
    its centre is ``(dx * s, dy * s)`` from the box's centre (positive: right, down) and it is
    ``width * s`` by ``height * s``. The default changes nothing."""

    dx: float = 0.0
    dy: float = 0.0
    width: float = 1.0
    height: float = 1.0

    def __post_init__(self) -> None:
        for name in ("dx", "dy", "width", "height"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"box calibration {name} must be a finite number, got {getattr(self, name)!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"box calibration width and height must be > 0, got {self.width!r}, {self.height!r}")

    @property
    def is_identity(self) -> bool:
        # compared field by field: this runs on every frame, and a new BoxCalibration() to compare
        # with would run __post_init__'s checks each time
        return (self.dx, self.dy, self.width, self.height) == (0.0, 0.0, 1.0, 1.0)

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 detector boxes -> the (N, 4) face boxes to crop, float32.

        A box with the default calibration comes back as it is, not merely close to it."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if self.is_identity:
            return b.copy()
        side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        cx = (b[:, 0] + b[:, 2]) / 2 + self.dx * side
        cy = (b[:, 1] + b[:, 3]) / 2 + self.dy * side
        half_w, half_h = self.width * side / 2, self.height * side / 2
        return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)

    def describe(self) -> str:
        """One line for ``maskwatch-device check`` and logs."""
        if self.is_identity:
            return "the detector's box as it is"
        return (f"the detector's box moved by {self.dx:+.3f}, {self.dy:+.3f} and made {self.width:.3f} x "
                f"{self.height:.3f} of its longer side")

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


#: What a detector that says nothing gets: its boxes are cropped as they are.
IDENTITY = BoxCalibration()


def fit_calibration(detected: Sequence[Sequence[float]], annotated: Sequence[Sequence[float]]) -> BoxCalibration:
    """The calibration that moves ``detected`` boxes onto the ``annotated`` faces they matched
    (same order, one pair per row): the mean offset of the centres and the geometric mean of the
    sizes, both in units of each detector box's longer side (the least-squares answer for the
    offsets and the log sizes)."""
    d = np.asarray(detected, dtype=np.float64).reshape(-1, 4)
    a = np.asarray(annotated, dtype=np.float64).reshape(-1, 4)
    if len(d) != len(a):
        raise ValueError(f"got {len(d)} detected boxes but {len(a)} annotated ones")
    if not len(d):
        raise ValueError("fitting a box calibration needs at least one matched pair")
    side = np.maximum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1])
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    if np.any(side <= 0) or np.any(aw <= 0) or np.any(ah <= 0):
        raise ValueError("fitting a box calibration needs boxes with positive width and height")
    dx = ((a[:, 0] + a[:, 2]) - (d[:, 0] + d[:, 2])) / 2 / side
    dy = ((a[:, 1] + a[:, 3]) - (d[:, 1] + d[:, 3])) / 2 / side
    return BoxCalibration(float(dx.mean()), float(dy.mean()),
                          float(np.exp(np.log(aw / side).mean())), float(np.exp(np.log(ah / side).mean())))


def calibration_of(detector: object) -> BoxCalibration:
    """A detector's ``box_calibration``, or :data:`IDENTITY` for one that has none (a test's fake,
    a detector whose boxes were never compared with annotated faces)."""
    cal = getattr(detector, "box_calibration", None)
    return cal if isinstance(cal, BoxCalibration) else IDENTITY
