"""``maskwatch data add-masks``: draw synthetic masks on unmasked faces.

Masked photos are scarcer than unmasked ones, and a "without_mask" photo plus a drawn mask is a
matched pair the classifier cannot tell apart by anything except the mask. The mask is placed
from the detector's six keypoints in a face frame whose axes are the eye line and the eye-to-mouth
direction, so it follows the face's roll, scale and (roughly) yaw. It is rendered with
anti-aliased edges, fabric texture and the scene's own lighting so that it does not look pasted:
a classifier that learns "sharp flat-coloured blob = mask" would fail on real masks.

Keypoint order (the detector's): subject's right eye, left eye, nose tip, mouth centre,
right ear tragion, left ear tragion. YuNet reports no ears (NaN there,
:func:`device.detectors.yunet.yunet_rows_to_faces`): the face box's sides stand in for them.

Masks worn wrong (label ``incorrect_mask``): ``below_nose`` puts the top edge between the nose
tip and the upper lip (nose uncovered), ``on_chin`` pulls the mask down under the mouth (nose and
mouth uncovered). ``--style worn-wrong`` writes one of each per face photo.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from device.contract import INCORRECT_MASK, WITH_MASK
from device.images import list_images, read_rgb

log = logging.getLogger(__name__)

SHAPES = ("surgical", "cloth", "n95")
PATTERNS = ("plain", "stripes", "dots", "plaid")
PLACEMENTS = ("correct", "below_nose", "on_chin")
#: The placements that make a mask "worn wrong" (label incorrect_mask).
WORN_WRONG: tuple[str, ...] = ("below_nose", "on_chin")
#: ``--style``: correct masks (a fraction below the nose), or one image per worn-wrong placement.
STYLES = ("correct", "worn-wrong")

# Keypoint indices.
R_EYE, L_EYE, NOSE, MOUTH, R_EAR, L_EAR = range(6)

Color = tuple[int, int, int]


@dataclass(frozen=True)
class MaskStyle:
    """How one mask looks. Lengths are in units of the inter-ocular distance (IOD)."""

    shape: str = "surgical"
    color: Color = (118, 172, 214)
    pattern: str = "plain"
    pattern_color: Color = (255, 255, 255)
    #: Period of stripes / dots / plaid, in IOD.
    pattern_scale: float = 0.22
    pattern_angle: float = 0.0
    #: Amplitude of multiplicative fabric noise.
    texture: float = 0.05
    strap_color: Color = (236, 236, 236)
    strap_width: float = 0.035
    placement: str = "correct"
    #: 0..1: how much of the scene's lighting shows on the mask (1 = all of it).
    shading: float = 0.6
    opacity: float = 0.97
    #: Multipliers of the mask's width and of its height below the mouth.
    width: float = 1.0
    depth: float = 1.0
    #: Shift of the top edge, in eye-to-mouth units (+ = lower).
    top_shift: float = 0.0
    valve: bool = False

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"mask shape must be one of {SHAPES}, got {self.shape!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"mask pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"mask placement must be one of {PLACEMENTS}, got {self.placement!r}")

    @property
    def label(self) -> str:
        return placement_label(self.placement)


def placement_label(placement: str) -> str:
    """The class a mask in this placement teaches: only a correctly worn mask is ``with_mask``."""
    return WITH_MASK if placement == "correct" else INCORRECT_MASK


# --------------------------------------------------------------------------------------------
# Styles
# --------------------------------------------------------------------------------------------

_SURGICAL_COLORS: list[Color] = [
    (118, 172, 214), (140, 192, 226), (96, 158, 204), (232, 236, 238), (150, 205, 190),
    (236, 182, 202), (46, 48, 52),
]
_CLOTH_COLORS: list[Color] = [
    (28, 28, 32), (36, 46, 84), (118, 120, 126), (224, 222, 214), (168, 40, 46), (202, 182, 150),
    (64, 96, 70), (90, 60, 110), (210, 120, 60),
]
_N95_COLORS: list[Color] = [(240, 240, 234), (226, 220, 204), (184, 184, 184), (40, 40, 44)]


def _jitter(rng: np.random.Generator, c: Color, amount: int = 12) -> Color:
    """Mostly a brightness change: independent channel noise turns a white mask pink."""
    shift = rng.integers(-amount, amount + 1) + rng.integers(-amount // 4, amount // 4 + 1, 3)
    return tuple(int(v) for v in np.clip(np.asarray(c) + shift, 0, 255))


def random_style(rng: np.random.Generator, placement: str = "correct") -> MaskStyle:
    """A varied but plausible mask: surgical (pleated), cloth (rounded, plain or printed) or N95."""
    shape = str(rng.choice(SHAPES, p=[0.42, 0.40, 0.18]))
    pattern, pattern_color = "plain", (255, 255, 255)
    valve = False
    if shape == "surgical":
        color = _SURGICAL_COLORS[rng.choice(len(_SURGICAL_COLORS), p=[0.34, 0.18, 0.12, 0.18, 0.07, 0.05, 0.06])]
        strap = (240, 240, 240) if sum(color) > 200 else (30, 30, 30)
        if rng.random() < 0.5:
            strap = color
    elif shape == "cloth":
        color = _CLOTH_COLORS[rng.integers(len(_CLOTH_COLORS))]
        if rng.random() < 0.4:
            pattern = str(rng.choice(PATTERNS[1:]))
            # A print contrasts with its cloth: light on dark, dark on light.
            lum = 0.3 * color[0] + 0.59 * color[1] + 0.11 * color[2]
            base = _CLOTH_COLORS[rng.integers(len(_CLOTH_COLORS))]
            pattern_color = (240, 240, 236) if lum < 110 else base if base != color else (30, 30, 34)
        strap = color
    else:
        color = _N95_COLORS[rng.choice(len(_N95_COLORS), p=[0.5, 0.25, 0.15, 0.1])]
        strap = (236, 236, 236) if rng.random() < 0.5 else (70, 110, 190)
        valve = bool(rng.random() < 0.3)
    return MaskStyle(
        shape=shape,
        color=_jitter(rng, color),
        pattern=pattern,
        pattern_color=_jitter(rng, pattern_color, 8),
        pattern_scale=float(rng.uniform(0.14, 0.3)),
        pattern_angle=float(rng.uniform(-0.6, 0.6) + (math.pi / 4 if rng.random() < 0.3 else 0.0)),
        texture=float(rng.uniform(0.02, 0.09)),
        strap_color=_jitter(rng, strap, 8),
        strap_width=float(rng.uniform(0.025, 0.045)),
        placement=placement,
        shading=float(rng.uniform(0.45, 0.8)),
        opacity=float(rng.uniform(0.94, 1.0)),
        width=float(rng.uniform(0.92, 1.06)),
        depth=float(rng.uniform(0.9, 1.1)),
        top_shift=float(rng.uniform(-0.05, 0.06)),
        valve=valve,
    )


# --------------------------------------------------------------------------------------------
# Geometry (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceFrame:
    """Affine face coordinates: image point = origin + s * lateral + t * down.

    ``s`` runs along the eye line (eyes at s = -0.5 / +0.5, so one unit is the inter-ocular
    distance); ``t`` runs from the eye line (t = 0) towards the mouth (t = 1 at the mouth).
    """

    origin: np.ndarray
    lateral: np.ndarray
    down: np.ndarray
    nose: tuple[float, float]
    mouth: tuple[float, float]
    right_ear: float  # s of the right ear tragion (negative)
    left_ear: float  # s of the left ear tragion (positive)

    @property
    def iod(self) -> float:
        return float(np.hypot(*self.lateral))

    @property
    def matrix(self) -> np.ndarray:
        """2x3 matrix mapping (s, t, 1) to image (x, y)."""
        return np.column_stack([self.lateral, self.down, self.origin]).astype(np.float64)

    def to_image(self, st: np.ndarray) -> np.ndarray:
        st = np.asarray(st, np.float64).reshape(-1, 2)
        return self.origin + st[:, :1] * self.lateral + st[:, 1:] * self.down

    def to_face(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        basis = np.column_stack([self.lateral, self.down])
        return np.linalg.solve(basis, (xy - self.origin).T).T


def face_frame(keypoints: np.ndarray, box: tuple[float, float, float, float] | None = None) -> FaceFrame:
    """Face frame from the six keypoints, with implausible detector output clamped.

    The down axis is the eye-centre-to-mouth vector, but kept within 30 degrees of the eye line's
    perpendicular and 0.75..1.6 IOD long: a noisy mouth point must not shear the mask off the face.
    Ears a detector does not report (YuNet: NaN) are taken from the face ``box``'s sides at the
    height of the eyes, which is where its box puts the face outline.
    """
    kp = np.array(keypoints, np.float64)
    if kp.shape == (6, 2) and box is not None and not np.isfinite(kp[R_EAR:]).all() and np.isfinite(kp[:R_EAR]).all():
        x0, _, x1, _ = (float(v) for v in box)
        eye_y = float(kp[R_EYE, 1] + kp[L_EYE, 1]) / 2.0
        # The subject's right ear is on the side of the right eye.
        right_x, left_x = (x0, x1) if kp[R_EYE, 0] <= kp[L_EYE, 0] else (x1, x0)
        kp[R_EAR] = (right_x, eye_y + 0.2 * abs(kp[MOUTH, 1] - eye_y))
        kp[L_EAR] = (left_x, eye_y + 0.2 * abs(kp[MOUTH, 1] - eye_y))
    if kp.shape != (6, 2) or not np.all(np.isfinite(kp)):
        raise ValueError(f"keypoints must be a finite (6, 2) array, got shape {kp.shape}")
    origin = (kp[R_EYE] + kp[L_EYE]) / 2.0
    lateral = kp[L_EYE] - kp[R_EYE]
    iod = float(np.hypot(*lateral))
    if iod < 1.0:
        raise ValueError(f"eye keypoints are {iod:.2f} px apart: too close to place a mask")
    perp = np.array([-lateral[1], lateral[0]])
    to_mouth = kp[MOUTH] - origin
    if float(perp @ to_mouth) < 0:
        perp = -perp
    length = float(np.clip(np.hypot(*to_mouth), 0.75 * iod, 1.6 * iod))
    angle = math.atan2(to_mouth[1], to_mouth[0]) if np.hypot(*to_mouth) > 1e-6 else math.atan2(perp[1], perp[0])
    base = math.atan2(perp[1], perp[0])
    delta = (angle - base + math.pi) % (2 * math.pi) - math.pi
    delta = float(np.clip(delta, -math.radians(30), math.radians(30)))
    down = length * np.array([math.cos(base + delta), math.sin(base + delta)])
    frame = FaceFrame(origin, lateral, down, (0.0, 0.6), (0.0, 1.0), -1.0, 1.0)
    st = frame.to_face(kp)
    nose = (float(np.clip(st[NOSE, 0], -0.45, 0.45)), float(np.clip(st[NOSE, 1], 0.3, 0.85)))
    mouth = (float(np.clip(st[MOUTH, 0], -0.45, 0.45)), float(np.clip(st[MOUTH, 1], 0.85, 1.15)))
    # A turned head hides one ear behind the cheek; the detector still guesses it close to the
    # face outline, so a small |s| is kept (down to 0.35) rather than replaced by a typical value.
    right = float(np.clip(st[R_EAR, 0], -1.5, -0.35))
    left = float(np.clip(st[L_EAR, 0], 0.35, 1.5))
    return FaceFrame(origin, lateral, down, nose, mouth, right, left)


def _catmull_rom_closed(points: np.ndarray, per_segment: int = 16) -> np.ndarray:
    """Smooth closed curve through ``points`` (centripetal-free uniform Catmull-Rom)."""
    p = np.asarray(points, np.float64)
    n = len(p)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(n):
        p0, p1, p2, p3 = p[(i - 1) % n], p[i], p[(i + 1) % n], p[(i + 2) % n]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    return np.concatenate(out)


@dataclass(frozen=True)
class MaskLayout:
    """Where a mask goes, in face coordinates (s, t)."""

    outline: np.ndarray  # (N, 2) closed smooth outline
    control: np.ndarray  # the control points the outline passes through
    top: float  # t of the top edge at the centre line
    chin: float  # t of the bottom edge at the centre line
    centre: float  # s of the centre line at the nose
    sides: tuple[float, float]  # s of the right and left side edges
    strap_anchors: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (upper, lower) R, L


def mask_layout(frame: FaceFrame, style: MaskStyle) -> MaskLayout:
    """Control points of the mask outline for one face and style (pure geometry)."""
    tn = frame.nose[1]
    cn = 0.6 * frame.nose[0]  # centre line bends towards the nose on a turned head
    cm = frame.mouth[0]
    w_r = 0.9 * frame.right_ear * style.width
    w_l = 0.9 * frame.left_ear * style.width
    depth = style.depth
    chin = 1.0 + 0.72 * depth
    if style.placement == "correct":
        top = 0.5 * tn + style.top_shift * 0.5
        side_top = 0.85 * tn + 0.05
    elif style.placement == "below_nose":
        # Below the nose: the top edge sits between the nostrils and the upper lip.
        top = tn + (1.0 - tn) * (0.42 + 0.1 * style.top_shift)
        side_top = max(top + 0.05, 0.85 * tn + 0.12)
    else:
        return _on_chin(frame, style)
    if style.shape == "surgical":
        # Rectangular, flat top edge, straight sides, shallow bottom curve.
        top_mid = top + 0.05
        pts = [
            (cn, top), (cn + 0.5 * w_l, top_mid), (w_l, side_top), (0.98 * w_l, 1.25),
            (0.72 * w_l, 1.0 + 0.55 * depth), (cm, chin - 0.08), (0.72 * w_r, 1.0 + 0.55 * depth),
            (0.98 * w_r, 1.25), (w_r, side_top), (cn + 0.5 * w_r, top_mid),
        ]
        chin -= 0.08
    elif style.shape == "cloth":
        # Rounded, reaching well under the chin, a ridge over the nose.
        pts = [
            (cn, top - 0.02), (cn + 0.45 * w_l, top + 0.12), (w_l, side_top + 0.02), (0.92 * w_l, 1.2),
            (0.58 * w_l, 1.0 + 0.58 * depth), (cm, chin), (0.58 * w_r, 1.0 + 0.58 * depth),
            (0.92 * w_r, 1.2), (w_r, side_top + 0.02), (cn + 0.45 * w_r, top + 0.12),
        ]
    else:  # n95: a cup, narrower, pointed over the nose
        w_r, w_l = 0.86 * w_r, 0.86 * w_l
        pts = [
            (cn, top - 0.04), (cn + 0.42 * w_l, top + 0.16), (w_l, side_top + 0.08), (0.9 * w_l, 1.22),
            (0.5 * w_l, 1.0 + 0.55 * depth), (cm, chin - 0.05), (0.5 * w_r, 1.0 + 0.55 * depth),
            (0.9 * w_r, 1.22), (w_r, side_top + 0.08), (cn + 0.42 * w_r, top + 0.16),
        ]
        chin -= 0.05
    control = np.array(pts, np.float64)
    outline = _catmull_rom_closed(control)
    anchors = (
        (control[8], 0.5 * (control[7] + control[6])),  # right: upper, lower
        (control[2], 0.5 * (control[3] + control[4])),  # left
    )
    return MaskLayout(outline, control, top, chin, cn, (w_r, w_l), anchors)


def _on_chin(frame: FaceFrame, style: MaskStyle) -> MaskLayout:
    """A correctly shaped mask pulled down onto the chin: nose and mouth uncovered.

    The correct layout is moved down so its top edge sits under the lower lip, squeezed
    vertically (the fabric bunches up under the chin) and narrowed where the jaw narrows.
    """
    worn = mask_layout(frame, MaskStyle(**{**asdict(style), "placement": "correct"}))
    mouth_t = frame.mouth[1]
    top = mouth_t + 0.24 + 0.3 * style.top_shift
    squeeze, narrow = 0.8, 0.88

    def move(st: np.ndarray) -> np.ndarray:
        st = np.array(st, np.float64).reshape(-1, 2)
        st[:, 0] = worn.centre + (st[:, 0] - worn.centre) * narrow
        st[:, 1] = top + (st[:, 1] - worn.top) * squeeze
        return st

    control = move(worn.control)
    anchors = tuple((move(u)[0], move(lo)[0]) for u, lo in worn.strap_anchors)
    w_r, w_l = (worn.centre + (w - worn.centre) * narrow for w in worn.sides)
    return MaskLayout(move(worn.outline), control, top, float(move([[0, worn.chin]])[0, 1]), worn.centre,
                      (w_r, w_l), anchors)


def strap_paths(frame: FaceFrame, layout: MaskLayout, style: MaskStyle) -> list[np.ndarray]:
    """Ear loops (surgical, cloth) or head straps (N95), in face coordinates.

    A strap on the far side of a turned head is hidden by the cheek, so it is left out when that
    ear is close to the face's centre line.
    """
    paths = []
    for ear_s, (upper, lower) in zip((frame.right_ear, frame.left_ear), layout.strap_anchors, strict=True):
        if abs(ear_s) < 0.6:
            continue
        sign = math.copysign(1.0, ear_s)
        ear = np.array([ear_s * 1.02, 0.32])
        if style.shape == "n95":
            # Two elastic bands running back over and under the ear.
            paths.append(_smooth_open(np.array([upper, [ear_s * 0.98, 0.12], [ear_s * 0.96, -0.05]])))
            paths.append(_smooth_open(np.array([lower, [ear_s * 0.92, 1.3], [ear_s * 0.8, 1.6]])))
        else:
            loop = [upper, ear + [0.0, -0.22], ear + [sign * 0.1, -0.05], ear + [sign * 0.1, 0.25],
                    ear + [0.0, 0.45], lower]
            paths.append(_smooth_open(np.array(loop)))
    return paths


def _smooth_open(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    closed = _catmull_rom_closed(p, per_segment)
    # Drop the segments that wrap around through the phantom end points.
    return closed[per_segment: per_segment * (len(points))]


def mask_polygon(keypoints: np.ndarray, style: MaskStyle,
                 box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """The mask's outline in image pixels (N, 2), for tests and for callers that need the region."""
    frame = face_frame(keypoints, box)
    return frame.to_image(mask_layout(frame, style).outline)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_SS = 2  # supersampling factor for the coverage mask
