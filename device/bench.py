"""``maskwatch-device bench MODEL.tflite...``: size, load time, latency, memory and accuracy of models.

Runs where the models run (a Raspberry Pi included), so only numpy, OpenCV and a TFLite
interpreter are used; matplotlib is optional. All models are timed in one process and
interleaved (each run invokes every model once, in a rotating order), so a busy moment on the
machine slows every model alike and the ratios to the float32 model stay fair. Latency is for
one face (batch 1) through :class:`device.classifier.MaskClassifier`, i.e. the daemon's exact path
including input quantization.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.contract import ModelCard, load_card_for, normalize_label, resize_face, sha256_file
from device.decision import decide
from device.images import looks_like_image, read_rgb
from device.manifest import LABELLED, MANIFEST, read_manifest
from device.metrics import agreement, classification_metrics, latency_summary
from device.safe_write import write_file

log = logging.getLogger(__name__)

#: Predictions for accuracy are made this many faces per invoke (the daemon batches a frame's faces).
EVAL_BATCH = 32


# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return float(value) / float(reference)


def parse_threads(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; a clear error for anything else."""
    try:
        values = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--threads: expected comma-separated integers like 1,2,4, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--threads: expected positive integers like 1,2,4, got {text!r}")
    return list(dict.fromkeys(values))


# --------------------------------------------------------------------------------------------
# Memory (Linux /proc first; resource as the portable fallback)
# --------------------------------------------------------------------------------------------


def current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process (Linux >= 4.0); False when unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource  # not on Windows; only reached where /proc is missing (macOS, BSD)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def memory_probe(model: Path, threads: int) -> dict[str, float]:
    """Peak memory a model adds to a fresh process: load it and classify one face.

    Measured in a child process so earlier models (and heap they freed) cannot hide or inflate
    it. The baseline is taken after the interpreter library is imported, so the figure is what
    the classifier costs the daemon: model file pages, weights repacked by XNNPack, tensor arena
    (plus the runtime's one-time set-up, the same for every model).
    """
    import subprocess

    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from device import bench, runtime\n"
        "from device.classifier import MaskClassifier\n"
        "runtime.interpreter_class()\n"
        "base = bench.current_rss_bytes()\n"
        "ok = bench.reset_peak_rss()\n"
        "base = base if (ok and base is not None) else bench.peak_rss_bytes()\n"
        "clf = MaskClassifier(sys.argv[1], num_threads=int(sys.argv[2]))\n"
        "s = clf.card.input_size\n"
        "clf.predict_crops(np.random.default_rng(0).integers(0, 256, (1, s, s, 3), dtype=np.uint8))\n"
        "peak = bench.peak_rss_bytes()\n"
        "print(json.dumps({'baseline_mb': base / 2**20, 'peak_mb': peak / 2**20,"
        " 'peak_delta_mb': max(0, peak - base) / 2**20}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(model), str(threads)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": _package_root()})
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{model}: memory probe failed ({tail})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _package_root() -> str:
    """PYTHONPATH for the probe: this checkout first, so the child runs the same code."""
    root = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + rest if rest else "")


# --------------------------------------------------------------------------------------------
# Labelled images (dataset folder with manifest.csv, or folder per class)
# --------------------------------------------------------------------------------------------


@dataclass
class LabelledImages:
    root: Path
    split: str | None
    paths: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    _resized: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def at_size(self, size: int) -> np.ndarray:
        """All images as (N, size, size, 3) uint8, resized the contract's way (cached per size)."""
        if size not in self._resized:
            if not self.images:
                self._resized[size] = np.zeros((0, size, size, 3), np.uint8)
            else:
                self._resized[size] = np.stack([resize_face(im, size) for im in self.images])
        return self._resized[size]


