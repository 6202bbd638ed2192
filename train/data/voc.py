"""PASCAL VOC reading: find the images/annotations folders, parse one annotation file.

Only what a face-mask import needs: each ``<object>``'s class name and pixel box, and the
annotated image size (used to tell whether boxes refer to the stored or the EXIF-rotated pixels).
Real exports are sloppy (stray text inside ``<object>``, float coordinates, boxes past the
border), so parsing is lenient where the meaning is clear and strict where it is not.

No Pillow needed: the scene benchmark reads VOC folders where only OpenCV is installed (a Pi).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from device.images import IMAGE_SUFFIXES

ANNOTATION_DIRS = ("annotations",)
IMAGE_DIRS = ("images", "jpegimages", "imgs", "img", "pictures")
#: Faces smaller than this many px (see :func:`face_side`) are left out of imports and of the
#: scene benchmark: too few pixels for anyone, the classifier included, to see a mask.
DEFAULT_MIN_FACE = 16


@dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1; None when malformed
    problem: str = ""  # why box is None


@dataclass
class Annotation:
    path: Path
    filename: str
    size: tuple[int, int] | None  # (width, height) as annotated
    objects: list[VocObject] = field(default_factory=list)


@dataclass
class VocDirs:
    images: Path
    annotations: Path


def find_voc_dirs(root: Path) -> VocDirs | None:
    """``annotations/`` (any case) holding XML files, and the images folder beside it."""
    children = {c.name.lower(): c for c in sorted(Path(root).iterdir()) if c.is_dir()}
    ann = next((children[n] for n in ANNOTATION_DIRS if n in children), None)
    if ann is None or not any(p.suffix.lower() == ".xml" for p in ann.iterdir()):
        return None
    images = next((children[n] for n in IMAGE_DIRS if n in children), ann)
    return VocDirs(images=images, annotations=ann)


def _number(obj: ET.Element, tag: str) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    if text is None:
        raise ValueError(f"no <{tag}>")
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"<{tag}> is not a number: {text.strip()!r}") from None


def parse_annotation(path: Path) -> Annotation:
    """Parse one VOC XML file; ValueError naming the file when it is not a VOC annotation."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not valid XML ({exc})") from None
    if root.tag != "annotation":
        raise ValueError(f"{path}: root element is <{root.tag}>, not <annotation>")
    size = None
    try:
        w, h = int(float(root.findtext("size/width") or 0)), int(float(root.findtext("size/height") or 0))
        if w > 0 and h > 0:
            size = (w, h)
    except ValueError:
        size = None
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            x0, y0, x1, y1 = (_number(obj, t) for t in ("xmin", "ymin", "xmax", "ymax"))
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"empty box ({x0:g},{y0:g})-({x1:g},{y1:g})")
            objects.append(VocObject(name, (x0, y0, x1, y1)))
        except ValueError as exc:
            objects.append(VocObject(name, None, str(exc)))
    return Annotation(path=path, filename=(root.findtext("filename") or "").strip(), size=size, objects=objects)


def face_side(box: tuple[float, float, float, float]) -> float:
    """A face's size as import and the scene benchmark measure it: its box's longer side, in px."""
    return max(box[2] - box[0], box[3] - box[1])


def image_for(ann: Annotation, images: Path) -> Path | None:
    """The annotated image: ``<filename>`` in the images folder, else any image with the XML's stem."""
    if ann.filename:
        cand = images / Path(ann.filename).name
        if cand.is_file():
            return cand
    stem = ann.path.stem
    for cand in sorted(images.glob(f"{stem}.*")):
        if cand.is_file() and cand.suffix.lower() in IMAGE_SUFFIXES:
            return cand
    return None


def clip_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float] | None:
    """The part of ``box`` inside the image, or None when nothing of it is."""
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1
