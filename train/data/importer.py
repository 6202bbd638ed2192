"""``maskwatch data import``: folder-per-class sets, PASCAL VOC sets and archives -> one clean dataset.

Sources (several may be merged in one import):

* a folder with one sub-folder per class (``with_mask/``, ``WithMask/``, ``no_mask/`` ... any name
  :func:`device.contract.normalize_label` knows; files are found recursively inside a class
  folder). Sub-folders that are not a class are ignored and named in the report. A class folder
  given directly (``.../with_mask``) and a wrapper folder holding exactly one sub-folder (as zips
  often have) are understood too;
* a PASCAL VOC set (``annotations/*.xml`` + ``images/``): every annotated face is cut out with the
  device's square margin (:func:`device.contract.expand_box`) and saved unresized; faces whose box
  is smaller than ``--min-face`` px (longer side) are skipped and counted. ``--min-face`` applies
  to whole images from class folders as well (the image is the face there). With
  ``--voc-boxes detector --detector SETTING`` each face is cut instead with the box the daemon's
  face detector finds for it on the photo seen as a camera frame (a face it misses keeps its
  annotated box; see :mod:`train.data.detector_boxes`), so training crops look like the ones the
  classifier gets on the device; which faces are imported, and their groups, stay the same;
* a ``.zip`` / ``.tar.gz`` / ``.tar`` archive of either, recognised by content and extracted to a
  temporary folder; a member that would land outside it (absolute path, ``..``) rejects the
  archive.

Output (see :mod:`device.manifest`): ``DIR/<label>/<name>.jpg`` (RGB JPEG quality 95),
``DIR/manifest.csv`` and ``DIR/import_report.json``. Names are ASCII: a non-ASCII name is
transliterated and given a short hash of the original so it stays unique and stable; the
original path is always in the ``source`` column (``archive.zip!/member`` for archives,
``image.jpg#box<N>`` for VOC faces, N = the object's index in the annotation).

Duplicates. ``sha256`` is the file's bytes for whole images and the crop's decoded pixels for VOC
faces (a scene file holds several faces). Exact duplicates *with the same label* are dropped:
the first copy (sources in the order given, then sorted paths) is kept, the others are listed in
the report; they add nothing but weight. Near duplicates (perceptual hash within
``--near-threshold`` bits) are kept, as rows of one ``group``; grouping is transitive and also
joins exact copies, so a split that keeps groups whole cannot leak a photo. The same photo under
two labels is a *conflict*: both rows are kept (the data is not ours to relabel), share a group,
and are listed in ``import_report.json`` and on the console for a person to resolve.

Counting. An *item* is a file in a class folder, or a face box in a VOC annotation (an annotation
that cannot be parsed counts as one). Always ``seen = imported + skipped + duplicates_dropped``.
A file that cannot be read or decoded is skipped with a reason; the import never stops for one
file. It never half-writes either: everything is built in a temporary folder beside ``DIR`` and
renamed into place at the end; an existing ``DIR`` is an error unless ``--force``, which replaces
it only after the new one is complete.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import tarfile
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from device.contract import DEFAULT_MARGIN, expand_box, normalize_label
from device.images import IMAGE_SUFFIXES, DecodeError, pil_open, pil_orient, pil_to_rgb
from device.manifest import Row, write_manifest
from train.data import dedup, voc
from train.data.detector_boxes import (
    FROM_ANNOTATION,
    FROM_DETECTOR,
    VOC_BOX_SOURCES,
    DetectorBoxes,
    detected_boxes,
    detector_of,
)
from train.data.imageio import encode_jpeg, phash_hex, pixels_sha256

log = logging.getLogger(__name__)

REPORT = "import_report.json"
DEFAULT_MIN_FACE = voc.DEFAULT_MIN_FACE
#: Perceptual-hash bits two images may differ in and still count as the same photo. On
#: faces-classify (phash distances are even), up to 4 bits joins re-encodes, resizes and light
#: crops of one photo; at 6 the first pairs of different people appear (one across labels), and
#: by 8 they are common.
DEFAULT_NEAR_THRESHOLD = 4
#: Below this many files, worker processes cost more to start than they save.
_POOL_MIN_TASKS = 300
_JUNK_DIRS = {"__macosx", "@eadir", ".ds_store", "$recycle.bin"}


# ----------------------------------------------------------------------------------------------
# Work items
# ----------------------------------------------------------------------------------------------


@dataclass
class Crop:
    """One output image to make from a source file."""

    label: str
    path: str  # output path relative to the dataset folder
    source: str
    box: tuple[float, float, float, float] | None = None  # None: the whole image is the face
    index: int | None = None  # VOC: the object's index in its annotation (Task.objects)


@dataclass
class Task:
    """One source file to decode, and the crops it yields (one for class folders, N for VOC)."""

    file: str  # where to read it (may be inside a temporary extraction folder)
    source: str  # how to name it to a person
    crops: list[Crop]
    annotated_size: tuple[int, int] | None = None  # VOC <size>, to tell which orientation boxes use
    objects: list[voc.VocObject] | None = None  # VOC: every object of the annotation (detector matching)


@dataclass
class Produced:
    label: str
    path: str
    source: str
    sha256: str
    phash: str
    width: int
    height: int
    box_from: str | None = None  # VOC faces: detector_boxes.FROM_ANNOTATION or FROM_DETECTOR
    #: What duplicate dropping and grouping compare: the crop around the *annotated* box (same
    #: as sha256/phash unless the face was cut with the detector's box). So an import with
    #: detector boxes keeps the same faces in the same groups, hence the same split, as one
    #: with annotated boxes.
    key_sha256: str = ""
    key_phash: str = ""

    def __post_init__(self) -> None:
        self.key_sha256 = self.key_sha256 or self.sha256
        self.key_phash = self.key_phash or self.phash


@dataclass
class Skipped:
    path: str
    reason: str  # one word: empty, not_an_image, truncated, corrupt, too_small, bad_box, ...
    detail: str
    items: int = 1  # how many items this skip accounts for (a broken VOC image loses all its faces)


def process_task(task: Task, root: str, margin: float, min_face: int, boxes: DetectorBoxes | None = None
                 ) -> tuple[list[Produced], list[Skipped]]:
    """Decode one file, cut its faces, write them as JPEG under ``root``.

    ``boxes``: cut VOC faces with the detector's boxes (see :mod:`train.data.detector_boxes`);
    None cuts them with the annotated boxes. Which faces are skipped (bad box, too small) is
    decided on the annotated box either way.

    Bad input never raises (it becomes a :class:`Skipped`); failing to *write* does, since a full
    disk is not a property of one file and must stop the import, and so does a failing detector.
    """
    try:
        data = Path(task.file).read_bytes()
        im, _fmt = pil_open(data)
        if task.annotated_size is None or task.annotated_size != im.size:
            # Boxes drawn on the stored pixels of an EXIF-rotated photo keep the stored orientation.
            im = pil_orient(im)
        im = pil_to_rgb(im)
    except DecodeError as exc:
        return [], [Skipped(task.source, exc.reason, exc.detail, len(task.crops))]
    except OSError as exc:
        return [], [Skipped(task.source, "unreadable", str(exc), len(task.crops))]
    except Exception as exc:  # noqa: BLE001 - any decoder failure on one file is that file's problem
        return [], [Skipped(task.source, "corrupt", f"{type(exc).__name__}: {exc}", len(task.crops))]
    detected: list = []
    if boxes is not None and task.objects is not None:
        detected = detected_boxes(np.asarray(im), task.objects, boxes)
    out, skipped = [], []
    for crop in task.crops:
        if crop.box is None:
            side = voc.face_side((0, 0, im.width, im.height))
        elif voc.clip_box(crop.box, im.width, im.height) is None:
            skipped.append(Skipped(crop.source, "bad_box",
                                   f"box {_fmt_box(crop.box)} is outside the {im.width}x{im.height} image"))
            continue
        else:
            side = voc.face_side(crop.box)
        if side < min_face:
            skipped.append(Skipped(crop.source, "too_small", f"face {side:.0f} px < --min-face {min_face} px"))
            continue
        found = detected[crop.index] if crop.index is not None and crop.index < len(detected) else None
        try:
            if crop.box is None:
                face, sha, box_from = im, hashlib.sha256(data).hexdigest(), None
            else:
                face = im.crop(expand_box(crop.box, margin, im.width, im.height))
                sha, box_from = pixels_sha256(face), FROM_ANNOTATION
            key_sha, key_phash = sha, phash_hex(face)
            phash = key_phash
            if found is not None:
                face = im.crop(expand_box(found, margin, im.width, im.height))
                sha, phash, box_from = pixels_sha256(face), phash_hex(face), FROM_DETECTOR
            jpeg = encode_jpeg(face)
        except Exception as exc:  # noqa: BLE001
            skipped.append(Skipped(crop.source, "corrupt", f"{type(exc).__name__}: {exc}"))
            continue
        (Path(root) / crop.path).write_bytes(jpeg)
        out.append(Produced(crop.label, crop.path, crop.source, sha, phash, face.width, face.height, box_from,
                            key_sha, key_phash))
    return out, skipped


def _fmt_box(box: tuple[float, float, float, float]) -> str:
    return "({:g},{:g})-({:g},{:g})".format(*box)


# ----------------------------------------------------------------------------------------------
# Finding the items of a source
# ----------------------------------------------------------------------------------------------


def safe_stem(name: str) -> str:
    """An ASCII file stem for ``name``; lossy mappings get a hash of the original to stay unique."""
    p = PurePosixPath(name)
    stem = p.stem if p.suffix.lower() in IMAGE_SUFFIXES else p.name
    ascii_ = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_)
    safe = re.sub(r"_{2,}", "_", safe).strip("._-")[:80] or "image"
    if not stem.isascii():
        safe = f"{safe}-{hashlib.sha1(stem.encode('utf-8')).hexdigest()[:8]}"
    return safe


class _Names:
    """Output names, unique per label folder (case-insensitively, for case-insensitive disks)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def take(self, label: str, stem: str) -> str:
        name, k = f"{label}/{stem}", 2
        while name.lower() in self.taken:
            name, k = f"{label}/{stem}-{k}", k + 1
        self.taken.add(name.lower())
        return f"{name}.jpg"


