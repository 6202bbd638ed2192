"""``maskwatch evaluate-scenes``: how many faces of real scene photos the daemon finds and flags.

Annotated scene photos (PASCAL VOC folders: ``images/`` + ``annotations/*.xml``, e.g. photos of
your own entrance labelled with any VOC tool) go through the daemon's own detect -> filter ->
classify code for one or more ``--detector`` settings side by side (see
:mod:`train.scenes.runner`). Reported per detector: faces found overall, by class and by face
size, masked faces >= 32 px found, no-mask faces found AND flagged, how many flagged faces
really are no-mask, unmatched detections, and ms per frame measured in the same run.
Writes ``report.md``, ``report.json``, ``recall_by_size.png``, ``recall_vs_ms.png`` and
``mistakes.png`` (the crops of the default detector's found faces the alert got wrong) to
``--out``. No TensorFlow: runs on a Raspberry Pi too (PNGs need matplotlib).

Photos a model was trained on flatter it: ``--split-of DATASET --split test`` keeps only the
scenes whose faces are all in the test split of the dataset the model was trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from train.scenes import voc_scenes
from train.scenes.detector_specs import parse_detector
from train.scenes.report import markdown, write_outputs
from train.scenes.runner import SceneConfig, run_scenes

DEFAULT_OUT = Path("bench/scenes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("voc", nargs="+", type=Path, metavar="VOC_DIR",
                        help="PASCAL VOC folders (images/ + annotations/*.xml)")
    parser.add_argument("--model", type=Path, required=True,
                        help="the classifier .tflite, with its model card (.json) beside it")
    parser.add_argument("--detector", action="append", metavar="KIND[:MODEL][,OPT=VAL]",
                        help="a detector setting, repeatable: short, full, yunet:PATH.onnx, "
                             "full,score_threshold=0.5 (default: short)")
    parser.add_argument("--threads", type=int, default=2, help="threads of detector and classifier (default 2)")
    parser.add_argument("--split-of", type=Path, metavar="DATASET_DIR",
                        help="dataset made by `maskwatch data import` + `split` from these VOC folders: keep "
                             "only the scenes all of whose faces are in --split")
    parser.add_argument("--split", default="test", help="the split kept with --split-of (default test)")
    parser.add_argument("--min-face", type=int, default=None,
                        help="drop detections smaller than this many px, as the daemon's detector.min_face "
                             "(default: the daemon's default)")
    parser.add_argument("--fit", choices=voc_scenes.FITS, default="shrink",
                        help="how a photo becomes a 640x480 frame: shrink (only photos larger than the frame; "
                             "face sizes stay the photo's) or fill (scaled to fill the frame, as a camera with "
                             "the photo's field of view would see it) (default shrink)")
    parser.add_argument("--limit", type=int, help="only the first N scenes (a quick look)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")


def config_from_args(args: argparse.Namespace) -> SceneConfig:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    return SceneConfig(voc=list(args.voc), model=args.model, detectors=[parse_detector(t) for t in args.detector or ["short"]],
                       threads=args.threads, split_of=args.split_of, split=args.split, min_face=args.min_face,
                       limit=args.limit, fit=args.fit)


def main(args: argparse.Namespace) -> int:
    result = write_outputs(run_scenes(config_from_args(args)), args.out)
    print(markdown(result))
    if result["png_note"]:
        print(f"note: {result['png_note']}")
    print(f"wrote {args.out / 'report.md'}, {args.out / 'report.json'}"
          + "".join(f", {p}" for p in result["png"]))
    return 0
