"""Scene photos of PASCAL VOC folders, as frames the daemon would get, with their faces.

* Annotations are parsed by :mod:`train.data.voc` (the import's parser); a broken XML file stops
  the run with an error naming it. A missing or unreadable image is skipped, counted and
  named: one bad file of thousands should not cost the whole measurement.
* The photo is pixels as the import reads them: boxes drawn on the stored pixels of an
  EXIF-rotated photo keep the stored orientation (the import's rule).
* It is put on a 640x480 frame as a camera delivers it: shrunk (aspect ratio kept) only when it
  is larger, never enlarged, the rest black. So a face keeps the size it had on the photo and
  the detector sees what it would see at that distance.
* ``--split-of DATASET --split test`` keeps only the scenes all of whose imported faces are in
  that split of a dataset made by ``maskwatch data import`` + ``split`` (face crops remember
  their scene: ``source`` = ``<scene image>#box<N>``), i.e. photos never trained on.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.contract import normalize_label
from train.data import voc
from train.scenes.matching import TruthFace

log = logging.getLogger(__name__)

#: What the daemon's camera delivers by default (config camera.width x camera.height).
FRAME_SIZE = (640, 480)


@dataclass
class Scene:
    image: Path
    annotation: Path
    annotated_size: tuple[int, int] | None
    objects: list[voc.VocObject]


@dataclass
class Skip:
    path: str
    reason: str  # missing_image | unreadable
    detail: str


@dataclass
class SceneSet:
    scenes: list[Scene] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    #: Scenes dropped by the split filter, by why: other_split, mixed_splits, not_in_dataset.
    filtered: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Finding the scenes
# --------------------------------------------------------------------------------------------


def find_scenes(folders: Sequence[Path]) -> SceneSet:
    """Every annotated scene of ``folders`` (each a VOC folder: annotations/*.xml + images/)."""
    out = SceneSet()
    if not folders:
        raise ValueError("no VOC folders given")
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"VOC folder not found: {folder}")
        dirs = voc.find_voc_dirs(folder)
        if dirs is None:
            raise ValueError(f"{folder}: not a PASCAL VOC folder (expected annotations/*.xml and images/)")
        out.folders.append(str(folder))
        for xml in sorted(p for p in dirs.annotations.iterdir() if p.suffix.lower() == ".xml" and p.is_file()):
            ann = voc.parse_annotation(xml)  # ValueError naming the file: a broken annotation is not data
            image = voc.image_for(ann, dirs.images)
            if image is None:
                out.skipped.append(Skip(str(xml), "missing_image",
                                        f"image {ann.filename or xml.stem!r} not found in {dirs.images}"))
                continue
            out.scenes.append(Scene(image, xml, ann.size, ann.objects))
    if out.skipped:
        log.warning("skipped %d annotations without their image (first: %s)", len(out.skipped),
                    out.skipped[0].path)
    if not out.scenes:
        raise ValueError(f"no annotated scene photos found in {', '.join(map(str, folders))}")
    return out


# --------------------------------------------------------------------------------------------
# Keeping the scenes of one split
# --------------------------------------------------------------------------------------------


def scene_key(path: str) -> str:
    """A scene photo's name that survives moving the dataset: its last three path parts
    (``faces-voc/images/x.jpg``), whatever the separators or an archive prefix."""
    parts = [p for p in re.split(r"[\\/]", str(path)) if p]
    return "/".join(parts[-3:])


def splits_by_scene(sources_and_splits: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """{scene key: splits its face crops are in} from manifest (source, split) pairs."""
    from train.data.split import scene_of

    out: dict[str, set[str]] = defaultdict(set)
    for source, split in sources_and_splits:
        scene = scene_of(source)
        if scene is not None:
            out[scene_key(scene)].add(split or "(unsplit)")
    return dict(out)


def why_not_in_split(splits: set[str] | None, split: str) -> str:
    """"" when a scene (the splits of its faces) belongs to ``split``, else why not."""
    if not splits:
        return "not_in_dataset"
    if splits == {split}:
        return ""
    return "mixed_splits" if split in splits else "other_split"


def keep_split(found: SceneSet, dataset: Path, split: str) -> SceneSet:
    """Only the scenes all of whose imported faces are in ``split`` of ``dataset``'s manifest."""
    from device.manifest import SPLITS, manifest_path, read_manifest

    rows = read_manifest(dataset)  # FileNotFoundError / ValueError naming the manifest
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    by_scene = splits_by_scene((r.source, r.split) for r in rows)
    kept = SceneSet(skipped=found.skipped, folders=found.folders)
    filtered: dict[str, int] = defaultdict(int)
    for scene in found.scenes:
        why = why_not_in_split(by_scene.get(scene_key(str(scene.image))), split)
        if why:
            filtered[why] += 1
        else:
            kept.scenes.append(scene)
    kept.filtered = dict(sorted(filtered.items()))
    if not kept.scenes:
        detail = ", ".join(f"{k} {v}" for k, v in kept.filtered.items())
        raise ValueError(
            f"{manifest_path(dataset)}: none of the {len(found.scenes)} scene photos has all its faces in split "
            f"{split!r} ({detail}); was the dataset imported from these VOC folders and split?")
    log.info("split %r of %s: %d of %d scenes (left out: %s)", split, dataset, len(kept.scenes),
             len(found.scenes), kept.filtered or "none")
    return kept


# --------------------------------------------------------------------------------------------
# A scene as a camera frame
# --------------------------------------------------------------------------------------------


#: How a photo becomes a frame. ``shrink``: pixels stay as they are unless the photo is larger
#: than the frame (face sizes stay those of the photo). ``fill``: scaled up or down to fill the
#: frame, as a camera with the photo's field of view would see the scene (a 400 px web photo of
#: a crowd, seen by a 640x480 camera, has its faces 1.6x larger; the enlarged faces carry less
#: detail than a camera's would, so this flatters neither detector nor classifier).
FITS: tuple[str, ...] = ("shrink", "fill")


def frame_scale(width: int, height: int, frame_size: tuple[int, int] = FRAME_SIZE, fit: str = "shrink") -> float:
    """How much a ``width`` x ``height`` photo is scaled to go on the frame (see :data:`FITS`)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    s = min(frame_size[0] / width, frame_size[1] / height)
    return s if fit == "fill" else min(1.0, s)


def place_on_frame(rgb: np.ndarray, frame_size: tuple[int, int] = FRAME_SIZE,
                   fit: str = "shrink") -> tuple[np.ndarray, float]:
    """(frame, scale): the photo scaled as ``fit`` says, in the frame's top-left corner, rest black."""
    import cv2

    h, w = rgb.shape[:2]
    s = frame_scale(w, h, frame_size, fit)
    if s != 1.0:
        size = (min(frame_size[0], max(1, round(w * s))), min(frame_size[1], max(1, round(h * s))))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
    frame = np.zeros((frame_size[1], frame_size[0], 3), np.uint8)
    frame[: rgb.shape[0], : rgb.shape[1]] = rgb
    return frame, s


def truth_faces(objects: Sequence[voc.VocObject], scale: float, photo_size: tuple[int, int],
                min_face: int = voc.DEFAULT_MIN_FACE) -> tuple[list[TruthFace], dict[str, int]]:
    """The annotated faces on the frame, and how many were left out by why.

    Boxes are scaled like the photo and clipped to it; a face's size is the import's
    (:func:`train.data.voc.face_side`) measured on the frame, and faces under ``min_face`` px
    on the frame or in the photo (the import's minimum; so enlarging a photo brings in no face
    the import would have skipped) or of a class that is no mask label stay in the list as left out, so
    a detection of them is neither a hit nor a false alarm. Malformed boxes are dropped.
    """
    faces: list[TruthFace] = []
    left_out: dict[str, int] = defaultdict(int)
    w, h = photo_size
    for obj in objects:
        if obj.box is None:
            left_out["bad_box"] += 1
            continue
        clipped = voc.clip_box(obj.box, w, h)
        if clipped is None:
            left_out["bad_box"] += 1
            continue
        label = normalize_label(obj.name) or ""
        size = voc.face_side(obj.box) * scale
        counted = bool(label) and min(size, voc.face_side(obj.box)) >= min_face
        if not label:
            left_out["unknown_class"] += 1
        elif not counted:
            left_out["too_small"] += 1
        faces.append(TruthFace(tuple(float(v) * scale for v in clipped), label, size, counted))
    return faces, dict(left_out)


def read_scene_rgb(path: Path, annotated_size: tuple[int, int] | None) -> np.ndarray | None:
    """The photo's RGB pixels in the orientation its boxes were drawn on, None when unreadable.

    The import's rule: when the annotation's ``<size>`` is the stored pixels' size, the boxes
    refer to the stored pixels (EXIF orientation ignored); otherwise to the upright photo.
    """
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if not data.size:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return None
    if annotated_size is None or annotated_size != (bgr.shape[1], bgr.shape[0]):
        upright = cv2.imdecode(data, cv2.IMREAD_COLOR)
        bgr = upright if upright is not None else bgr
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