@dataclass
class SourceInfo:
    path: str
    kind: list[str] = field(default_factory=list)  # "folder-per-class", "voc"
    root: str = ""  # the folder the layout was found in
    classes: dict[str, str] = field(default_factory=dict)  # folder -> label
    ignored: list[str] = field(default_factory=list)  # folders/files that are not a class
    items: int = 0
    unannotated_images: int = 0  # VOC images without an annotation (nothing to crop)
    empty_annotations: int = 0  # VOC annotations without objects


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _JUNK_DIRS


def _walk_files(folder: Path, exclude: set[Path]) -> Iterator[Path]:
    """Regular files under ``folder``, sorted, hidden files and OS junk folders left out."""
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d) and (here / d).resolve() not in exclude)
        for name in sorted(filenames):
            if not _hidden(name) and (here / name).is_file():
                yield here / name


class _Scanner:
    def __init__(self, exclude: set[Path]):
        self.tasks: list[Task] = []
        self.skipped: list[Skipped] = []
        self.names = _Names()
        self.exclude = exclude

    def scan(self, root: Path, info: SourceInfo, display: _Display) -> None:
        root = _unwrap(root)
        info.root = display(root)
        layout_voc = voc.find_voc_dirs(root)
        classes: list[tuple[Path, str]] = []
        for child in sorted(root.iterdir()):
            if _hidden(child.name) or child.resolve() in self.exclude:
                continue
            if layout_voc and child in (layout_voc.images, layout_voc.annotations):
                continue
            label = normalize_label(child.name) if child.is_dir() and _is_class_folder(child) else None
            if label:
                classes.append((child, label))
            else:
                info.ignored.append(display(child) + ("/" if child.is_dir() else ""))
        if not classes and not layout_voc and _is_class_folder(root):
            classes, info.ignored = [(root, normalize_label(root.name))], []  # a class folder itself
        if not classes and not layout_voc:
            seen = ", ".join(info.ignored[:8]) or "nothing"
            raise ValueError(
                f"{info.path}: no class folders (with_mask/, without_mask/, incorrect_mask/ or an alias) and "
                f"no PASCAL VOC annotations/ found (saw: {seen})"
            )
        for folder, label in classes:
            if "folder-per-class" not in info.kind:
                info.kind.append("folder-per-class")
            info.classes[display(folder)] = label
            for f in _walk_files(folder, self.exclude):
                src = display(f)
                crop = Crop(label, self.names.take(label, safe_stem(f.name)), src)
                self.tasks.append(Task(str(f), src, [crop]))
                info.items += 1
        if layout_voc:
            info.kind.append("voc")
            info.items += self._scan_voc(layout_voc, info, display)

    def _scan_voc(self, dirs: voc.VocDirs, info: SourceInfo, display: _Display) -> int:
        items = 0
        used_images: set[Path] = set()
        for xml in sorted(p for p in dirs.annotations.iterdir() if p.suffix.lower() == ".xml" and p.is_file()):
            try:
                ann = voc.parse_annotation(xml)
            except ValueError as exc:
                self.skipped.append(Skipped(display(xml), "bad_annotation", str(exc).split(": ", 1)[-1]))
                items += 1
                continue
            items += len(ann.objects)
            if not ann.objects:
                info.empty_annotations += 1
                continue
            image = voc.image_for(ann, dirs.images)
            if image is None:
                self.skipped.append(Skipped(display(xml), "missing_image",
                                            f"image {ann.filename or xml.stem!r} not found in {display(dirs.images)}",
                                            len(ann.objects)))
                continue
            used_images.add(image)
            src = display(image)
            crops = []
            for k, obj in enumerate(ann.objects):
                face_src = f"{src}#box{k}"
                label = normalize_label(obj.name)
                if label is None:
                    self.skipped.append(Skipped(face_src, "unknown_class", f"class {obj.name!r} is not a mask label"))
                elif obj.box is None:
                    self.skipped.append(Skipped(face_src, "bad_box", obj.problem))
                else:
                    name = self.names.take(label, f"{safe_stem(image.name)}_box{k}")
                    crops.append(Crop(label, name, face_src, obj.box, k))
            if crops:
                self.tasks.append(Task(str(image), src, crops, ann.size, ann.objects))
        if dirs.images != dirs.annotations:
            info.unannotated_images = sum(
                1 for p in dirs.images.iterdir()
                if p.is_file() and not _hidden(p.name) and p not in used_images and p.suffix.lower() != ".xml"
            )
        return items