def list_labelled_files(root: Path, split: str | None) -> tuple[list[Path], list[str], str | None]:
    """(paths, canonical labels, split used) of a dataset folder.

    With a ``manifest.csv`` (made by ``maskwatch data import`` / ``split``) the rows of ``split``
    are used; otherwise a folder per class (``root/<class>/*`` or ``root/<split>/<class>/*``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder")
    manifest = root / MANIFEST
    if manifest.is_file():
        rows = read_manifest(root, required=LABELLED)
        if split:
            splits = sorted({r.split or "(none)" for r in rows})
            rows = [r for r in rows if r.split == split]
            if not rows:
                raise ValueError(f"{manifest}: no images in split {split!r} (splits present: {splits})")
        paths, labels = [], []
        for r in rows:
            label = normalize_label(r.label)
            if label is None:
                raise ValueError(f"{manifest}: unknown label {r.label!r} for {r.path}")
            paths.append(root / r.path)
            labels.append(label)
        return paths, labels, split
    base = root / split if split and (root / split).is_dir() else root
    paths, labels = [], []
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        label = normalize_label(sub.name)
        if label is None:
            continue
        for p in sorted(sub.rglob("*")):
            if p.is_file() and looks_like_image(p):
                paths.append(p)
                labels.append(label)
    if not paths:
        raise ValueError(
            f"--data {root}: no manifest.csv and no class folders with images "
            "(expected e.g. with_mask/ and without_mask/)"
        )
    return paths, labels, split if base != root else None


def load_labelled_images(root: Path, split: str | None = "test", limit: int | None = None) -> LabelledImages:
    """Decode the labelled images of a dataset folder; files that do not decode are skipped and listed."""
    paths, labels, used_split = list_labelled_files(root, split)
    if limit is not None and limit < len(paths):
        # Seeded, so two runs on the same folder measure the same images.
        keep = np.sort(np.random.default_rng(0).choice(len(paths), size=limit, replace=False))
        paths = [paths[i] for i in keep]
        labels = [labels[i] for i in keep]
    out = LabelledImages(Path(root), used_split)
    for path, label in zip(paths, labels, strict=True):
        try:
            rgb = read_rgb(path)
        except (OSError, ValueError) as exc:
            out.skipped.append({"path": str(path), "reason": str(exc)})
            continue
        out.paths.append(path)
        out.labels.append(label)
        out.images.append(rgb)
    if out.skipped:
        log.warning("%s: skipped %d files that do not decode (first: %s)", root, len(out.skipped),
                    out.skipped[0]["path"])
    if not out.images:
        raise ValueError(f"--data {root}: none of the {len(paths)} listed images could be decoded")
    log.info("%s: %d labelled images%s", root, len(out), f" (split {used_split})" if used_split else "")
    return out


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    models: list[Path]
    threads: list[int] = field(default_factory=lambda: [1, 2, 4])
    runs: int = 200
    warmup: int = 20
    data: Path | None = None
    split: str | None = "test"
    limit: int | None = None
    out: Path | None = None


def _model_entry(path: Path, card: ModelCard) -> dict:
    return {
        "path": str(path),
        "file": path.name,
        "quantization": card.quantization,
        "input_size": card.input_size,
        "labels": list(card.labels),
        "threshold": float(card.threshold),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "latency": {},
    }


def _reference_index(cards: Sequence[ModelCard]) -> int:
    """The float32 model the ratios are relative to (the first model when there is none)."""
    for i, card in enumerate(cards):
        if card.quantization == "float32":
            return i
    return 0


def _check_models(paths: Sequence[Path]) -> list[ModelCard]:
    if not paths:
        raise ValueError("no models given")
    cards = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"model file not found: {p}")
        cards.append(load_card_for(p))
    first = cards[0]
    for p, c in zip(paths[1:], cards[1:], strict=True):
        if list(c.labels) != list(first.labels):
            raise ValueError(
                f"models disagree on labels: {Path(paths[0]).name} {first.labels} vs {Path(p).name} {c.labels}"
            )
    return cards


def _timing_input(size: int, images: LabelledImages | None) -> np.ndarray:
    if images is not None and len(images):
        return images.at_size(size)[:1]
    return np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)


def _time_interleaved(clfs: Sequence, inputs: Sequence[np.ndarray], runs: int, warmup: int) -> np.ndarray:
    """(models, runs) latencies in seconds; each run visits every model, starting at a rotating one."""
    n = len(clfs)
    for _ in range(warmup):
        for clf, x in zip(clfs, inputs, strict=True):
            clf.predict_crops(x)
    times = np.zeros((n, runs), dtype=np.float64)
    clock = time.perf_counter
    for r in range(runs):
        for k in range(n):
            i = (r + k) % n
            t0 = clock()
            clfs[i].predict_crops(inputs[i])
            times[i, r] = clock() - t0
    return times


def _evaluate(clf, images: LabelledImages) -> np.ndarray:
    x = images.at_size(clf.card.input_size)
    probs = [clf.predict_crops(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
    return np.concatenate(probs)


def run_bench(cfg: BenchConfig) -> dict:
    """Measure every model; returns the ``bench.json`` document (ratios relative to float32)."""
    from device.classifier import MaskClassifier

    paths = [Path(p) for p in cfg.models]
    if cfg.runs < 1 or cfg.warmup < 0:
        raise ValueError(f"--runs must be >= 1 and --warmup >= 0 (got {cfg.runs}, {cfg.warmup})")
    cards = _check_models(paths)
    ref = _reference_index(cards)
    entries = [_model_entry(p, c) for p, c in zip(paths, cards, strict=True)]
    images = load_labelled_images(cfg.data, cfg.split, cfg.limit) if cfg.data else None
    inputs = [_timing_input(c.input_size, images) for c in cards]
    backend = None

    # The interpreter library's one-time set-up must not be billed to the first model's load
    # time: load the smallest model once beforehand.
    primer = MaskClassifier(min(paths, key=lambda p: p.stat().st_size), num_threads=cfg.threads[0])
    primer.predict_crops(_timing_input(primer.card.input_size, images))
    del primer
    for ti, threads in enumerate(cfg.threads):
        clfs = []
        for entry, path, x in zip(entries, paths, inputs, strict=True):
            t0 = time.perf_counter()
            clf = MaskClassifier(path, num_threads=threads)  # a ValueError naming a bad file
            load_s = time.perf_counter() - t0
            clf.predict_crops(x)  # first invoke allocates the arena
            backend = clf.backend
            clfs.append(clf)
            entry["latency"][str(threads)] = {"load_ms": load_s * 1000.0}
        log.info("timing %d model(s) at %d thread(s): %d warm-up + %d runs each, interleaved",
                 len(clfs), threads, cfg.warmup, cfg.runs)
        times = _time_interleaved(clfs, inputs, cfg.runs, cfg.warmup)
        for entry, row in zip(entries, times, strict=True):
            lat = latency_summary(row * 1000.0)
            lat["runs"] = lat.pop("n")  # bench.json's name for the count
            entry["latency"][str(threads)].update(lat)
        if ti == 0 and images is not None:
            _accuracy(entries, clfs, images, ref)
        del clfs
        gc.collect()

    for entry, path in zip(entries, paths, strict=True):  # every model loaded fine in-process by now
        log.info("memory of %s (fresh process)", path.name)
        entry["memory"] = memory_probe(path, cfg.threads[0])
        entry["peak_rss_delta_mb"] = entry["memory"]["peak_delta_mb"]
    _ratios(entries, ref, cfg.threads)
    return {
        "settings": {
            "threads": cfg.threads,
            "runs": cfg.runs,
            "warmup": cfg.warmup,
            "batch": 1,
            "interleaved": True,
            "data": str(cfg.data) if cfg.data else None,
            "split": images.split if images is not None else None,
            "n_images": len(images) if images is not None else 0,
            "skipped_images": images.skipped if images is not None else [],
        },
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "backend": backend,
        },
        "reference": entries[ref]["file"],
        "models": entries,
    }


def _accuracy(entries: list[dict], clfs: Sequence, images: LabelledImages, ref: int) -> None:
    labels = list(clfs[0].card.labels)
    known = [lab in labels for lab in images.labels]
    if not any(known):
        raise ValueError(f"--data {images.root}: none of its labels {sorted(set(images.labels))} is a model label {labels}")
    keep = np.flatnonzero(known)
    y = np.array([labels.index(images.labels[i]) for i in keep])
    preds = []
    for entry, clf in zip(entries, clfs, strict=True):
        probs = _evaluate(clf, images)[keep]
        pred = decide(probs, clf.alert_indices, float(clf.card.threshold))
        preds.append(pred)
        m = classification_metrics(y, pred, clf.alert_index)
        entry["accuracy"] = {
            "n": m["n"],
            "accuracy": m["accuracy"],
            f"{clf.card.alert_label}_precision": m["precision"],
            f"{clf.card.alert_label}_recall": m["recall"],
            f"{clf.card.alert_label}_f1": m["f1"],
            "alert_f1": m["f1"],
            "ignored_other_labels": int(len(images) - len(keep)),
        }
    for entry, pred in zip(entries, preds, strict=True):
        entry["accuracy"]["agreement_with_reference"] = agreement(pred, preds[ref])
        entry["accuracy"]["accuracy_delta_points"] = 100.0 * (
            entry["accuracy"]["accuracy"] - entries[ref]["accuracy"]["accuracy"]
        )


def _ratios(entries: list[dict], ref: int, threads: Sequence[int]) -> None:
    for entry in entries:
        entry["size_ratio"] = ratio(entry["size_bytes"], entries[ref]["size_bytes"])
        for t in threads:
            lat = entry["latency"][str(t)]
            lat["p50_ratio"] = ratio(lat["p50_ms"], entries[ref]["latency"][str(t)]["p50_ms"])
            lat["p95_ratio"] = ratio(lat["p95_ms"], entries[ref]["latency"][str(t)]["p95_ms"])


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(result: dict) -> str:
    """One row per model and thread count; ×-columns are ratios to the float32 reference."""
    head = ("| model | quant | threads | size MB | size × | load ms | mem MB | p50 ms | p95 ms | p99 ms "
            "| p50 × | accuracy % | Δ acc pts | F1 alert | agree % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in result["models"]:
        acc = e.get("accuracy") or {}
        for t, lat in e["latency"].items():
            lines.append(
                "| " + " | ".join([
                    e["file"],
                    e["quantization"],
                    t,
                    _fmt(e["size_bytes"] / 1e6, ".3f"),
                    _fmt(e.get("size_ratio"), ".2f", "×"),
                    _fmt(lat.get("load_ms"), ".1f"),
                    _fmt(e.get("peak_rss_delta_mb"), ".1f"),
                    _fmt(lat["p50_ms"], ".2f"),
                    _fmt(lat["p95_ms"], ".2f"),
                    _fmt(lat["p99_ms"], ".2f"),
                    _fmt(lat.get("p50_ratio"), ".2f", "×"),
                    _fmt(100 * acc["accuracy"] if acc else None, ".2f"),
                    _fmt(acc.get("accuracy_delta_points"), "+.2f"),
                    _fmt(acc.get("alert_f1"), ".4f"),
                    _fmt(100 * acc["agreement_with_reference"] if acc else None, ".2f"),
                ]) + " |"
            )
    return "\n".join(lines)


def write_plot(result: dict, path: Path) -> str | None:
    """Latency (p50) vs accuracy PNG, one point per model and thread count; a note instead when it cannot.

    Without labelled data the y axis is the file size instead.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: skipped the PNG (pip install matplotlib to get it)"
    has_acc = all(e.get("accuracy") for e in result["models"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>"
    for i, e in enumerate(result["models"]):
        xs = [lat["p50_ms"] for lat in e["latency"].values()]
        y = 100 * e["accuracy"]["accuracy"] if has_acc else e["size_bytes"] / 1e6
        ax.scatter(xs, [y] * len(xs), marker=markers[i % len(markers)], s=60, label=f"{e['file']} ({e['quantization']})")
        for x, t in zip(xs, e["latency"], strict=True):
            ax.annotate(f"{t}T", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("p50 latency per face, ms (batch 1)")
    ax.set_ylabel(f"accuracy % ({result['settings']['split'] or 'all'} images)" if has_acc else "file size, MB")
    ax.set_title("maskwatch classifier: latency vs " + ("accuracy" if has_acc else "size"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def write_outputs(result: dict, out: Path) -> dict:
    """bench.json, bench.md and bench.png (when matplotlib is there) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "bench.png"
    note = write_plot(result, png)
    result["png"] = None if note else str(png)
    result["png_note"] = note
    (out / "bench.md").write_text(markdown_table(result) + "\n", encoding="utf-8")
    write_file(out / "bench.json", (json.dumps(result, indent=2) + "\n").encode("utf-8"), mode=0o644)
    return result


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL.tflite",
                        help=".tflite models, each with its model card (.json) beside it")
    parser.add_argument("--data", type=Path,
                        help="labelled images for accuracy: a dataset folder (manifest.csv) or a folder per class")
    parser.add_argument("--split", default="test", help="manifest split to use with --data (default: test)")
    parser.add_argument("--limit", type=int, help="use at most this many images (seeded sample)")
    parser.add_argument("--threads", default="1,2,4", help="thread counts to time, comma separated (default 1,2,4)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model and thread count (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    parser.add_argument("--out", type=Path, default=Path("bench/tflite"),
                        help="where bench.json, bench.md and bench.png go (default bench/tflite)")


def main(args: argparse.Namespace) -> int:
    cfg = BenchConfig(
        models=list(args.models),
        threads=parse_threads(args.threads),
        runs=args.runs,
        warmup=args.warmup,
        data=args.data,
        split=args.split or None,
        limit=args.limit,
        out=args.out,
    )
    result = write_outputs(run_bench(cfg), cfg.out)
    print(markdown_table(result))
    print(f"\nratios (×) are relative to {result['reference']}; machine: {result['machine']['platform']}, "
          f"{result['machine']['cpu_count']} CPUs, backend {result['machine']['backend']}")
    if result["png_note"]:
        print(f"note: {result['png_note']}")
    print(f"wrote {cfg.out / 'bench.json'}" + (f", {result['png']}" if result["png"] else ""))
    return 0