_SHIFT = 4  # fixed-point bits for cv2 drawing


def _fixed(xy: np.ndarray, offset: np.ndarray) -> np.ndarray:
    return np.round((xy - offset) * _SS * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _coverage(shape: tuple[int, int], polys: list[np.ndarray], offset: np.ndarray,
              lines: list[tuple[np.ndarray, float]] = ()) -> np.ndarray:
    """Anti-aliased coverage (0..1 float32) of filled polygons and thick polylines in an ROI."""
    import cv2

    h, w = shape
    big = np.zeros((h * _SS, w * _SS), np.uint8)
    if polys:
        cv2.fillPoly(big, [_fixed(p, offset) for p in polys], 255, cv2.LINE_AA, _SHIFT)
    for path, width in lines:
        thick = max(1, int(round(width * _SS)))
        cv2.polylines(big, [_fixed(path, offset)], False, 255, thick, cv2.LINE_AA, _SHIFT)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _fabric(style: MaskStyle, s: np.ndarray, t: np.ndarray, layout: MaskLayout, iod: float,
            rng: np.random.Generator) -> np.ndarray:
    """Mask colour per ROI pixel (H, W, 3 float32, 0..255): print, pleats, seam, noise, curvature."""
    import cv2

    base = np.asarray(style.color, np.float32)
    rgb = np.broadcast_to(base, s.shape + (3,)).copy()
    # Print, in face coordinates so that it turns and scales with the face.
    if style.pattern != "plain":
        ca, sa = math.cos(style.pattern_angle), math.sin(style.pattern_angle)
        u = (s * ca + t * sa) / style.pattern_scale
        v = (-s * sa + t * ca) / style.pattern_scale
        if style.pattern == "stripes":
            ink = np.clip((np.cos(2 * np.pi * u) - 0.3) * 3.0, 0, 1)
        elif style.pattern == "dots":
            du, dv = u - np.round(u), v - np.round(v)
            ink = np.clip((0.28 - np.hypot(du, dv)) * 12.0, 0, 1)
        else:  # plaid
            ink = 0.55 * np.clip((np.cos(2 * np.pi * u) - 0.5) * 3, 0, 1) + \
                  0.45 * np.clip((np.cos(2 * np.pi * v) - 0.5) * 3, 0, 1)
        rgb += ink[..., None] * (np.asarray(style.pattern_color, np.float32) - base)
    light = np.ones(s.shape, np.float32)
    w_r, w_l = layout.sides
    rel = np.where(s >= layout.centre, (s - layout.centre) / max(w_l - layout.centre, 1e-3),
                   (s - layout.centre) / min(w_r - layout.centre, -1e-3))
    rel = np.clip(rel, 0.0, 1.2)
    # The mask is curved around the face: it darkens towards the sides and under the chin.
    light *= 1.0 - 0.22 * rel ** 2
    light *= 1.0 - 0.18 * np.clip((t - 1.25) / 0.5, 0, 1)
    if style.shape == "surgical":
        # Three horizontal pleats: a shadow line with a highlight just above, fading at the sides.
        span = layout.chin - layout.top
        for k in range(3):
            tk = layout.top + span * (0.3 + 0.2 * k) + 0.04 * rel ** 2
            d = (t - tk) / 0.018
            light += (0.10 * np.exp(-((d + 1.6) ** 2)) - 0.16 * np.exp(-(d ** 2))) * (1.0 - 0.5 * rel)
        # Bound edge at the top (the nose wire) slightly lighter.
        light += 0.06 * np.exp(-(((t - layout.top - 0.03) / 0.025) ** 2)) * (rel < 1.0)
    elif style.shape == "cloth":
        # Centre seam.
        light -= 0.12 * np.exp(-(((s - layout.centre) / 0.012) ** 2)) * (t > layout.top)
    else:
        # Moulded cup: brighter on its front, a ridge line, optionally a valve.
        light += 0.08 * np.exp(-((rel / 0.5) ** 2))
        light -= 0.06 * np.exp(-(((t - 0.5 * (layout.top + layout.chin) - 0.1 * rel) / 0.02) ** 2))
        if style.valve:
            vx = layout.centre + 0.4 * w_l
            vd = np.hypot(s - vx, t - 1.08)
            rgb[vd < 0.14] = (170, 170, 175) if sum(style.color) > 300 else (60, 60, 64)
            light -= 0.15 * np.exp(-(((vd - 0.14) / 0.012) ** 2))
    # Fabric noise: a fine grain plus a soft blotchy component, both tied to the mask's scale.
    h, w = s.shape
    grain = rng.standard_normal((h, w)).astype(np.float32)
    if iod > 30:
        grain = cv2.GaussianBlur(grain, (0, 0), 0.6)
    coarse_n = max(2, int(round(max(h, w) / max(iod * 0.15, 2.0))))
    coarse = cv2.resize(rng.standard_normal((coarse_n, coarse_n)).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    light *= 1.0 + style.texture * (0.7 * grain + 0.35 * coarse)
    return rgb * light[..., None]


def _scene_light(roi: np.ndarray, inside: np.ndarray, iod: float, strength: float) -> np.ndarray:
    """Relative lighting of the scene under the mask, so a mask in shadow is in shadow too."""
    import cv2

    lum = roi.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    sigma = max(1.0, 0.25 * iod)
    blurred = cv2.GaussianBlur(lum, (0, 0), sigma)
    ref = float(np.median(blurred[inside])) if inside.any() else float(np.median(blurred))
    local = np.clip(blurred / max(ref, 1.0), 0.55, 1.4)
    # The overall exposure: a white mask in a dim photo is grey.
    exposure = float(np.clip((ref / 150.0) ** 0.6, 0.4, 1.15))
    return (local ** strength) * (exposure ** strength)


def draw_mask(rgb: np.ndarray, keypoints: np.ndarray, box: tuple[float, float, float, float],
              style: MaskStyle, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``rgb`` (HxWx3 uint8) with a mask drawn on the face given by ``keypoints``.

    ``box`` is the detector's face box; it guards against keypoints that do not belong to it.
    """
    import cv2

    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got shape {img.shape} dtype {img.dtype}")
    frame = face_frame(keypoints, box)
    x0, y0, x1, y1 = (float(v) for v in box)
    bw = max(x1 - x0, y1 - y0)
    if bw <= 0 or frame.iod < 0.12 * bw or frame.iod > 1.5 * bw:
        raise ValueError(f"keypoints (eye distance {frame.iod:.1f} px) do not fit the face box {box}")
    layout = mask_layout(frame, style)
    outline = frame.to_image(layout.outline)
    straps = [frame.to_image(p) for p in strap_paths(frame, layout, style)]
    strap_px = max(1.0, style.strap_width * frame.iod)

    h, w = img.shape[:2]
    allpts = np.vstack([outline, *straps])
    pad = strap_px + 3
    rx0 = int(max(0, math.floor(allpts[:, 0].min() - pad)))
    ry0 = int(max(0, math.floor(allpts[:, 1].min() - pad)))
    rx1 = int(min(w, math.ceil(allpts[:, 0].max() + pad)))
    ry1 = int(min(h, math.ceil(allpts[:, 1].max() + pad)))
    out = img.copy()
    if rx1 - rx0 < 2 or ry1 - ry0 < 2:
        return out
    offset = np.array([rx0, ry0], np.float64)
    roi = img[ry0:ry1, rx0:rx1].astype(np.float32)
    shape = roi.shape[:2]

    body = _coverage(shape, [outline], offset)
    strap_cov = _coverage(shape, [], offset, [(p, strap_px) for p in straps]) if straps else np.zeros(shape, np.float32)

    # Face coordinates of every ROI pixel centre.
    yy, xx = np.mgrid[ry0:ry1, rx0:rx1].astype(np.float64)
    st = frame.to_face(np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5]))
    s = st[:, 0].reshape(shape).astype(np.float32)
    t = st[:, 1].reshape(shape).astype(np.float32)

    fabric = _fabric(style, s, t, layout, frame.iod, rng)
    inside = body > 0.5
    scene = _scene_light(roi, inside, frame.iod, style.shading)
    # Edges roll away from the light: darken a thin band along the outline.
    edge_sigma = max(0.7, 0.04 * frame.iod)
    rim = cv2.GaussianBlur(body, (0, 0), edge_sigma)
    fabric *= (0.8 + 0.2 * np.clip(rim * 2 - 0.6, 0, 1))[..., None]
    fabric *= scene[..., None]
    strap_rgb = np.asarray(style.strap_color, np.float32) * (0.85 * scene[..., None] + 0.1)
    # Soften by a fraction of a pixel for small faces so the mask is no sharper than the photo.
    soft = 0.35 if frame.iod < 40 else 0.5
    body = cv2.GaussianBlur(body, (0, 0), soft)
    strap_cov = cv2.GaussianBlur(strap_cov, (0, 0), soft) * 0.9

    a_strap = np.clip(strap_cov * (1.0 - body), 0, 1)[..., None]
    a_body = (body * style.opacity)[..., None]
    comp = roi * (1 - a_strap) + strap_rgb * a_strap
    comp = comp * (1 - a_body) + fabric * a_body
    out[ry0:ry1, rx0:rx1] = np.clip(np.round(comp), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# Detection helpers
# --------------------------------------------------------------------------------------------


def detect_faces(detector, rgb: np.ndarray, min_eye_px: float = 4.0) -> list:
    """Faces in ``rgb``; a tight face crop is retried with a padded border.

    BlazeFace expects some context around a face: on a photo that is nothing but the face it
    often finds nothing, so the image is padded by its edge pixels and detected again.
    """
    import cv2

    faces = [f for f in detector.detect(rgb) if _usable(f, min_eye_px)]
    if faces:
        return faces
    h, w = rgb.shape[:2]
    pad = int(round(0.35 * max(h, w)))
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = []
    for f in detector.detect(padded):
        if not _usable(f, min_eye_px):
            continue
        kp = np.asarray(f.keypoints, np.float32) - pad
        box = tuple(float(v) - pad for v in f.box)
        found.append(type(f)(box=box, score=f.score, keypoints=kp))
    return found


def _usable(face, min_eye_px: float) -> bool:
    """Keypoints present, eyes, nose and mouth finite (ears may be missing: YuNet has none), and
    eyes far enough apart to place a mask."""
    if face.keypoints is None:
        return False
    kp = np.asarray(face.keypoints, np.float64)
    return kp.shape == (6, 2) and bool(np.isfinite(kp[:R_EAR]).all()) and float(np.hypot(*(kp[L_EYE] - kp[R_EYE]))) >= min_eye_px


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(rgb).save(tmp, format="JPEG", quality=quality)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@dataclass
class AddMasksReport:
    images: int = 0
    written: int = 0
    faces_masked: int = 0
    no_face: int = 0
    unreadable: int = 0
    unmaskable: int = 0
    by_label: dict | None = None
    by_placement: dict | None = None
    skipped: list | None = None
    style: str = "correct"
    detector: str = ""
    #: When the faces came from a dataset's split: {"path", "split", "label", "manifest_sha256"}.
    dataset: dict | None = None
    contact_sheet: str | None = None


#: What ``--style worn-wrong`` reads from a dataset by default: its bare faces.
DEFAULT_SOURCE_LABEL = "without_mask"


@dataclass(frozen=True)
class SourceImage:
    """One photo to mask: its file, the name its outputs take, and its dataset row (if any)."""

    path: Path
    rel: str
    row: object | None = None  # device.manifest.Row


def source_images(src: Path, split: str | None, label: str | None) -> tuple[list[SourceImage], dict | None]:
    """The photos to mask: every image under ``src``, or one split's rows of a dataset folder.

    Reading a split (``--split train``) is how synthetic faces stay out of val and test: their
    bare originals are train faces, so nothing derived from a val or test face is trained on.
    """
    from device.manifest import manifest_path, manifest_sha256, read_manifest

    if split is None:
        if label is not None:
            raise ValueError("--label picks rows of a dataset: it needs --split")
        return [SourceImage(p, p.relative_to(src).as_posix()) for p in list_images(src)], None
    if not manifest_path(src).exists():
        raise ValueError(f"--split {split}: {src} is not a dataset folder (no manifest.csv; make one with "
                         "`maskwatch data import` and `maskwatch data split`)")
    label = label or DEFAULT_SOURCE_LABEL
    rows = [r for r in read_manifest(src) if r.split == split and r.label == label]
    if not rows:
        raise ValueError(f"{manifest_path(src)}: no {label} rows in the {split!r} split")
    info = {"path": str(src), "split": split, "label": label, "manifest_sha256": manifest_sha256(src)}
    return [SourceImage(src / r.path, r.path, r) for r in rows], info


def _placements(style: str, n: int, incorrect_fraction: float, seed: int,
                also_correct: bool = False) -> list[tuple[str, ...]]:
    """Placements per usable image: correct (exactly round(fraction * n) below the nose, since a
    per-image coin flip misses the fraction on small folders), or every worn-wrong one (and a
    correct one too with ``also_correct``)."""
    if style == "worn-wrong":
        return [(*WORN_WRONG, "correct") if also_correct else WORN_WRONG] * n
    below = set(np.random.default_rng([seed, 0]).permutation(n)[: int(round(incorrect_fraction * n))].tolist())
    return [("below_nose",) if k in below else ("correct",) for k in range(n)]


def add_masks(src: Path, out: Path, incorrect_fraction: float = 0.0, seed: int = 0,
              detector_kind: str | None = None, min_score: float | None = None, style: str = "correct",
              split: str | None = None, label: str | None = None, sheet: int = 96,
              also_correct: bool = False) -> AddMasksReport:
    """Mask every face in every image under ``src`` (or in one split of a dataset folder); write
    ``out/<label>/<name>.jpg``, a report, a contact sheet and, from a dataset, a manifest whose
    rows are all ``train`` (see :func:`source_images`).

    ``also_correct`` (worn-wrong only) adds the same photo with a correctly worn mask, labelled
    ``with_mask``: a matched pair, so that a drawn mask as such does not mean "worn wrong" to the
    classifier, only where it sits does."""
    from tqdm import tqdm

    from device.detectors import make_detector

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if style not in STYLES:
        raise ValueError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    if not 0.0 <= incorrect_fraction <= 1.0:
        raise ValueError(f"--incorrect-fraction must be within 0..1, got {incorrect_fraction}")
    if also_correct and style != "worn-wrong":
        raise ValueError("--also-correct goes with --style worn-wrong")
    if style == "worn-wrong" and incorrect_fraction:
        raise ValueError("--incorrect-fraction is for --style correct; --style worn-wrong masks every face wrongly")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} must not be inside the source folder {src}")
    files, dataset = source_images(src, split, label)
    if not files:
        raise FileNotFoundError(f"no images found under {src}")
    # YuNet by default for worn-wrong masks: it finds masked, turned and small faces that
    # BlazeFace misses, and its nose and mouth points are what these placements hang on.
    detector_kind = detector_kind or ("yunet" if style == "worn-wrong" else "short")
    detector = make_detector(kind=detector_kind, score_threshold=min_score)
    report = AddMasksReport(images=len(files), skipped=[], style=style, detector=detector.describe(), dataset=dataset)
    found: list[tuple[int, SourceImage, list]] = []
    for i, item in enumerate(tqdm(files, desc="add-masks: detect", unit="img", disable=None)):
        try:
            rgb = read_rgb(item.path)
        except ValueError as exc:
            report.unreadable += 1
            report.skipped.append({"file": item.rel, "reason": str(exc)})
            continue
        faces = detect_faces(detector, rgb)
        if not faces:
            report.no_face += 1
            report.skipped.append({"file": item.rel, "reason": "no face found"})
            continue
        found.append((i, item, faces))
    plans = _placements(style, len(found), incorrect_fraction, seed, also_correct)
    labels: Counter = Counter()
    placed: Counter = Counter()
    names: set[str] = set()
    written: list[tuple[Path, str, object | None]] = []
    for (i, item, faces), placements in tqdm(list(zip(found, plans, strict=True)), desc="add-masks: draw",
                                             unit="img", disable=None):
        rgb = read_rgb(item.path)
        stem = PurePosixPath(item.rel).with_suffix("").as_posix().replace("/", "__")
        for k, placement in enumerate(placements):
            # One generator per file and placement: its result does not depend on the other files.
            rng = np.random.default_rng([seed, 1, i] if k == 0 else [seed, 1, i, k])
            masked = rgb
            try:
                for face in faces:
                    masked = draw_mask(masked, face.keypoints, face.box, random_style(rng, placement), rng)
            except ValueError as exc:
                # A face left bare would make the image a wrong masked example: skip it whole.
                report.unmaskable += 1
                report.skipped.append({"file": item.rel, "reason": f"face could not be masked ({exc})"})
                break
            report.faces_masked += len(faces)
            lab = placement_label(placement)
            base = stem if style == "correct" else f"{stem}__{placement}"
            name, n = base, 2
            while name.lower() in names:
                name, n = f"{base}-{n}", n + 1
            names.add(name.lower())
            path = out / lab / f"{name}.jpg"
            write_jpeg(path, masked)
            written.append((path, placement, item.row))
            labels[lab] += 1
            placed[placement] += 1
            report.written += 1
    report.by_label = dict(labels)
    report.by_placement = dict(placed)
    out.mkdir(parents=True, exist_ok=True)
    if dataset is not None:
        _write_manifest(out, written)
    if written and sheet > 0:
        report.contact_sheet = write_contact_sheet(out, written, sheet, seed).name
    (out / "add_masks_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report


def _write_manifest(out: Path, written: list[tuple[Path, str, object | None]]) -> None:
    """Rows of the masked images, all in ``train``, each in its bare original's duplicate group."""
    from device.contract import sha256_file
    from device.manifest import Row, write_manifest

    rows = []
    for path, placement, row in written:
        h, w = read_rgb(path).shape[:2]
        rows.append(Row(path=path.relative_to(out).as_posix(), label=placement_label(placement),
                        source=f"{row.source}#add-masks:{placement}", sha256=sha256_file(path), phash="",
                        group=row.group, width=w, height=h, split="train"))
    write_manifest(out, rows)


def write_contact_sheet(out: Path, written: list[tuple[Path, str, object | None]], limit: int, seed: int) -> Path:
    """``contact_sheet.png``: a seeded sample of what was written, captioned with the placement."""
    from train.plots import contact_sheet

    pick = np.random.default_rng([seed, 2]).permutation(len(written))[:limit]
    chosen = [written[k] for k in sorted(pick.tolist(), key=lambda k: (written[k][1], k))]
    images = [read_rgb(p) for p, _, _ in chosen]
    captions = [f"{placement}\n{p.stem[:22]}" for p, placement, _ in chosen]
    return contact_sheet(images, captions, out / "contact_sheet.png",
                         title=f"add-masks: {len(chosen)} of {len(written)} images", cols=12)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, metavar="SRC_DIR",
                        help="folder of unmasked face photos (searched recursively), or a dataset folder with --split")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: OUT/with_mask/ and/or OUT/incorrect_mask/, ready for `maskwatch data import` "
                             "(with --split: a dataset of train rows for `maskwatch train --extra-train`)")
    parser.add_argument("--style", choices=STYLES, default="correct",
                        help="correct: masks worn properly (see --incorrect-fraction); worn-wrong: every face photo "
                             "twice, mask below the nose and mask on the chin, labelled incorrect_mask")
    parser.add_argument("--also-correct", action="store_true",
                        help="--style worn-wrong: also write each photo with the mask worn properly (with_mask), "
                             "a matched pair for every mask worn wrong")
    parser.add_argument("--incorrect-fraction", type=float, default=0.0,
                        help="--style correct: fraction of images whose mask is worn below the nose (default 0)")
    parser.add_argument("--split", choices=["train", "val", "test"], default=None,
                        help="SRC is a dataset: mask only this split's faces (train, so that nothing made from a "
                             "val or test face is trained on)")
    parser.add_argument("--label", default=None,
                        help=f"with --split: the label of the rows to mask (default {DEFAULT_SOURCE_LABEL})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--detector", choices=["short", "full", "yunet"], default=None,
                        help="face detector for the keypoints: yunet for --style worn-wrong, BlazeFace short range "
                             "(close faces) for correct, unless chosen here")
    parser.add_argument("--min-score", type=float, default=None,
                        help="minimum detector score (default: the detector's usual threshold)")
    parser.add_argument("--sheet", type=int, default=96, help="images on the contact sheet (0: none; default 96)")


def main(args: argparse.Namespace) -> int:
    report = add_masks(args.src, args.out, args.incorrect_fraction, args.seed, args.detector, args.min_score,
                       style=args.style, split=args.split, label=args.label, sheet=args.sheet,
                       also_correct=args.also_correct)
    counts = ", ".join(f"{k}={v}" for k, v in sorted((report.by_label or {}).items())) or "nothing"
    placed = ", ".join(f"{k} {v}" for k, v in sorted((report.by_placement or {}).items()))
    skipped = f"skipped {report.no_face} with no face found, {report.unreadable} unreadable"
    if report.unmaskable:
        skipped += f", {report.unmaskable} with a face that could not be masked"
    sheet = f", contact sheet {args.out / report.contact_sheet}" if report.contact_sheet else ""
    print(f"{report.images} images: wrote {counts} ({placed}; {report.faces_masked} faces masked); {skipped}; "
          f"report in {args.out / 'add_masks_report.json'}{sheet}")
    return 0