def _holds_classes(folder: Path) -> bool:
    """A folder with class sub-folders is a wrapper even when its own name is a label alias
    (an archive ``masks/`` holding ``with_mask/`` and ``without_mask/``)."""
    try:
        return any(c.is_dir() and not _hidden(c.name) and normalize_label(c.name) for c in folder.iterdir())
    except OSError:
        return False


def _is_class_folder(folder: Path) -> bool:
    return bool(normalize_label(folder.name)) and not _holds_classes(folder)


def _unwrap(root: Path) -> Path:
    """Descend through wrapper folders (one visible sub-folder, no images), as archives often have."""
    for _ in range(4):
        if voc.find_voc_dirs(root) or _is_class_folder(root):
            return root
        children = [c for c in root.iterdir() if not _hidden(c.name)]
        dirs = [c for c in children if c.is_dir()]
        loose_images = [c for c in children if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES]
        if len(dirs) != 1 or loose_images or any(_is_class_folder(d) for d in dirs):
            return root
        root = dirs[0]
    return root


class _Display:
    """Names a file for people: its real path, or ``archive!/member`` for extracted files."""

    def __init__(self, real_root: Path, shown_as: str | None = None):
        self.real_root, self.shown_as = real_root, shown_as

    def __call__(self, path: Path) -> str:
        if self.shown_as is None:
            return str(path)
        rel = Path(path).relative_to(self.real_root).as_posix()
        return self.shown_as if rel == "." else f"{self.shown_as}!/{rel}"


