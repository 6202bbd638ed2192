"""``maskwatch-device detect IMAGE...``: run a face detector on image files.

A quick way to see what the daemon's detector sees on a photo, to compare detectors, and to
pick a threshold. One unreadable image does not stop the others; the exit status tells.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from device.detectors import DEFAULT_KIND, DEFAULT_MIRROR, KINDS, Face, make_detector
from device.images import read_rgb
from device.safe_write import write_file

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--detector", choices=KINDS, default=DEFAULT_KIND,
                        help="YuNet, BlazeFace short range or full range (default: %(default)s, as the daemon)")
    parser.add_argument("--model", type=Path,
                        help="model file (default: the fetched BlazeFace model; for yunet the converted "
                             ".tflite in the models folder; a YuNet .onnx runs on OpenCV instead)")
    parser.add_argument("--threshold", type=float, help="minimum face score 0..1 (default: the detector's own)")
    parser.add_argument("--min-face", type=int, default=0, help="drop faces smaller than this many pixels")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=DEFAULT_MIRROR,
                        help="also detect on the mirror image, as the daemon does by default (%(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per image (JSON Lines) instead of text")
    parser.add_argument("--annotate", type=Path, metavar="OUT_DIR",
                        help="also write each image with its faces drawn to OUT_DIR/<name>.jpg")


def face_record(face: Face) -> dict:
    """A JSON-ready face (NaN keypoints, e.g. YuNet's ears, become null)."""
    kps = None
    if face.keypoints is not None:
        kps = [[None if math.isnan(v) else round(float(v), 1) for v in pt] for pt in face.keypoints]
    return {"box": [round(v, 1) for v in face.box], "score": round(face.score, 4), "keypoints": kps}


def draw_faces(rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A BGR copy of the frame with boxes, scores and keypoints drawn."""
    import cv2

    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thick = max(1, round(max(rgb.shape[:2]) / 400))
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), thick)
        cv2.putText(out, f"{face.score:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 255, 0), thick, cv2.LINE_AA)
        if face.keypoints is not None:
            for x, y in face.keypoints:
                if not (math.isnan(x) or math.isnan(y)):
                    cv2.circle(out, (int(round(x)), int(round(y))), thick + 1, (0, 0, 255), -1)
    return out


def write_jpeg(path: Path, bgr: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"{path}: could not encode the annotated image")
    write_file(path, buf.tobytes(), mode=0o644)  # never through a link planted in OUT_DIR


def _annotated_path(out_dir: Path, image: Path, used: set[Path]) -> Path:
    """OUT_DIR/<stem>.jpg, numbered when two inputs share a name."""
    path = out_dir / f"{image.stem}.jpg"
    n = 1
    while path in used:
        path = out_dir / f"{image.stem}-{n}.jpg"
        n += 1
    used.add(path)
    return path


def main(args: argparse.Namespace) -> int:
    detector = make_detector(args.detector, model_path=args.model, score_threshold=args.threshold,
                             min_face=args.min_face, mirror=args.mirror)
    if args.annotate is not None:
        args.annotate.mkdir(parents=True, exist_ok=True)
    failed = 0
    used: set[Path] = set()
    for image in args.images:
        try:
            rgb = read_rgb(image)
        except (FileNotFoundError, ValueError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": str(image), "error": str(exc)}, ensure_ascii=False), flush=True)
            continue
        faces = detector.detect(rgb)
        h, w = rgb.shape[:2]
        annotated = None
        if args.annotate is not None:
            annotated = _annotated_path(args.annotate, image, used)
            write_jpeg(annotated, draw_faces(rgb, faces))
        if args.json:
            record = {"image": str(image), "width": w, "height": h, "detector": args.detector,
                      "faces": [face_record(f) for f in faces]}
            if annotated is not None:
                record["annotated"] = str(annotated)
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(f"{image}: {len(faces)} face{'s' if len(faces) != 1 else ''} ({w}x{h})", flush=True)
            for f in faces:
                x0, y0, x1, y1 = f.box
                print(f"  score {f.score:.3f}  box {x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f}  "
                      f"({x1 - x0:.0f}x{y1 - y0:.0f})")
            if annotated is not None:
                print(f"  annotated: {annotated}")
    if failed:
        print(f"{failed} of {len(args.images)} image(s) could not be read", file=sys.stderr)
        return 1
    return 0
