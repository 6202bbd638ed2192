"""``maskwatch data synth``: the built-in sample dataset and demo video, made without a download.

Real face photos that ship inside packages we install anyway are the raw material:

* ``skimage.data.astronaut()``: Eileen Collins, NASA photo, public domain (colour, one face);
* ``skimage.data.lfw_subset()``: 100 faces (25x25 greyscale crops from Labeled Faces in the Wild,
  shipped by scikit-image for its examples) followed by 100 non-faces, which are not used;
* matplotlib's ``sample_data/grace_hopper.jpg``: Grace Hopper, US Navy photo, public domain.

Each sample is one of those faces, masked with :mod:`train.data.masks` or not, then varied in
scale, rotation, crop, skin tone (the greyscale faces), background, lighting, blur, noise and JPEG
quality. Every face is used for a with_mask and a without_mask sample alike, so the only thing
that tells the classes apart is the mask. The folder-per-class tree is written to a temporary
folder and imported with :func:`train.data.importer.import_sources`, so the sample dataset has
exactly the layout, manifest and report of a real one, then split.

``--video`` makes a short clip of people walking across a plain room, some masked, one or two at
a time, with a ground-truth JSON, for ``make demo``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.contract import WITH_MASK, WITHOUT_MASK
from device.images import read_rgb
from train.data import masks

log = logging.getLogger(__name__)

#: Share of samples drawn from the two colour photos (the rest come from the 100 LFW faces).
COLOUR_SHARE = 0.25
#: Share of LFW samples left greyscale (the others get a skin tone).
GREY_SHARE = 0.3
#: Skin tones (RGB) used to colour the greyscale LFW faces, light to dark.
SKIN_TONES = [
    (255, 224, 196), (241, 194, 160), (224, 172, 135), (198, 140, 100), (160, 110, 75), (120, 80, 55),
    (92, 62, 45),
]
#: Background images from scikit-image (no people in them).
BACKGROUND_IMAGES = ("brick", "grass", "gravel", "coffee", "chelsea", "rocket", "hubble_deep_field", "coins",
                     "page", "text", "immunohistochemistry", "moon", "clock", "retina", "colorwheel")


@dataclass
class SourceFace:
    name: str
    rgb: np.ndarray
    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    grey: bool
    #: True when the photo is a tight crop of the face (nothing around it to keep).
    tight: bool
    licence: str


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def colour_photos() -> list[tuple[str, np.ndarray, str]]:
    """(name, RGB, licence) of the public-domain colour portraits: the astronaut, Grace Hopper when
    matplotlib ships her photo."""
    import skimage.data

    photos = [("astronaut", skimage.data.astronaut(), "public domain (NASA), via scikit-image")]
    grace = grace_hopper_path()
    if grace.exists():
        photos.append(("grace_hopper", read_rgb(grace), "public domain (US Navy), via matplotlib sample_data"))
    else:
        log.warning("%s not found; the sample data will use the other photos only", grace)
    return photos


#: Face crops (x0, y0, x1, y1) of the colour portraits: BlazeFace's box grown by a fifth on each
#: side, like the crops of a folder-per-class dataset. BlazeFace (short range) finds them pasted
#: 120 px wide or more into a 640x480 frame (tests/test_walks.py checks it).
PORTRAIT_CROPS = {"astronaut": (160, 62, 291, 193), "grace_hopper": (125, 100, 410, 385)}


def portraits() -> dict[str, np.ndarray]:
    """Real faces without a dataset: the colour portraits cropped to the face, for the frames
    of the daemon tests and ``make bench-device`` (:mod:`train.data.walks`)."""
    photos = {name: rgb for name, rgb, _ in colour_photos()}
    missing = sorted(set(PORTRAIT_CROPS) - set(photos))
    if missing:
        raise FileNotFoundError(f"the portrait photos {missing} are missing (scikit-image / matplotlib sample data)")
    return {name: np.ascontiguousarray(photos[name][y0:y1, x0:x1]) for name, (x0, y0, x1, y1) in PORTRAIT_CROPS.items()}


def load_sources(detector) -> list[SourceFace]:
    """The face photos, each with its detection (found once, reused for every sample)."""
    import cv2
    import skimage.data

    photos: list[tuple[str, np.ndarray, bool, bool, str]] = [
        (name, rgb, False, False, licence) for name, rgb, licence in colour_photos()
    ]
    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for i, face in enumerate(lfw):
        g = np.clip(np.round(face * 255.0), 0, 255).astype(np.uint8)
        # 25 px is below the detector's and the classifier's working size: enlarge once, here.
        g = cv2.resize(g, (100, 100), interpolation=cv2.INTER_CUBIC)
        photos.append((f"lfw{i:03d}", np.dstack([g, g, g]), True, True,
                       "Labeled Faces in the Wild subset shipped with scikit-image"))
    out = []
    for name, rgb, grey, tight, licence in photos:
        faces = masks.detect_faces(detector, rgb)
        if not faces:
            log.info("no face found in %s; not used", name)
            continue
        f = max(faces, key=lambda f: f.score)
        out.append(SourceFace(name, rgb, tuple(float(v) for v in f.box), np.asarray(f.keypoints, np.float32),
                              grey, tight, licence))
    if not any(not s.tight for s in out) or len(out) < 10:
        raise RuntimeError(f"the face detector found faces in only {len(out)} of {len(photos)} built-in photos")
    return out


def load_backgrounds(max_side: int = 512) -> list[np.ndarray]:
    import cv2
    import skimage.data

    bank = []
    for name in BACKGROUND_IMAGES:
        try:
            img = getattr(skimage.data, name)()
        except Exception as exc:  # noqa: BLE001 - a missing sample image only costs variety
            log.debug("background %s unavailable: %s", name, exc)
            continue
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = np.dstack([img] * 3)
        img = img[..., :3]
        k = max_side / max(img.shape[:2])
        if k < 1:
            img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        bank.append(np.ascontiguousarray(img))
    return bank


# --------------------------------------------------------------------------------------------
# Image variation (pure given the generator)
# --------------------------------------------------------------------------------------------


def background(rng: np.random.Generator, width: int, height: int, bank: list[np.ndarray]) -> np.ndarray:
    """A gradient, smooth colour noise or a crop of a sample image."""
    import cv2

    kind = rng.choice(["gradient", "noise", "image"], p=[0.3, 0.2, 0.5]) if bank else rng.choice(["gradient", "noise"])
    if kind == "image":
        src = bank[rng.integers(len(bank))]
        h, w = src.shape[:2]
        side = int(rng.integers(max(16, min(h, w) // 5), min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = src[y:y + side, x:x + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if side > width else cv2.INTER_LINEAR)
    if kind == "gradient":
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        p = (xx / width - 0.5) * math.cos(ang) + (yy / height - 0.5) * math.sin(ang) + 0.5
        p = np.clip(p, 0, 1)[..., None]
        img = c0 * (1 - p) + c1 * p
        return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    n = int(rng.integers(2, 7))
    small = rng.integers(0, 256, (n, n, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def tint(grey_rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give a greyscale face a skin tone, so colour is not a class cue in a colour dataset."""
    tone = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float32)
    tone = tone / (0.299 * tone[0] + 0.587 * tone[1] + 0.114 * tone[2])
    out = grey_rgb[..., :1].astype(np.float32) * tone * rng.uniform(0.75, 1.05)
    return np.clip(out, 0, 255).astype(np.uint8)