# ----------------------------------------------------------------------------------------------
# Archives
# ----------------------------------------------------------------------------------------------


def archive_kind(path: Path) -> str | None:
    """``zip`` or ``tar`` by content (a .tar.gz named .zip still works), else None."""
    path = Path(path)
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except (OSError, tarfile.TarError, EOFError, zlib.error):
        return None


def _check_member(archive: Path, name: str, dest: Path) -> None:
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in parts:
        raise ValueError(f"{archive}: member {name!r} would be written outside the extraction folder "
                         "(path traversal); refusing to extract this archive")
    target = (dest / norm).resolve()
    if target != dest and dest not in target.parents:
        raise ValueError(f"{archive}: member {name!r} escapes the extraction folder; refusing to extract")


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract safely: every member is checked before anything is written; links are not followed."""
    archive, dest = Path(archive), Path(dest).resolve()
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for m in members:
                    _check_member(archive, m.filename, dest)
                for m in members:
                    if (m.external_attr >> 16) & 0o170000 == 0o120000:
                        continue  # a symlink: never materialise it
                    zf.extract(m, dest)
        elif kind == "tar":
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(archive, m.name, dest)
                regular = [m for m in members if m.isfile() or m.isdir()]
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, members=regular, filter="data")
                else:  # Python without extraction filters: only plain files and folders, checked above
                    tf.extractall(dest, members=regular)  # noqa: S202
        else:
            raise ValueError(f"{archive}: not a folder, zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ValueError(f"{archive}: broken archive ({exc})") from None


# ----------------------------------------------------------------------------------------------
# The import
# ----------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did; ``import_report.json`` is :meth:`to_dict`, the console gets :meth:`summary`."""

    out: str
    seen: int
    imported: int
    skipped: int
    duplicates_dropped: int
    per_label: dict[str, int]
    skipped_by_reason: dict[str, int]
    skipped_files: list[dict]
    dropped_duplicates: list[dict]
    exact_duplicate_groups: int
    near_duplicate_groups: int
    duplicate_groups: list[dict]
    conflicts: list[dict]
    ignored: list[str]
    sources: list[dict]
    options: dict
    seconds: float
    created: str = ""
    #: VOC faces imported, {label: {"annotation": n, "detector": m}}: which box each was cut with.
    voc_face_boxes: dict[str, dict[str, int]] = field(default_factory=dict)
    policy: str = (
        "exact duplicates with the same label are dropped (first copy kept); near duplicates are kept and "
        "share a group; a photo under two labels (conflict) is kept under both and listed here"
    )

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self, max_lines: int = 30) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.per_label.items()))
        lines = [
            f"imported {self.imported} images into {self.out} ({labels}) in {self.seconds:.1f} s",
            f"seen {self.seen} = {self.imported} imported + {self.skipped} skipped + "
            f"{self.duplicates_dropped} exact duplicates dropped",
            f"duplicates: {self.exact_duplicate_groups} exact groups, {self.near_duplicate_groups} near-duplicate "
            f"groups (phash distance <= {self.options['near_threshold']}); kept rows of a group share its id",
        ]
        if self.options.get("voc_boxes") == FROM_DETECTOR:
            det = self.options.get("voc_detector", {})
            n = {src: sum(c[src] for c in self.voc_face_boxes.values()) for src in VOC_BOX_SOURCES}
            lines.append(f"VOC faces cut with the detector's box: {n[FROM_DETECTOR]}; with the annotated box "
                         f"(the detector missed them): {n[FROM_ANNOTATION]} (detector {det.get('detector')}, "
                         f"fit {det.get('fit')}, min_face {det.get('min_face')})")
        if self.conflicts:
            lines.append(f"CONFLICTS: {len(self.conflicts)} photos appear under more than one label (kept under "
                         "each, same group; review them):")
            lines += [f"  {c['group']}: " + ", ".join(f"{r['label']}={r['source']}" for r in c["rows"])
                      for c in self.conflicts[:max_lines]]
        if self.skipped:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped_by_reason.items()))
            lines.append(f"skipped {self.skipped} ({reasons}):")
            listed = [s for s in self.skipped_files if s["reason"] != "too_small"]
            lines += [f"  {s['path']}: {s['reason']} ({s['detail']})" for s in listed[:max_lines]]
            if len(listed) > max_lines:
                lines.append(f"  ... {len(listed) - max_lines} more in {REPORT}")
            if self.skipped_by_reason.get("too_small"):
                lines.append(f"  {self.skipped_by_reason['too_small']} faces smaller than --min-face "
                             f"{self.options['min_face']} px (listed in {REPORT})")
        if self.ignored:
            lines.append("ignored (not a class folder): " + ", ".join(self.ignored[:max_lines]))
        return "\n".join(lines)


