"""``make bench`` (``python -m benchmarks.quantization``): is the int8 model worth shipping?

Converts the default trained model to float32 and int8, benchmarks both on the dataset's TEST
split with the device's benchmark (interleaved timing, same process), and checks the targets
below, printing PASS/FAIL for each. Writes ``bench/convert/``: the converted models with their
cards, ``bench.json`` / ``bench.md`` / ``bench.png`` and ``targets.json``. Exits 1 when a
target fails, 2 on bad input.

Numbers are for THIS machine; the command printed at the end measures a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.targets import Target, check

log = logging.getLogger("benchmarks.quantization")

DEFAULT_MODEL = Path("runs/default/model.keras")
DEFAULT_OUT = Path("bench/convert")

#: Targets of the int8 model relative to the float32 one (test split).
MAX_SIZE_RATIO = 0.30
MAX_P50_RATIO_1T = 0.60
MAX_ACCURACY_GAP_POINTS = 0.5
MIN_AGREEMENT = 0.99
MIN_ALERT_F1 = 0.98


def evaluate_targets(doc: dict, quantization: str = "int8") -> list[Target]:
    """The int8 targets from a bench.json document (float32 is its reference)."""
    models = {m["quantization"]: m for m in doc["models"]}
    if quantization not in models or "float32" not in models:
        raise ValueError(f"bench results need a float32 and an {quantization} model, got {sorted(models)}")
    q = models[quantization]
    lat1 = q["latency"].get("1")
    acc = q.get("accuracy") or {}
    # "Within 0.5 points" both ways: an int8 model that scores much higher is just as different.
    gap = abs(acc["accuracy_delta_points"]) if "accuracy_delta_points" in acc else None
    return [
        check("int8 file size / float32", q.get("size_ratio"), MAX_SIZE_RATIO, True),
        check("int8 p50 latency / float32 at 1 thread", lat1.get("p50_ratio") if lat1 else None,
               MAX_P50_RATIO_1T, True),
        check("|int8 - float32 accuracy| (points)", gap, MAX_ACCURACY_GAP_POINTS, True),
        check("int8 label agreement with float32", acc.get("agreement_with_reference"), MIN_AGREEMENT, False),
        check("int8 without_mask F1", acc.get("alert_f1"), MIN_ALERT_F1, False),
    ]


def pi_command(models: Sequence[Path], data: Path) -> str:
    """What a Raspberry Pi owner runs (after copying the models and the dataset folder over)."""
    names = " ".join(f"models/{Path(m).name}" for m in models)
    return (f"maskwatch-device bench {names} --data {data.name} --split test "
            f"--threads 1,2,4 --runs 200 --warmup 20 --out bench/pi")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quantization", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"Keras model (default {DEFAULT_MODEL})")
    p.add_argument("--data", type=Path, help="dataset folder (default: the run's config.json)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--threads", default="1,2", help="thread counts to time (default 1,2)")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--calibration-size", type=int, default=200)
    p.add_argument("--limit", type=int, help="at most this many test images (seeded sample)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from convert.tflite import ConvertOptions, as_json, convert_model, summary_table
    from device import bench

    model = Path(args.model)
    if not model.is_file():
        raise FileNotFoundError(
            f"no trained model at {model}: train one first with "
            f"`maskwatch train --data DATASET --out {model.parent}` (DATASET made by `maskwatch data import` "
            f"and `maskwatch data split`), or run `make demo`; or pass --model PATH"
        )
    threads = bench.parse_threads(args.threads)
    out = Path(args.out)
    log.info("converting %s (float32 + int8) into %s", model, out / "models")
    conv = convert_model(ConvertOptions(model=model, out=out / "models", data=args.data,
                                        calibration_size=args.calibration_size, min_agreement=0.0))
    print(summary_table(conv))
    pair = [conv.path_of("float32"), conv.path_of("int8")]
    cfg = bench.BenchConfig(models=pair, threads=threads, runs=args.runs, warmup=args.warmup, data=conv.data,
                            split="test", limit=args.limit, out=out)
    doc = bench.write_outputs(bench.run_bench(cfg), out)
    print()
    print(bench.markdown_table(doc))
    targets = evaluate_targets(doc)
    scored = (doc["models"][0].get("accuracy") or {}).get("n", 0)
    print(f"\nTargets on the test split of {conv.data} ({scored} images with the model's labels), "
          f"this machine ({doc['machine']['platform']}, {doc['machine']['cpu_count']} CPUs):")
    for t in targets:
        print("  " + t.line())
    summary = {"targets": [asdict(t) for t in targets], "all_passed": all(t.passed for t in targets),
               "conversion": as_json(conv), "bench": str(out / "bench.json")}
    (out / "targets.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}/: models/, bench.json, bench.md, {'bench.png, ' if doc['png'] else ''}targets.json")
    if doc["png_note"]:
        print(f"note: {doc['png_note']}")
    print("\nTo measure on a Raspberry Pi (device install only, no TensorFlow): copy "
          f"{out / 'models'}/ and the dataset folder {conv.data} into one folder on the Pi, and run there:\n  "
          + pi_command(pair, conv.data))
    return 0 if summary["all_passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    args = parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"make bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