def head_alpha(shape: tuple[int, int], box: tuple[float, float, float, float], tight: bool) -> np.ndarray:
    """Soft matte of head and neck around a face box (float32 0..1), for pasting onto a background.

    A tight crop (LFW) gets the oval inscribed in it instead: its square edges would otherwise
    show as a tile pasted on the background.
    """
    import cv2

    h, w = shape
    ss = 4  # fixed-point bits of the ellipse drawing
    big = np.zeros((h, w), np.uint8)
    if tight:
        cv2.ellipse(big, (int(w / 2 * 16), int(h * 0.52 * 16)), (int(0.47 * w * 16), int(0.5 * h * 16)),
                    0, 0, 360, 255, -1, cv2.LINE_AA, ss)
        return cv2.GaussianBlur(big.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.035 * w))
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cv2.ellipse(big, (int(cx * 16), int((cy - 0.1 * side) * 16)), (int(0.66 * side * 16), int(0.84 * side * 16)),
                0, 0, 360, 255, -1, cv2.LINE_AA, ss)
    neck_w = 0.36 * side
    cv2.rectangle(big, (int(cx - neck_w), int(cy)), (int(cx + neck_w), h), 255, -1)
    return cv2.GaussianBlur(big.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.05 * side))


def photometric(img: np.ndarray, rng: np.random.Generator, grey: bool) -> np.ndarray:
    """Lighting, white balance, blur, resolution and noise, as cameras and rooms vary them."""
    import cv2

    h, w = img.shape[:2]
    x = img.astype(np.float32)
    if not grey:
        x *= 1.0 + rng.normal(0, 0.05, 3).astype(np.float32)
    if rng.random() < 0.5:  # light from one side
        ang = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = (xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang)
        x *= (1.0 + rng.uniform(0.2, 0.6) * ramp)[..., None]
    x = (x - 128.0) * rng.uniform(0.7, 1.25) + 128.0 + rng.uniform(-30, 30)
    x = 255.0 * np.clip(x / 255.0, 0, 1) ** math.exp(rng.normal(0, 0.18))
    r = rng.random()
    if r < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.4))
    elif r < 0.42:
        n = int(rng.integers(3, 8))
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1.0 / n
        m = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), rng.uniform(0, 180), 1.0)
        k = cv2.warpAffine(k, m, (n, n))
        x = cv2.filter2D(x, -1, k / max(k.sum(), 1e-6))
    if rng.random() < 0.25:  # a low-resolution camera
        f = rng.uniform(1.5, 3.0)
        small = cv2.resize(x, (max(8, int(w / f)), max(8, int(h / f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        x += rng.normal(0, rng.uniform(2, 7), x.shape).astype(np.float32)
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if grey:
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        x = np.dstack([g, g, g])
    return x


def render_sample(src: SourceFace, masked: bool, rng: np.random.Generator, bank: list[np.ndarray]) -> np.ndarray:
    """One training image: a face crop with margin, like those the importer and the device make."""
    import cv2

    img = src.rgb
    # The mask draws from its own stream, so with the same generator a masked and an unmasked
    # sample differ by the mask alone.
    mask_rng = np.random.default_rng(rng.integers(1 << 62))
    grey = src.grey and rng.random() < GREY_SHARE
    if src.grey and not grey:
        img = tint(img, rng)
    if masked:
        img = masks.draw_mask(img, src.keypoints, src.box, masks.random_style(mask_rng), mask_rng)
    size = int(rng.integers(128, 225))
    x0, y0, x1, y1 = src.box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.04 * side
    # Face box side as a share of the image: 0.5 .. 0.85 (crop margins 0.09 .. 0.5).
    k = rng.uniform(0.5, 0.85) * size / side
    alpha_src = None if (not src.tight and rng.random() < 0.4) else head_alpha(img.shape[:2], src.box, src.tight)
    if k < 0.8:  # shrink first with area averaging: warpAffine alone would alias
        img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        if alpha_src is not None:
            alpha_src = cv2.resize(alpha_src, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
        cx, cy, k = cx * k, cy * k, 1.0
    angle = float(np.clip(rng.normal(0, 8), -20, 20))
    m = cv2.getRotationMatrix2D((cx, cy), angle, k)
    m[:, 2] += np.array([size / 2 - cx, size / 2 - cy]) + rng.uniform(-0.07, 0.07, 2) * size
    fg = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    if alpha_src is None:
        out = fg
    else:
        a = cv2.warpAffine(alpha_src, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
        bg = background(rng, size, size, bank)
        out = np.clip(fg * a + bg * (1 - a), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return photometric(np.ascontiguousarray(out), rng, grey)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass
class SynthResult:
    out: Path
    samples: int
    per_label: dict
    seconds: float
    split: str


def write_tree(tree: Path, sources: list[SourceFace], n: int, seed: int, bank: list[np.ndarray]) -> list[dict]:
    """``tree/with_mask/*.jpg`` and ``tree/without_mask/*.jpg``, n/2 each, in face pairs."""
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 1])
    colour = [i for i, s in enumerate(sources) if not s.tight]
    other = [i for i, s in enumerate(sources) if s.tight]
    p = np.zeros(len(sources))
    p[colour] = COLOUR_SHARE / len(colour)
    p[other] = (1 - COLOUR_SHARE) / max(len(other), 1)
    p /= p.sum()
    picks = rng.choice(len(sources), size=n // 2, p=p)
    records = []
    for k, idx in enumerate(tqdm(picks, desc="synth", unit="pair", disable=None)):
        src = sources[int(idx)]
        for label, masked in ((WITH_MASK, True), (WITHOUT_MASK, False)):
            # One generator per image: any sample can be remade alone from (seed, k, label).
            r = np.random.default_rng([seed, 2, k, int(masked)])
            img = render_sample(src, masked, r, bank)
            name = f"{label}/{src.name}_{k:05d}.jpg"
            masks.write_jpeg(tree / name, img, quality=int(r.integers(60, 96)))
            records.append({"file": name, "label": label, "face": src.name})
    return records


def run_split(out: Path, seed: int) -> str:
    """Split with the project's splitter and the default fractions; a summary for the console."""
    from collections import Counter

    from train.data.split import split_dataset

    per_split = Counter(r.split for r in split_dataset(out, seed=seed))
    return "split " + " / ".join(f"{name} {per_split[name]}" for name in ("train", "val", "test"))


def check_dataset_args(out: Path, n: int, force: bool) -> None:
    if n < 2 or n % 2:
        raise ValueError(f"--n must be an even number >= 2 (half with_mask, half without_mask), got {n}")
    if Path(out).exists() and not force:
        raise ValueError(f"--out {out} already exists; pass --force to replace it")


def synth_dataset(out: Path, n: int = 400, seed: int = 0, force: bool = False,
                  sources: list[SourceFace] | None = None) -> SynthResult:
    """Build the sample dataset in ``out``: balanced classes, imported, manifest, split."""
    from device.detectors import make_detector
    from train.data.importer import import_sources
    from device.manifest import read_manifest, write_manifest

    t0 = time.perf_counter()
    out = Path(out)
    check_dataset_args(out, n, force)
    sources = sources if sources is not None else load_sources(make_detector("short"))
    bank = load_backgrounds()
    log.info("%d source faces (%s), %d background images", len(sources),
             ", ".join(s.name for s in sources if not s.tight) + f" + {sum(s.tight for s in sources)} LFW", len(bank))
    with tempfile.TemporaryDirectory(prefix="maskwatch-synth-") as tmp:
        tree = Path(tmp) / "synth"
        records = write_tree(tree, sources, n, seed, bank)
        report = import_sources([tree], out, force=force, progress=False)
        # The temporary folder's name is random; name sources by their place in the sample set
        # instead, so the same seed gives the same manifest.
        prefix = str(tree)
        rows = read_manifest(out)
        for r in rows:
            r.source = r.source.replace(prefix, "synth", 1)
        write_manifest(out, rows)
        rep = out / "import_report.json"
        rep.write_text(rep.read_text(encoding="utf-8").replace(prefix, "synth"), encoding="utf-8")
    split_state = run_split(out, seed)
    info = {
        "generator": "maskwatch data synth",
        "seed": seed,
        "n": n,
        "sources": [{"name": a, "licence": b} for a, b in sorted({(s.name if not s.tight else "lfw_subset",
                                                                   s.licence) for s in sources})],
        "faces_used": len(sources),
        "samples": records,
        "split": split_state,
    }
    (out / "synth.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return SynthResult(out, report.imported, report.per_label, time.perf_counter() - t0, split_state)


# --------------------------------------------------------------------------------------------
# Demo video
# --------------------------------------------------------------------------------------------

VIDEO_SIZE = (640, 480)
VIDEO_FPS = 12


@dataclass
class Walker:
    """One person crossing the frame."""

    id: int
    label: str
    face: str
    sprite: np.ndarray  # H x W x 4 float32 (RGB + alpha)
    face_box: tuple[float, float, float, float]  # in sprite pixels
    start: int  # frame at which the face centre is at x_from
    x_from: float
    x_to: float
    speed: float  # px per frame
    y: float  # face centre height
    phase: float

    def frames(self) -> range:
        n = int(math.ceil(abs(self.x_to - self.x_from) / self.speed))
        return range(self.start, self.start + n + 1)

    def pose(self, f: int) -> tuple[float, float, float]:
        """Face centre (x, y) and roll (degrees) at frame ``f``."""
        d = math.copysign(1.0, self.x_to - self.x_from)
        i = f - self.start
        x = self.x_from + d * self.speed * i
        y = self.y + 5.0 * math.sin(self.phase + i * 0.9)  # walking bob
        roll = 3.0 * math.sin(self.phase * 0.7 + i * 0.45)
        return x, y, roll


def make_sprite(src: SourceFace, face_side: float, rng: np.random.Generator, masked: bool,
                flip: bool) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Head and shoulders cut out of a photo, scaled so the face box is ``face_side`` px."""
    import cv2

    img = src.rgb
    if masked:
        img = masks.draw_mask(img, src.keypoints, src.box, masks.random_style(rng), rng)
    x0, y0, x1, y1 = src.box
    side = max(x1 - x0, y1 - y0)
    k = face_side / side
    img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    x0, y0, x1, y1 = x0 * k, y0 * k, x1 * k, y1 * k
    side *= k
    # The body continues below the frame: extend the photo's bottom (and sides) where it ends early.
    pad = int(math.ceil(2.7 * side))
    img = cv2.copyMakeBorder(img, 0, pad, pad, pad, cv2.BORDER_REPLICATE)
    x0, x1 = x0 + pad, x1 + pad
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = img.shape[:2]
    cx0, cx1 = int(max(0, cx - 1.5 * side)), int(min(w, cx + 1.5 * side))
    cy0, cy1 = int(max(0, cy - 1.1 * side)), int(min(h, cy + 2.6 * side))
    crop = img[cy0:cy1, cx0:cx1]
    ch, cw = crop.shape[:2]
    fx, fy = cx - cx0, cy - cy0
    matte = np.zeros((ch, cw), np.uint8)
    cv2.ellipse(matte, (int(fx), int(fy - 0.12 * side)), (int(0.62 * side), int(0.82 * side)), 0, 0, 360, 255, -1,
                cv2.LINE_AA)
    cv2.rectangle(matte, (int(fx - 0.33 * side), int(fy)), (int(fx + 0.33 * side), int(fy + side)), 255, -1)
    cv2.ellipse(matte, (int(fx), int(fy + 2.3 * side)), (int(1.35 * side), int(1.45 * side)), 0, 0, 360, 255, -1,
                cv2.LINE_AA)
    alpha = cv2.GaussianBlur(matte.astype(np.float32) / 255.0, (0, 0), 0.02 * side + 0.8)
    box = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
    sprite = np.dstack([crop.astype(np.float32), alpha])
    if flip:
        sprite = sprite[:, ::-1].copy()
        box = (cw - box[2], box[1], cw - box[0], box[3])
    return sprite, box


def room(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A plain room: a lit wall, a door frame, a skirting board and floor."""
    import cv2

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wall = np.array([214, 206, 190], np.float32)
    light = 1.0 - 0.18 * ((xx / width - 0.3) ** 2 + (yy / height - 0.2) ** 2)
    img = wall * light[..., None]
    floor_y = int(height * 0.86)
    img[floor_y:] = np.array([120, 104, 88], np.float32) * (0.9 + 0.1 * (yy[floor_y:] / height))[..., None]
    img[floor_y - 6:floor_y] = (235, 232, 226)
    cv2.rectangle(img, (int(width * 0.68), int(height * 0.12)), (int(width * 0.86), floor_y), (150, 120, 95), -1)
    cv2.rectangle(img, (int(width * 0.7), int(height * 0.15)), (int(width * 0.84), floor_y), (176, 150, 122), -1)
    cv2.rectangle(img, (int(width * 0.1), int(height * 0.2)), (int(width * 0.26), int(height * 0.42)),
                  (90, 120, 150), -1)
    img += rng.normal(0, 2.0, img.shape).astype(np.float32)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


def _paste(frame: np.ndarray, w: Walker, f: int) -> tuple[float, float, float, float]:
    """Draw walker ``w`` at frame ``f`` (in place); return its face box in frame pixels."""
    import cv2

    x, y, roll = w.pose(f)
    bx0, by0, bx1, by1 = w.face_box
    fcx, fcy = (bx0 + bx1) / 2, (by0 + by1) / 2
    m = cv2.getRotationMatrix2D((fcx, fcy), roll, 1.0)
    m[:, 2] += (x - fcx, y - fcy)
    h, wd = frame.shape[:2]
    # Warp into the part of the frame the sprite covers only.
    sh, sw = w.sprite.shape[:2]
    ext = np.array([[0, 0, 1], [sw, 0, 1], [sw, sh, 1], [0, sh, 1]], np.float64) @ m.T
    rx0, ry0 = max(0, int(ext[:, 0].min()) - 1), max(0, int(ext[:, 1].min()) - 1)
    rx1, ry1 = min(wd, int(ext[:, 0].max()) + 2), min(h, int(ext[:, 1].max()) + 2)
    if rx1 > rx0 and ry1 > ry0:
        mr = m.copy()
        mr[:, 2] -= (rx0, ry0)
        layer = cv2.warpAffine(w.sprite, mr, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        a = layer[..., 3:4]
        roi = frame[ry0:ry1, rx0:rx1]
        roi *= 1 - a
        roi += layer[..., :3] * a
    corners = np.array([[bx0, by0, 1], [bx1, by0, 1], [bx1, by1, 1], [bx0, by1, 1]], np.float64) @ m.T
    return (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()),
            float(corners[:, 1].max()))


def video_paths(path: Path) -> tuple[Path, Path]:
    """Where the frames folder and the ground truth of a video go (beside it)."""
    path = Path(path)
    return path.with_name(path.stem + "_frames"), path.with_name(path.stem + "_truth.json")


def make_video(path: Path, seed: int = 0, sources: list[SourceFace] | None = None) -> dict:
    """Write the demo video, its frames as JPEGs and the ground truth; return the ground truth."""
    from device.detectors import make_detector

    path = Path(path)
    if path.suffix.lower() != ".avi":
        raise ValueError(f"--video {path}: the sample video is MJPG in an .avi container; name it *.avi")
    frames_dir, truth_path = video_paths(path)
    sources = sources if sources is not None else load_sources(make_detector("short"))
    rng = np.random.default_rng([seed, 3])
    walkers, n_frames = plan_walkers(sources, rng)
    people = render_video(path, frames_dir, walkers, n_frames, rng)
    doc = {
        "video": path.name,
        "frames_dir": frames_dir.name,
        "fps": VIDEO_FPS,
        "width": VIDEO_SIZE[0],
        "height": VIDEO_SIZE[1],
        "frames": n_frames,
        "seed": seed,
        "note": "a face is present from first_frame to last_frame (its box wholly inside the frame); "
                "boxes are where the face was drawn",
        "people": people,
    }
    tmp = truth_path.with_name(truth_path.name + ".part")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(truth_path)
    return doc


def plan_walkers(sources: list[SourceFace], rng: np.random.Generator) -> tuple[list[Walker], int]:
    """Who walks by and when: four people one at a time, then a pair; returns them and the frame count."""
    by_name = {s.name: s for s in sources if not s.tight}
    if not by_name:
        raise RuntimeError("no colour face photo is available for the sample video")
    names = sorted(by_name)
    width = VIDEO_SIZE[0]
    # (face, masked, flip, direction) per walker, one group after the other.
    plan = [
        [(names[0], False, False, +1)],
        [(names[-1], True, False, -1)],
        [(names[0], True, True, +1)],
        [(names[-1], False, True, -1)],
        [(names[0], True, False, +1), (names[-1], False, False, +1)],
    ]
    walkers: list[Walker] = []
    start, gap, pid = 4, 8, 1
    for group in plan:
        end = start
        for j, (name, masked, flip, direction) in enumerate(group):
            side = float(rng.uniform(115, 150))
            sprite, box = make_sprite(by_name[name], side, rng, masked, flip)
            half = 1.4 * side + 8  # the shoulders reach 1.35 face widths from the face centre
            x_from, x_to = (-half, width + half) if direction > 0 else (width + half, -half)
            speed = float(rng.uniform(23, 26)) if j == 0 else walkers[-1].speed
            lag = int(math.ceil(300 / speed)) * j  # the second of a pair walks 300 px behind
            w = Walker(pid, WITH_MASK if masked else WITHOUT_MASK, name, sprite, box, start + lag, x_from, x_to,
                       speed, float(rng.uniform(190, 225)), float(rng.uniform(0, 6.28)))
            walkers.append(w)
            pid += 1
            end = max(end, w.frames()[-1])
        start = end + gap
    return walkers, start


def render_video(path: Path, frames_dir: Path, walkers: list[Walker], n_frames: int,
                 rng: np.random.Generator) -> list[dict]:
    """Draw every frame into the .avi and as a JPEG; returns each person's ground truth."""
    import cv2

    width, height = VIDEO_SIZE
    frames_dir.mkdir(parents=True, exist_ok=True)
    for old in frames_dir.glob("*.jpg"):
        old.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPG .avi here")
    base = room(rng, width, height)
    noise = [rng.normal(0, 1.5, base.shape).astype(np.float32) for _ in range(7)]
    truth = {w.id: {"id": w.id, "label": w.label, "masked": w.label == WITH_MASK, "face": w.face,
                    "direction": "left_to_right" if w.x_to > w.x_from else "right_to_left",
                    "first_frame": None, "last_frame": None, "boxes": []} for w in walkers}
    try:
        for f in range(n_frames):
            frame = base + noise[f % len(noise)]  # sensor noise (a few fields, cycled: drawing it is slow)
            for w in walkers:
                if f in w.frames():
                    _record(truth[w.id], f, _paste(frame, w, f))
            rgb = np.clip(np.round(frame), 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            masks.write_jpeg(frames_dir / f"{f:06d}.jpg", rgb, quality=90)
    finally:
        writer.release()
    return [truth[w.id] for w in walkers]


def _record(truth: dict, frame: int, box: tuple[float, float, float, float]) -> None:
    """A face counts as present while its box is wholly inside the frame."""
    width, height = VIDEO_SIZE
    if box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height:
        truth["first_frame"] = frame if truth["first_frame"] is None else truth["first_frame"]
        truth["last_frame"] = frame
        truth["boxes"].append({"frame": frame, "box": [round(v, 1) for v in box]})


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="dataset folder to create (manifest, report, split)")
    parser.add_argument("--n", type=int, default=400, help="number of images, half of each class (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--video", type=Path,
                        help="also write a sample video (MJPG .avi), its frames (<stem>_frames/) and ground truth "
                             "(<stem>_truth.json) beside it")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def main(args: argparse.Namespace) -> int:
    if args.out is None and args.video is None:
        raise ValueError("nothing to do: give --out DIR (sample dataset) and/or --video PATH (sample video)")
    from device.detectors import make_detector

    if args.out is not None:
        check_dataset_args(args.out, args.n, args.force)
    if args.video is not None and args.video.suffix.lower() != ".avi":
        raise ValueError(f"--video {args.video}: the sample video is MJPG in an .avi container; name it *.avi")
    sources = load_sources(make_detector("short"))
    if args.out is not None:
        res = synth_dataset(args.out, args.n, args.seed, args.force, sources)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(res.per_label.items()))
        print(f"sample dataset: {res.samples} images ({counts}) in {res.out}, {res.split}, {res.seconds:.1f} s")
    if args.video is not None:
        t0 = time.perf_counter()
        doc = make_video(args.video, args.seed, sources)
        frames_dir, truth = video_paths(args.video)
        print(f"sample video: {args.video} ({doc['frames']} frames, {doc['frames'] / doc['fps']:.1f} s, "
              f"{len(doc['people'])} people), frames in {frames_dir}, ground truth {truth}, "
              f"{time.perf_counter() - t0:.1f} s")
    return 0