def import_sources(
    sources: Iterable[Path],
    out: Path,
    margin: float = DEFAULT_MARGIN,
    min_face: int = DEFAULT_MIN_FACE,
    near_threshold: int = DEFAULT_NEAR_THRESHOLD,
    force: bool = False,
    jobs: int | None = None,
    progress: bool | None = None,
    voc_boxes: DetectorBoxes | None = None,
) -> ImportReport:
    """Import ``sources`` (folders or archives) into a new dataset folder ``out``.

    ``voc_boxes``: cut VOC faces with the boxes this detector finds for them (None: with the
    annotated boxes). ``progress`` None shows a progress bar only on a terminal. Raises
    FileNotFoundError for a missing source (or detector model), ValueError for an unusable one or
    an existing ``out`` without ``force``.
    """
    t0 = time.perf_counter()
    sources = [Path(s).absolute() for s in sources]  # `source` columns must mean something later
    out = Path(out).absolute()
    _check_args(sources, out, margin, min_face, near_threshold, force)
    if voc_boxes is not None:
        detector_of(voc_boxes)  # a missing or broken detector model fails now, naming the file
    jobs = max(1, jobs if jobs is not None else min(os.cpu_count() or 1, 8))
    out.parent.mkdir(parents=True, exist_ok=True)
    exclude = {out.resolve()}
    infos: list[SourceInfo] = []
    with contextlib.ExitStack() as stack:
        scanner = _Scanner(exclude)
        for src in sources:
            info = SourceInfo(path=str(src))
            if src.is_dir():
                scanner.scan(src, info, _Display(src))
            else:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="maskwatch-extract-")))
                log.info("extracting %s", src)
                extract_archive(src, tmp)
                info.kind.append("archive")
                scanner.scan(tmp, info, _Display(tmp, str(src)))
            log.info("%s: %s, %d items", src, "+".join(info.kind), info.items)
            infos.append(info)
        build = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        build.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the dataset is not
        try:
            report = _build(scanner, infos, build, out, margin, min_face, near_threshold, jobs, progress, t0,
                            voc_boxes)
            _move_into_place(build, out, force)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_args(sources: list[Path], out: Path, margin: float, min_face: int, near: int, force: bool) -> None:
    if not sources:
        raise ValueError("no sources given")
    for src in sources:
        if not src.exists():
            raise FileNotFoundError(f"source not found: {src}")
        if not src.is_dir() and archive_kind(src) is None:
            raise ValueError(f"{src}: not a folder, nor a .zip / .tar.gz archive")
        if src.is_dir() and (out.resolve() == src.resolve() or out.resolve() in src.resolve().parents):
            raise ValueError(f"--out {out} would contain or replace the source {src}; choose another folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.exists() and not force:
        raise ValueError(f"--out {out} already exists; pass --force to replace it")
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"--margin must be within 0..1, got {margin}")
    if min_face < 1:
        raise ValueError(f"--min-face must be at least 1 px, got {min_face}")
    if not 0 <= near <= 32:
        raise ValueError(f"--near-threshold must be 0..32 bits, got {near}")


