"""The dataset manifest: one CSV row per image, the single source of truth for a dataset folder.

Layout of a dataset folder made by ``maskwatch data import``::

    DIR/manifest.csv          one row per image (columns below)
    DIR/<label>/<name>.jpg    the images (face crops), RGB JPEG
    DIR/import_report.json    skipped files with reasons, duplicate groups, conflicts, counts

``split`` is empty until ``maskwatch data split`` fills it with train / val / test.

The workstation (import, split, training, evaluation) and the device (``maskwatch-device bench
--data``) read it with the same :func:`read_manifest`; a hand-made manifest needs only the
``path`` and ``label`` columns where that is all a reader uses (:data:`LABELLED`).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MANIFEST = "manifest.csv"
SPLITS = ("train", "val", "test")


@dataclass
class Row:
    path: str  # relative to the dataset folder, POSIX separators
    label: str
    source: str  # where it came from (original file, plus "#box<N>" for VOC crops)
    sha256: str  # of the decoded pixels' source file bytes
    phash: str  # perceptual hash (hex), for near-duplicate grouping
    group: str  # duplicate group id: rows with the same group are the same photo
    width: int
    height: int
    split: str = ""


COLUMNS = [f.name for f in fields(Row)]
#: The columns a reader that only needs labelled images asks for (the rest default to empty / 0).
LABELLED = ("path", "label")


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST


def read_manifest(root: Path, required: Sequence[str] = COLUMNS) -> list[Row]:
    """Every row of ``root/manifest.csv``; an error naming the file (and line) for a bad one."""
    path = manifest_path(root)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {root} a dataset made by `maskwatch data import`?")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        present = set(reader.fieldnames or [])
        missing = set(required) - present
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for line, r in enumerate(reader, start=2):
            try:
                values = {c: r[c] if c in present else "" for c in COLUMNS}
                values.update({c: int(r[c]) if c in present else 0 for c in ("width", "height")})
                rows.append(Row(**values))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: bad row ({exc})") from None
    return rows


def write_manifest(root: Path, rows: list[Row]) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a manifest."""
    path = manifest_path(root)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def manifest_sha256(root: Path) -> str:
    """Hash of the manifest, recorded in model cards to say which data a model saw."""
    return hashlib.sha256(manifest_path(root).read_bytes()).hexdigest()


def rows_for(rows: list[Row], split: str) -> list[Row]:
    return [r for r in rows if r.split == split]
