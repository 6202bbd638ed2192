"""``maskwatch predict``: find the faces in photos and say, for each, mask or no mask.

Whole photos go through the device's face detector and :func:`device.contract.crop_face` with
the card's margin and input size, the same crops the daemon makes; ``--crops`` treats each
image as one face already cropped. The label follows the card's threshold on P(alert label),
as on the device. Works with ``.keras`` and ``.tflite`` models (the latter without TensorFlow).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from device.contract import crop_face, resize_face
from device.detectors.base import DEFAULT_KIND, DEFAULT_MIRROR, KINDS

COLORS = {"with_mask": (40, 180, 40), "without_mask": (230, 40, 40), "incorrect_mask": (255, 150, 0)}


@dataclass
class FacePrediction:
    box: list[float]  # x0, y0, x1, y1 in image pixels (the whole image with --crops)
    label: str
    alert: bool
    probs: dict[str, float]
    detector_score: float | None = None


@dataclass
class ImagePrediction:
    image: str
    width: int
    height: int
    faces: list[FacePrediction] = field(default_factory=list)


def predict_images(clf, paths: list[Path], crops: bool = False, detector=None) -> list[ImagePrediction]:
    """Classify every face of every image (``detector`` is needed unless ``crops``)."""
    from device.decision import decide
    from device.images import read_rgb

    card = clf.card
    alerts = [card.labels.index(lb) for lb in card.alerts]
    results = []
    for path in paths:
        rgb = read_rgb(path)
        h, w = rgb.shape[:2]
        if crops:
            boxes, scores = [(0.0, 0.0, float(w), float(h))], [None]
            batch = resize_face(rgb, card.input_size)[None]
        else:
            faces = detector.detect(rgb)
            boxes = [tuple(float(v) for v in f.box) for f in faces]
            scores = [float(f.score) for f in faces]
            batch = (np.stack([crop_face(rgb, b, card.input_size, card.margin) for b in boxes]) if boxes
                     else np.zeros((0, card.input_size, card.input_size, 3), np.uint8))
        probs = clf.predict_crops(batch) if len(batch) else np.zeros((0, len(card.labels)), np.float32)
        pred = decide(probs, alerts, card.threshold) if len(probs) else np.zeros(0, int)
        faces_out = [
            FacePrediction(box=[round(v, 1) for v in box], label=card.labels[int(k)], alert=bool(int(k) in alerts),
                           probs={lab: round(float(p[i]), 5) for i, lab in enumerate(card.labels)},
                           detector_score=None if s is None else round(s, 4))
            for box, s, p, k in zip(boxes, scores, probs, pred, strict=True)
        ]
        results.append(ImagePrediction(image=str(path), width=w, height=h, faces=faces_out))
    return results


def annotate(image_path: Path, result: ImagePrediction, out_path: Path, alert_label: str) -> Path:
    """The photo with a box and label per face (green with mask, red without), saved as an image."""
    import cv2

    from device.images import read_rgb

    img = cv2.cvtColor(read_rgb(image_path), cv2.COLOR_RGB2BGR)
    thick = max(2, round(max(img.shape[:2]) / 400))
    for f in result.faces:
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        r, g, b = COLORS.get(f.label, (0, 160, 255))
        cv2.rectangle(img, (x0, y0), (x1, y1), (b, g, r), thick)
        text = f"{f.label} {f.probs[f.label]:.2f}"
        scale = max(0.4, thick / 3)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 4 if y0 - th - 6 > 0 else y1 + th + 4
        cv2.rectangle(img, (x0, ty - th - 3), (x0 + tw + 4, ty + base - 1), (b, g, r), -1)
        cv2.putText(img, text, (x0 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_path), img):
        raise ValueError(f"{out_path}: cannot write the annotated image (unknown extension?)")
    return out_path


def annotation_path(out: Path, image: Path, n_images: int) -> Path:
    """``--annotate OUT``: a file for one image when OUT has an image extension, else a folder."""
    if n_images == 1 and out.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        return out
    return out / f"{image.stem}_annotated.jpg"


def format_table(results: list[ImagePrediction], alert_label: str) -> str:
    lines = [f"{'image':<28}{'face':>5}  {'label':<15}{'p(' + alert_label + ')':>18}{'det':>7}  box"]
    for r in results:
        name = Path(r.image).name
        if not r.faces:
            lines.append(f"{name:<28}{'-':>5}  no faces found")
        for i, f in enumerate(r.faces, 1):
            det = "" if f.detector_score is None else f"{f.detector_score:.2f}"
            box = ",".join(str(int(round(v))) for v in f.box)
            lines.append(f"{name:<28}{i:>5}  {f.label:<15}{f.probs[alert_label]:>18.4f}{det:>7}  {box}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help=".keras or .tflite model (its card .json beside it)")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    parser.add_argument("--crops", action="store_true", help="the images are face crops already: no detector")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--annotate", type=Path, metavar="OUT",
                        help="write annotated images: a file for one image (OUT.jpg) or a folder")
    parser.add_argument("--detector", choices=KINDS, default=DEFAULT_KIND,
                        help="face detector for whole photos (default: %(default)s, as on the device)")
    parser.add_argument("--detector-model", type=Path, help="detector model file (default: the fetched one)")
    parser.add_argument("--min-score", type=float, default=None, help="detector score threshold")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=DEFAULT_MIRROR,
                        help="also detect on the mirror image, as the daemon does by default (%(default)s)")
    parser.add_argument("--threads", type=int, default=None)


def main(args: argparse.Namespace) -> int:
    from train.evaluate import load_classifier

    missing = [str(p) for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image not found: {', '.join(missing)}")
    clf = load_classifier(args.model, args.threads)
    detector = None
    if not args.crops:
        from device.detectors import make_detector

        detector = make_detector(args.detector, model_path=args.detector_model, score_threshold=args.min_score,
                                 num_threads=args.threads, mirror=args.mirror)
    results = predict_images(clf, list(args.images), crops=args.crops, detector=detector)
    alert = clf.card.alert_label
    if args.json:
        print(json.dumps({"model": str(args.model), "threshold": clf.card.threshold,
                          "images": [asdict(r) for r in results]}, indent=2))
    else:
        print(format_table(results, alert))
    if args.annotate:
        for r in results:
            p = annotate(Path(r.image), r, annotation_path(args.annotate, Path(r.image), len(results)), alert)
            if not args.json:
                print(f"annotated: {p}")
    return 0