def _run_tasks(tasks: list[Task], root: Path, margin: float, min_face: int, jobs: int,
               progress: bool | None, boxes: DetectorBoxes | None = None
               ) -> Iterator[tuple[list[Produced], list[Skipped]]]:
    from tqdm import tqdm

    work = partial(process_task, root=str(root), margin=margin, min_face=min_face, boxes=boxes)
    bar = dict(total=len(tasks), desc="import", unit="file", disable=None if progress is None else not progress)
    if jobs <= 1 or len(tasks) < _POOL_MIN_TASKS:
        yield from tqdm(map(work, tasks), **bar)
        return
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may have TensorFlow (threads) loaded, which fork can deadlock.
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, min(64, len(tasks) // (jobs * 8)))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        yield from tqdm(pool.map(work, tasks, chunksize=chunk), **bar)


def _build(scanner: _Scanner, infos: list[SourceInfo], build: Path, out: Path, margin: float, min_face: int,
           near_threshold: int, jobs: int, progress: bool | None, t0: float,
           voc_boxes: DetectorBoxes | None = None) -> ImportReport:
    produced, skipped = _cut_faces(scanner, build, margin, min_face, jobs, progress, voc_boxes)
    kept, dropped = _drop_exact_duplicates(produced, build)
    if not kept:
        where = ", ".join(i.path for i in infos)
        reasons = Counter(s.reason for s in skipped)
        raise ValueError(f"nothing to import from {where}: every item was skipped ({dict(reasons)})")
    log.info("grouping %d images by sha256 and phash (threshold %d)", len(kept), near_threshold)
    groups = dedup.group_ids([p.key_sha256 for p in kept], [p.key_phash for p in kept], near_threshold)
    rows = [Row(p.path, p.label, p.source, p.sha256, p.phash, g, p.width, p.height) for p, g in zip(kept, groups, strict=True)]
    write_manifest(build, rows)
    dup_groups, conflicts, near_count = _duplicate_groups(rows, dropped, {p.path: p.key_sha256 for p in kept})
    options = {"margin": margin, "min_face": min_face, "near_threshold": near_threshold,
               "voc_boxes": FROM_ANNOTATION if voc_boxes is None else FROM_DETECTOR}
    if voc_boxes is not None:
        options["voc_detector"] = voc_boxes.describe()
    report = _report(infos, out, rows, skipped, dropped, produced, dup_groups, conflicts, near_count, options, t0)
    report.voc_face_boxes = _box_counts(kept)
    (build / REPORT).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _box_counts(kept: list[Produced]) -> dict[str, dict[str, int]]:
    """{label: {box source: VOC faces}} of the imported faces (whole images are not counted)."""
    out: dict[str, dict[str, int]] = {}
    for p in kept:
        if p.box_from is not None:
            out.setdefault(p.label, dict.fromkeys(VOC_BOX_SOURCES, 0))[p.box_from] += 1
    return dict(sorted(out.items()))


def _cut_faces(scanner: _Scanner, build: Path, margin: float, min_face: int, jobs: int,
               progress: bool | None, voc_boxes: DetectorBoxes | None = None) -> tuple[list[Produced], list[Skipped]]:
    """Every task decoded and its faces written under ``build``; what was made and what was skipped."""
    for label in sorted({c.label for t in scanner.tasks for c in t.crops}):
        (build / label).mkdir()
    produced: list[Produced] = []
    skipped = list(scanner.skipped)
    # closing(): on an error, stop the workers before the caller deletes the folder they write to.
    with contextlib.closing(_run_tasks(scanner.tasks, build, margin, min_face, jobs, progress, voc_boxes)) as results:
        for rows, skips in results:
            produced += rows
            skipped += skips
    return produced, skipped


def _drop_exact_duplicates(produced: list[Produced], build: Path) -> tuple[list[Produced], list[dict]]:
    """Exact duplicates with the same label: the first copy is kept, the others' files deleted.

    VOC faces compare by their annotated crop (``key_sha256``), whichever box cut them."""
    kept: list[Produced] = []
    dropped: list[dict] = []
    first: dict[tuple[str, str], Produced] = {}
    for p in produced:
        key = (p.key_sha256, p.label)
        if key in first:
            (build / p.path).unlink()
            dropped.append({"source": p.source, "label": p.label, "kept": first[key].path,
                            "kept_source": first[key].source})
        else:
            first[key] = p
            kept.append(p)
    return kept, dropped


def _duplicate_groups(rows: list[Row], dropped: list[dict], keys: dict[str, str]
                      ) -> tuple[list[dict], list[dict], int]:
    """Groups holding exact or near duplicates, groups whose members disagree on the label, and
    how many groups hold near duplicates. ``keys``: row path -> the sha256 duplicates compare."""
    by_group: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_group[r.group].append(r)
    dropped_by_group: dict[str, list[str]] = defaultdict(list)
    group_of_path = {r.path: r.group for r in rows}
    for d in dropped:
        dropped_by_group[group_of_path[d["kept"]]].append(d["source"])
    dup_groups, conflicts = [], []
    near_count = 0
    for gid in sorted(set(by_group) | set(dropped_by_group)):
        members = by_group[gid]
        near = len({keys[r.path] for r in members}) > 1
        exact = bool(dropped_by_group.get(gid)) or len({keys[r.path] for r in members}) < len(members)
        kind = "+".join(k for k, on in (("exact", exact), ("near", near)) if on)
        near_count += near
        labels = sorted({r.label for r in members})
        if kind:
            dup_groups.append({"group": gid, "kind": kind, "labels": labels,
                               "rows": [r.path for r in members], "dropped": dropped_by_group.get(gid, [])})
        if len(labels) > 1:
            conflicts.append({"group": gid, "kind": kind, "labels": labels,
                              "rows": [{"path": r.path, "label": r.label, "source": r.source} for r in members]})
    return dup_groups, conflicts, near_count


def _report(infos: list[SourceInfo], out: Path, rows: list[Row], skipped: list[Skipped], dropped: list[dict],
            produced: list[Produced], dup_groups: list[dict], conflicts: list[dict], near_count: int,
            options: dict, t0: float) -> ImportReport:
    """The import report; every item seen is imported, skipped or dropped as a duplicate, exactly once."""
    skipped.sort(key=lambda s: (s.reason, s.path))
    seen = sum(i.items for i in infos)
    reasons: Counter[str] = Counter()
    for s in skipped:
        reasons[s.reason] += s.items
    copies = Counter(p.key_sha256 for p in produced)
    report = ImportReport(
        out=str(out),
        seen=seen,
        imported=len(rows),
        skipped=sum(s.items for s in skipped),
        duplicates_dropped=len(dropped),
        per_label=dict(sorted(Counter(r.label for r in rows).items())),
        skipped_by_reason=dict(sorted(reasons.items())),
        skipped_files=[asdict(s) for s in skipped],
        dropped_duplicates=dropped,
        exact_duplicate_groups=sum(1 for n in copies.values() if n > 1),
        near_duplicate_groups=near_count,
        duplicate_groups=dup_groups,
        conflicts=conflicts,
        ignored=[x for i in infos for x in i.ignored],
        sources=[asdict(i) for i in infos],
        options=options,
        seconds=round(time.perf_counter() - t0, 2),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if seen != report.imported + report.skipped + report.duplicates_dropped:
        raise RuntimeError(f"internal error: counts do not add up ({seen} seen, {report.imported} imported, "
                           f"{report.skipped} skipped, {report.duplicates_dropped} dropped)")
    return report


def _move_into_place(build: Path, out: Path, force: bool) -> None:
    """Rename the finished folder to ``out``; an old ``out`` (``--force``) is removed only after."""
    if not out.exists():
        build.rename(out)
        return
    if not force:
        raise ValueError(f"--out {out} appeared during the import; pass --force to replace it")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    try:
        build.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_report(root: Path) -> dict | None:
    """The ``import_report.json`` of a dataset folder, or None when it has none."""
    path = Path(root) / REPORT
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``maskwatch data fetch``."""
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to create")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="VOC crops: margin around the box, fraction of its longer side (default %(default)s, "
                             "the device's)")
    parser.add_argument("--min-face", type=int, default=DEFAULT_MIN_FACE,
                        help="skip faces whose box (or image) is smaller than this many px on its longer side "
                             "(default %(default)s)")
    parser.add_argument("--near-threshold", type=int, default=DEFAULT_NEAR_THRESHOLD,
                        help="perceptual-hash bits two images may differ in and still be grouped as one photo "
                             "(default %(default)s; 0 = only identical hashes)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists (only after success)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from train.scenes.voc_scenes import FITS

    parser.add_argument("sources", nargs="+", type=Path, metavar="SRC",
                        help="folder-per-class folder, PASCAL VOC folder, or a .zip/.tar.gz of either")
    add_import_options(parser)
    parser.add_argument("--voc-boxes", choices=VOC_BOX_SOURCES, default=FROM_ANNOTATION,
                        help="VOC faces: cut each with its annotated box, or with the box --detector finds for it "
                             "on the photo seen as a 640x480 camera frame (so training crops look like the "
                             "daemon's; a face the detector misses keeps its annotated box) "
                             "(default %(default)s)")
    parser.add_argument("--detector", metavar="KIND[:MODEL][,OPT=VAL]",
                        help="with --voc-boxes detector: the daemon's detector setting, as evaluate-scenes takes "
                             "it, e.g. yunet:models/face_detection_yunet_2023mar.onnx,score_threshold=0.5")
    parser.add_argument("--detector-fit", choices=FITS, default="fill",
                        help="with --voc-boxes detector: how a photo becomes the 640x480 frame the detector sees, "
                             "as evaluate-scenes --fit (default %(default)s)")
    parser.add_argument("--detector-min-face", type=int, default=None,
                        help="with --voc-boxes detector: drop detections smaller than this many px, as the "
                             "daemon's detector.min_face (default: the daemon's default)")


def voc_boxes_from_args(args: argparse.Namespace) -> DetectorBoxes | None:
    """The ``--voc-boxes`` choice as :func:`import_sources` takes it; ValueError for a bad combination."""
    if args.voc_boxes == FROM_ANNOTATION:
        if args.detector:
            raise ValueError("--detector is used only with --voc-boxes detector")
        return None
    if not args.detector:
        raise ValueError("--voc-boxes detector needs --detector KIND[:MODEL][,OPT=VAL] (the daemon's detector)")
    return DetectorBoxes(args.detector, fit=args.detector_fit, min_face=args.detector_min_face)


def main(args: argparse.Namespace) -> int:
    report = import_sources(args.sources, args.out, margin=args.margin, min_face=args.min_face,
                            near_threshold=args.near_threshold, force=args.force, jobs=args.jobs,
                            voc_boxes=voc_boxes_from_args(args))
    print(report.summary())
    return 0
