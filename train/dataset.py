"""Dataset folders (made by ``maskwatch data import`` + ``split``) as numpy arrays.

Images are resized with :func:`device.contract.resize_face`, the same call the device makes, so
the model sees the same pixels in training, conversion, evaluation and on the Pi.
No TensorFlow here: ``evaluate`` on a ``.tflite`` model and the converter's calibration use it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.contract import DEFAULT_MARGIN, resize_face
from device.images import read_rgb
from device.manifest import MANIFEST, SPLITS, Row, read_manifest

log = logging.getLogger(__name__)

#: ``split`` value meaning "every row, whatever its split" (e.g. a dataset used only for testing).
ALL = "all"


@dataclass
class Split:
    """One split of a dataset in memory: images, label indices and where each came from."""

    x: np.ndarray  # (N, size, size, 3) uint8
    y: np.ndarray  # (N,) int64 indices into labels
    paths: list[str] = field(default_factory=list)  # relative to the dataset folder
    labels: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        c = Counter(self.y.tolist())
        return {lab: int(c.get(i, 0)) for i, lab in enumerate(self.labels)}


def dataset_rows(root: Path, labels: Sequence[str]) -> list[Row]:
    """Manifest rows whose label is one of ``labels``, with clear errors for a folder that is no dataset."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: --data wants a dataset folder made by `maskwatch data import`")
    if not any(root.iterdir()):
        raise ValueError(f"dataset folder {root} is empty: make one with `maskwatch data import SOURCES --out {root}`")
    rows = read_manifest(root)
    if not rows:
        raise ValueError(f"{root / MANIFEST} has no rows: the dataset is empty")
    kept = [r for r in rows if r.label in labels]
    if not kept:
        found = sorted({r.label for r in rows})
        raise ValueError(f"{root / MANIFEST}: no rows with labels {list(labels)} (found {found})")
    return kept


def rows_of_split(rows: Sequence[Row], split: str) -> list[Row]:
    if split == ALL:
        return list(rows)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join((*SPLITS, ALL))}")
    return [r for r in rows if r.split == split]


def check_training_data(root: Path, labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """Everything that can be checked before any image is decoded; returns counts per split and label.

    Training needs a train and a val split (early stopping watches val), and every label in
    the train split: a model that never saw a class cannot learn it.
    """
    root = Path(root)
    rows = dataset_rows(root, labels)
    counts = {s: {lab: 0 for lab in labels} for s in SPLITS}
    for r in rows:
        if r.split in counts:
            counts[r.split][r.label] += 1
    for s in ("train", "val"):
        if sum(counts[s].values()) == 0:
            raise ValueError(
                f"{root / MANIFEST} has no {s!r} rows: split the dataset first "
                f"(`maskwatch data split {root}`)"
            )
    missing = [lab for lab, n in counts["train"].items() if n == 0]
    if missing:
        present = [lab for lab, n in counts["train"].items() if n > 0]
        raise ValueError(
            f"{root / MANIFEST}: the train split has only {', '.join(present)} images; "
            f"training needs every class of {list(labels)} (missing: {', '.join(missing)})"
        )
    missing = [lab for lab, n in counts["val"].items() if n == 0]
    if missing:
        # Early stopping still works; the class simply is not measured on val (a small
        # dataset may hold a handful of incorrectly worn masks, all in train).
        log.warning("%s: the val split has no %s images: they are not measured on val",
                    root / MANIFEST, ", ".join(missing))
    return counts


def load_rows(root: Path, rows: Sequence[Row], size: int, labels: Sequence[str],
              workers: int = 4, progress: bool = True, desc: str = "images") -> Split:
    """Decode and resize ``rows`` (in order). Unreadable files stop with the file's name."""
    from tqdm import tqdm

    root = Path(root)
    labels = tuple(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    x = np.zeros((len(rows), size, size, 3), np.uint8)

    def one(i: int) -> None:
        x[i] = resize_face(read_rgb(root / rows[i].path), size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        it = pool.map(one, range(len(rows)))
        for _ in tqdm(it, total=len(rows), desc=f"loading {desc}", unit="img", disable=not progress,
                      mininterval=2.0, leave=False):
            pass
    y = np.array([index[r.label] for r in rows], dtype=np.int64)
    return Split(x=x, y=y, paths=[r.path for r in rows], labels=labels)


def load_split_data(root: Path, split: str, size: int, labels: Sequence[str], progress: bool = True) -> Split:
    """Like :func:`load_split`, keeping the file paths (for contact sheets of mistakes)."""
    rows = rows_of_split(dataset_rows(root, labels), split)
    if not rows:
        raise ValueError(f"{Path(root) / MANIFEST} has no {split!r} rows with labels {list(labels)}")
    return load_rows(root, rows, size, labels, progress=progress, desc=split)


def load_split(root: Path, split: str, size: int, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 3) uint8 and label indices into ``labels`` for one split.

    Rows whose label is not in ``labels`` are left out (e.g. ``incorrect_mask`` for a binary model).
    ``split`` is train / val / test, or ``all`` for every row.
    """
    data = load_split_data(root, split, size, labels, progress=False)
    return data.x, data.y


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights n / (k * count): every class adds the same total to the loss."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    total = counts.sum()
    return {i: (float(total / (n_classes * c)) if c > 0 else 0.0) for i, c in enumerate(counts)}


def dataset_margin(root: Path) -> float:
    """The crop margin the dataset's VOC faces were cut with (import report), else the default.

    The card carries it so the device crops live faces the way training crops were made.
    """
    report = Path(root) / "import_report.json"
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return DEFAULT_MARGIN
    for holder in (data, data.get("options", {}) if isinstance(data, dict) else {},
                   data.get("config", {}) if isinstance(data, dict) else {}):
        if isinstance(holder, dict) and isinstance(holder.get("margin"), (int, float)):
            return float(holder["margin"])
    return DEFAULT_MARGIN
