"""``make bench-scenes`` (``python -m benchmarks.scenes``): does the daemon find and flag the faces?

Runs ``maskwatch evaluate-scenes`` (:mod:`train.scenes`) on the scene photos of
``../shared/datasets/faces-voc`` that are in the TEST split of the benchmark dataset (scenes
whose faces were never trained on), with the default int8 classifier of ``make bench``, for
the default detector (YuNet int8 on LiteRT), BlazeFace short range, full range and YuNet on
OpenCV side by side, 2 threads, 640x480 frames. Then it
checks issue 11's targets on the daemon's DEFAULT detector (``device.config``):

* faces found >= 0.90 overall, and >= 0.90 for masked (with_mask) faces of 32 px or more;
* no-mask faces found AND flagged >= 0.90;
* flagged faces that really are no-mask >= 0.95.

It reuses what ``make bench-train`` (the dataset ``bench/train/data/all``) and ``make bench``
(``bench/convert/models/default_int8.tflite``) made; it trains nothing. Writes ``bench/scenes/``
(report.md, report.json, PNGs, targets.json), prints PASS/MISS per target and exits 1 on a miss,
2 on bad input. ``--target found=1.01`` overrides a limit (e.g. to see a miss).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.targets import Target, check, faces_fields, faces_note, parse_overrides

log = logging.getLogger("benchmarks.scenes")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKWATCH_SHARED", ROOT.parent / "shared"))
DEFAULT_MODEL = Path("bench/convert/models/default_int8.tflite")
DEFAULT_DATA = Path("bench/train/data/all")
DEFAULT_OUT = Path("bench/scenes")
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

#: Issue 11's targets: (report figure, lowest passing value).
TARGETS: dict[str, float] = {
    "found": 0.90,
    "masked_found_32px": 0.90,
    "alert_recall": 0.90,
    "flagged_precision": 0.95,
}


def figures(d: dict) -> dict[str, float | None]:
    """The targeted figures of one detector's entry in report.json."""
    return {
        "found": d["recall"],
        "masked_found_32px": d["with_mask_32px"]["recall"],
        "alert_recall": d["alert_recall"]["recall"],
        "flagged_precision": d["flagged_precision"]["precision"],
    }


def counts(d: dict) -> dict[str, tuple[int, int]]:
    """(faces the figure counts, faces it is a share of) for each targeted figure of a detector's report entry."""
    return {
        "found": (d["found"], d["faces"]),
        "masked_found_32px": (d["with_mask_32px"]["found"], d["with_mask_32px"]["faces"]),
        "alert_recall": (d["alert_recall"]["found_and_flagged"], d["alert_recall"]["faces"]),
        "flagged_precision": (d["flagged_precision"]["really_without_mask"], d["flagged_precision"]["flagged"]),
    }


def parse_targets(pairs: Sequence[str]) -> dict[str, float]:
    """``NAME=VALUE`` overrides on top of :data:`TARGETS`."""
    return parse_overrides(pairs, TARGETS)


def check_targets(detector: dict, limits: dict[str, float]) -> list[Target]:
    values = figures(detector)
    return [check(name, values[name], limit, at_most=False) for name, limit in limits.items()]


def default_detector(doc: dict) -> dict:
    for d in doc["detectors"]:
        if d["default"]:
            return d
    kinds = ", ".join(d["kind"] for d in doc["detectors"])
    raise ValueError(f"the daemon's default detector is not among the measured ones ({kinds}): add it with --detector")


def target_line(t: Target, count: tuple[int, int] | None = None) -> str:
    """PASS/MISS, the figure and its limit; with ``count`` (hits, of) also the faces and the 95 %
    interval, so a reader sees whether a miss or a pass is more than a face or two."""
    shown = "not measured" if t.value is None else f"{t.value:.4f}"
    return f"{'PASS' if t.passed else 'MISS'}  {t.name}: {shown} (target {t.op} {t.limit:g})" + (
        faces_note(*count) if count else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scenes", description=__doc__.split("\n\n")[0])
    p.add_argument("--voc", type=Path, action="append",
                   help=f"VOC folder(s) (default {SHARED / 'datasets/faces-voc'})")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"int8 classifier (default {DEFAULT_MODEL})")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"dataset whose split decides the scenes (default {DEFAULT_DATA})")
    p.add_argument("--split", default="test", help="scenes of this split only (default test)")
    p.add_argument("--detector", action="append",
                   help=f"detector settings (default: yunet (the daemon's default), short, full, yunet:{YUNET})")
    p.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    p.add_argument("--min-face", type=int, default=None,
                   help="drop detections under this many px (default: the daemon's detector.min_face)")
    p.add_argument("--fit", choices=("shrink", "fill"), default="fill",
                   help="how a photo becomes a 640x480 frame (default fill: faces-voc's photos are 400x280 at the "
                        "median, a 640x480 camera with their field of view sees every face 1.6x larger; see "
                        "maskwatch evaluate-scenes --help)")
    p.add_argument("--limit", type=int, help="only the first N scenes (a quick look; targets still checked)")
    p.add_argument("--target", action="append", default=[], metavar="NAME=VALUE",
                   help=f"override a target, e.g. found=1.01 (names: {', '.join(TARGETS)})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from train.scenes.detector_specs import parse_detector
    from train.scenes.report import markdown, write_outputs
    from train.scenes.runner import SceneConfig, run_scenes

    limits = parse_targets(args.target)
    if not Path(args.model).is_file():
        raise FileNotFoundError(f"no int8 classifier at {args.model}: run `make bench-train` then `make bench` "
                                "(they make it), or pass --model PATH")
    if not (Path(args.data) / "manifest.csv").is_file():
        raise FileNotFoundError(f"no dataset at {args.data}: run `make bench-train` (it imports and splits the "
                                "shared datasets), or pass --data DATASET_DIR")
    voc = args.voc or [SHARED / "datasets" / "faces-voc"]
    detectors = args.detector or ["yunet", "short", "full", f"yunet:{YUNET}"]
    cfg = SceneConfig(voc=voc, model=args.model, detectors=[parse_detector(t) for t in detectors],
                      threads=args.threads, split_of=args.data, split=args.split, limit=args.limit,
                      min_face=args.min_face, fit=args.fit)
    doc = write_outputs(run_scenes(cfg), args.out)
    print(markdown(doc))
    d = default_detector(doc)
    targets = check_targets(d, limits)
    print(f"\nTargets on the default detector, {d['name']} ({doc['scenes']['used']} {args.split}-split scenes, "
          f"{d['faces']} faces):")
    faces = counts(d)
    for t in targets:
        print("  " + target_line(t, faces[t.name]))
    summary = {"detector": d["name"],
               "targets": [{**asdict(t), **faces_fields(*faces[t.name])} for t in targets],
               "all_passed": all(t.passed for t in targets), "report": str(args.out / "report.json")}
    (Path(args.out) / "targets.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}/: report.md, report.json, {''.join(Path(p).name + ', ' for p in doc['png'])}"
          "targets.json")
    if doc["png_note"]:
        print(f"note: {doc['png_note']}")
    return 0 if summary["all_passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.targets import run_benchmark

    return run_benchmark("bench-scenes", parse_args, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
