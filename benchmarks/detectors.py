"""``python -m benchmarks.detectors``: face detectors side by side, ms per 640x480 frame.

For choosing a detector and a YuNet input size on the machine at hand (run it on the Pi):
every detector runs on the same 640x480 frame (a photo scaled to fit, black below or beside),
interleaved so that a busy moment of a shared machine slows all alike, on ``--threads``
threads; then each one's faces on every photo (as the photo is, at its own size) are counted.
Recall on annotated scenes is ``maskwatch evaluate-scenes``' job; this is about cost.

Detectors are ``KIND`` or ``KIND=MODEL`` (``short``, ``full``, ``yunet=models/x.tflite``,
``yunet=x.onnx`` for OpenCV's DNN); by default BlazeFace short and full, every converted YuNet
in the models folder, and the YuNet ONNX there on OpenCV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKWATCH_SHARED", ROOT.parent / "shared"))


def frame_640x480(rgb: np.ndarray) -> np.ndarray:
    """The photo as a 640x480 camera frame: scaled to fit, top-left, black elsewhere."""
    import cv2

    from device.detectors.yunet_litert import fit_params

    fit = fit_params(rgb.shape[1], rgb.shape[0], 640, 480)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:fit.new_height, :fit.new_width] = cv2.resize(rgb, (fit.new_width, fit.new_height),
                                                        interpolation=cv2.INTER_AREA)
    return frame


def default_specs(models: Path) -> list[str]:
    specs = ["short", "full"]
    specs += [f"yunet={p}" for p in sorted(models.glob("face_detection_yunet_*.tflite"))]
    specs += [f"yunet={p}" for p in sorted(models.glob("face_detection_yunet_*.onnx"))]
    return specs


def build(spec: str, threads: int):
    from device.detectors import make_detector

    kind, _, model = spec.partition("=")
    return make_detector(kind, model_path=Path(model) if model else None, num_threads=threads)


def run(specs: list[str], photos: list[Path], frame_photo: Path, threads: int, runs: int) -> list[dict]:
    from device.images import read_rgb

    detectors = [build(s, threads) for s in specs]
    images = [read_rgb(p) for p in photos]
    frame = frame_640x480(read_rgb(frame_photo))
    for d in detectors:  # warm-up: first invokes allocate and pack weights
        for _ in range(5):
            d.detect(frame)
    times: list[list[float]] = [[] for _ in detectors]
    for _ in range(runs):
        for i, d in enumerate(detectors):
            t = time.perf_counter()
            d.detect(frame)
            times[i].append((time.perf_counter() - t) * 1e3)
    rows = []
    for spec, d, t in zip(specs, detectors, times, strict=True):
        rows.append({"detector": d.describe(), "spec": spec, "median_ms": round(float(np.median(t)), 2),
                     "p95_ms": round(float(np.percentile(t, 95)), 2), "runs": runs,
                     "faces_on_frame": len(d.detect(frame)),
                     "faces": {p.name: len(d.detect(img)) for p, img in zip(photos, images, strict=True)}})
    return rows


def table(rows: list[dict], photos: list[Path], frame_photo: Path, threads: int) -> str:
    names = [p.name for p in photos]
    lines = [f"ms per 640x480 frame ({frame_photo.name} fitted), {threads} threads, interleaved; "
             f"faces found per photo at its own size", "",
             "| detector | median ms | p95 ms | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for r in rows:
        lines.append(f"| {r['detector']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | "
                     + " | ".join(str(r["faces"][n]) for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from device.detectors.model_files import DEFAULT_DIR

    parser = argparse.ArgumentParser(prog="python -m benchmarks.detectors", description=__doc__.split("\n")[0])
    parser.add_argument("detectors", nargs="*", metavar="KIND[=MODEL]",
                        help="detectors to compare (default: short, full and every YuNet in the models folder)")
    parser.add_argument("--photos", nargs="+", type=Path,
                        help="photos to count faces on (default: ../shared/media/*)")
    parser.add_argument("--frame", type=Path, help="photo that becomes the timed 640x480 frame (default: the first)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2, as the daemon)")
    parser.add_argument("--runs", type=int, default=200, help="timed frames per detector (default 200)")
    parser.add_argument("--models", type=Path, default=DEFAULT_DIR, help="models folder (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    photos = args.photos or sorted(p for p in (SHARED / "media").glob("*") if p.is_file())
    if not photos:
        print(f"no photos: give --photos (../shared/media is absent at {SHARED})", file=sys.stderr)
        return 2
    frame_photo = args.frame or photos[0]
    rows = run(args.detectors or default_specs(args.models), photos, frame_photo, args.threads, args.runs)
    print(table(rows, photos, frame_photo, args.threads))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "frame": frame_photo.name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
