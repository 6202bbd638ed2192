"""PNG figures for training runs and evaluations (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def training_curves(history: Sequence[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train and val, with the head / fine-tune boundary marked."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(1, len(history) + 1)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            ys = [h.get(prefix + key, np.nan) for h in history]
            ax.plot(x, ys, style, marker="o", ms=3, label=(prefix or "train_") + key)
        phases = [h.get("phase") for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", lw=1, ls=":")
                ax.text(i + 0.6, ax.get_ylim()[1], f" {phases[i]}", va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch (head, then fine-tune)")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_matrix(cm: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> Path:
    plt = _plt()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(labels), 1.2 + 1.3 * len(labels)))
    row = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row, out=np.zeros(cm.shape, float), where=row > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return _save(fig, path)


def roc_curve(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path, label: str,
              point: tuple[float, float] | None = None) -> Path:
    return _curve(fpr, tpr, f"{label} (AUC {auc:.4f})", point, ("false positive rate", "true positive rate"),
                  "ROC", "lower right", path, diagonal=True)


def pr_curve(recall: np.ndarray, precision: np.ndarray, ap: float, path: Path, label: str,
             point: tuple[float, float] | None = None) -> Path:
    return _curve(recall, precision, f"{label} (AP {ap:.4f})", point, ("recall", "precision"),
                  "precision / recall", "lower left", path, unit_box=True)


def _curve(x: np.ndarray, y: np.ndarray, label: str, point: tuple[float, float] | None, axes: tuple[str, str],
           title: str, legend_loc: str, path: Path, diagonal: bool = False, unit_box: bool = False) -> Path:
    """One curve, with the operating point of the chosen threshold marked in red."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot(x, y, lw=2, label=label)
    if diagonal:
        ax.plot([0, 1], [0, 1], ":", color="grey")
    if point is not None:
        ax.plot([point[0]], [point[1]], "o", color="red", label="chosen threshold")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    if unit_box:
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)
    return _save(fig, path)


def contact_sheet(images: Sequence[np.ndarray], captions: Sequence[str], path: Path,
                  title: str = "", cols: int = 8) -> Path:
    """A grid of images with a caption under each (e.g. the worst mistakes of an evaluation)."""
    plt = _plt()
    n = max(1, len(images))
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.0, 1.9 * cols), 2.45 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, cap in zip(axes.ravel(), images, captions, strict=False):
        ax.imshow(img)
        ax.set_title(cap, fontsize=7)
    if not len(images):
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=10, y=1.0)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def scene_recall_by_size(names: Sequence[str], bins: Sequence[str], recalls: Sequence[Sequence[float | None]],
                         counts: Sequence[int], path: Path) -> Path:
    """Scene benchmark: share of faces found per face-size bin, one bar per detector."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2 + 0.25 * ((len(names) + 1) // 2)))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(bins))
    for k, (name, row) in enumerate(zip(names, recalls, strict=True)):
        ys = [np.nan if r is None else r for r in row]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, ys, width, label=name)
    ax.set_xticks(x, [f"{b} px\n({n} faces)" for b, n in zip(bins, counts, strict=True)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("faces found (recall)")
    ax.set_title("faces found by face size (longer side on the 640x480 frame)")
    ax.grid(axis="y", alpha=0.3)
    # below the axes: inside, it hid the bars of the small-face bins
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return _save(fig, path)


def scene_recall_vs_ms(names: Sequence[str], ms: Sequence[float], recall: Sequence[float | None],
                       alert_recall: Sequence[float | None], path: Path) -> Path:
    """Scene benchmark: faces found and no-mask alerts raised vs median ms per frame, per detector."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, name in enumerate(names):
        colour = f"C{k % 10}"
        if recall[k] is not None:
            ax.scatter([ms[k]], [recall[k]], marker="o", s=60, color=colour, label=name)
        if alert_recall[k] is not None:
            ax.scatter([ms[k]], [alert_recall[k]], marker="^", s=60, color=colour)
    ax.set_xlabel("median ms per 640x480 frame (detect + classify)")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.set_title("recall vs time per frame (o faces found, ^ no-mask faces found and flagged)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
