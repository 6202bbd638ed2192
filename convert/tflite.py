"""``maskwatch convert MODEL.keras --out DIR``: Keras -> float32 and full-integer int8 TFLite.

The int8 model is what the Pi runs; the float32 one is the reference it is measured against
(and a fallback). Calibration images come from the TRAINING split (seeded sample) so the
validation split stays unseen by every step that tunes numbers; the parity check then runs on
the validation split through the device's own classifier code. Each .tflite gets a model card
beside it carrying the Keras card's labels and threshold plus what conversion learned (tensor
quantization parameters, calibration size, parity metrics, source sha256).

Conversion uses ``TFLiteConverter.from_keras_model``: with Keras 3 it traces the model in
inference mode, so augmentation layers vanish (``model.export`` + ``from_saved_model`` fails on
them). With the Rescaling layer inside the model the int8 input gets scale ~1 and zero point
-128: raw pixels 0..255 map onto the int8 range with no precision lost. The int8 file is then
compacted losslessly (:mod:`convert.compact`: identical per-channel quantization vectors stored
once), which is what brings it under 0.30x of the float32 file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.compact import compact_quantized
from convert.float_layers import MAX_ERROR_STEPS, LayerError, check_max_error, quantize_keeping_float
from convert.parity import Parity, keras_probabilities, parity_metrics, tflite_probabilities
from device import runtime
from device.contract import BINARY_LABELS, THREE_CLASS_LABELS, ModelCard, card_path, sha256_file

log = logging.getLogger(__name__)

KINDS = ("float32", "int8", "uint8", "float16")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass
class ConvertOptions:
    model: Path
    out: Path
    data: Path | None = None
    calibration_size: int = 200
    int8_io: str = "int8"
    float16: bool = False
    min_agreement: float = 0.99
    name: str | None = None
    seed: int = 0
    num_threads: int | None = None
    #: int8 layers whose output RMSE exceeds this many quantization steps stay float32
    #: (:mod:`convert.float_layers`); inf: every layer int8.
    max_int8_error: float = MAX_ERROR_STEPS
    #: Val images the int8 layers' error is measured on (a sample with every label's share).
    error_check_size: int = 60


@dataclass
class Converted:
    path: Path
    card: ModelCard
    parity: Parity


@dataclass
class ConvertResult:
    source: Path
    data: Path
    models: list[Converted] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def path_of(self, quantization: str) -> Path:
        for m in self.models:
            if m.card.quantization == quantization:
                return m.path
        raise KeyError(quantization)


# --------------------------------------------------------------------------------------------
# Inputs: the Keras model, its card, the dataset
# --------------------------------------------------------------------------------------------


def _tf_quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_keras_model(path: Path) -> Any:
    """The Keras model in ``path``; a ValueError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        ok = zipfile.is_zipfile(path)
        if ok:
            with zipfile.ZipFile(path) as z:
                ok = "config.json" in z.namelist()
        if not ok:
            raise ValueError(f"{path}: not a Keras model file (a .keras file is a zip archive with config.json)")
    elif suffix in (".h5", ".hdf5"):
        with open(path, "rb") as f:
            if f.read(8) != HDF5_MAGIC:
                raise ValueError(f"{path}: not a Keras model file (no HDF5 signature)")
    else:
        raise ValueError(f"{path}: not a Keras model file (expected a .keras file saved by model.save)")
    _tf_quiet()
    import keras

    from train.augment import custom_layers

    custom_layers()  # our augmentation layers must be registered before a trained model loads
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types with long messages for a broken file
        raise ValueError(f"{path}: Keras cannot load this model ({type(exc).__name__}: {str(exc)[:300]})") from None


def image_input_size(model: Any, where: Path) -> tuple[int, int]:
    """(input size S, number of outputs) for a model taking (None, S, S, 3) images."""
    if len(model.inputs) != 1:
        raise ValueError(f"{where}: expected one image input, the model has {len(model.inputs)} inputs")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"{where}: input shape {shape} is not a square RGB image (expected (None, S, S, 3))")
    out = tuple(model.outputs[0].shape)
    if len(model.outputs) != 1 or len(out) != 2 or not out[1]:
        raise ValueError(f"{where}: expected one output of class probabilities (None, classes), got {out}")
    return int(shape[1]), int(out[1])


def source_card(model_path: Path, input_size: int, n_outputs: int) -> ModelCard:
    """The Keras model's card, checked against the model; defaults (with a warning) when absent."""
    path = card_path(model_path)
    if path.is_file():
        card = ModelCard.load(path)
    else:
        labels = THREE_CLASS_LABELS if n_outputs == 3 else BINARY_LABELS
        log.warning("%s has no model card (%s); assuming labels %s and threshold 0.5",
                    model_path, path.name, list(labels))
        card = ModelCard(input_size=input_size, labels=list(labels))
    if card.input_size != input_size:
        raise ValueError(f"{path}: input_size {card.input_size} but the model takes {input_size} px images")
    if n_outputs != len(card.labels) and not (n_outputs == 1 and len(card.labels) == 2):
        raise ValueError(f"{path}: {len(card.labels)} labels but the model has {n_outputs} outputs")
    return card


def resolve_data_dir(model_path: Path, data: Path | None) -> Path:
    """``--data``, or the ``"data"`` entry of the run's config.json when the model sits in a run folder."""
    if data is None:
        config = Path(model_path).parent / "config.json"
        if not config.is_file():
            raise ValueError(
                f"no --data given and {model_path} is not in a run folder with config.json: "
                "say which dataset folder to calibrate and check on"
            )
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("data")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{config}: not a JSON object ({exc})") from None
        if not value:
            raise ValueError(f"{config}: no \"data\" entry; pass --data DATASET")
        data = Path(value)
        if not data.is_absolute() and not data.exists() and (config.parent / data).exists():
            data = config.parent / data
        log.info("dataset from %s: %s", config, data)
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {data}")
    return data


def split_rows(data: Path, split: str, labels: list[str]) -> list[Any]:
    """Manifest rows of one split with one of ``labels`` (dataset errors name the folder)."""
    from train.dataset import dataset_rows, rows_of_split

    return rows_of_split(dataset_rows(data, labels), split)


def load_rows(data: Path, rows: list[Any], size: int, labels: list[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    from train.dataset import load_rows as _load

    split = _load(data, rows, size, labels, progress=True, desc=what)
    return split.x, split.y


def calibration_sample(items: list[Any], n: int, seed: int, key: Callable[[Any], str] | None = None) -> list[Any]:
    """A seeded sample of ``n`` items in their original order (all of them when there are fewer).

    With ``key`` (an item's label) every label gets an equal share, a label with fewer items
    than its share lending the rest to the others: int8 ranges are set by what calibration
    shows the network, and a label that is rare in the training split (the few real
    incorrectly worn masks among ~10 000 faces) would otherwise drive its output from ranges
    measured on the other labels alone.

    Only the sampled images are decoded, so a 200-image calibration costs the same on a
    dataset of 4 000 or 400 000.
    """
    if n < 1:
        raise ValueError(f"--calibration-size must be at least 1, got {n}")
    if not items:
        raise ValueError("empty calibration set")
    if n >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    if key is None:
        return [items[i] for i in np.sort(rng.choice(len(items), size=n, replace=False))]
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(str(key(item)), []).append(i)
    quota = dict.fromkeys(groups, 0)
    left = n
    while left:  # hand out one place per label in turn, skipping labels with nothing left
        open_ = [g for g in sorted(groups) if quota[g] < len(groups[g])]
        for g in open_[:left]:
            quota[g] += 1
        left -= min(left, len(open_))
    chosen = [i for g in sorted(groups) for i in rng.choice(groups[g], size=quota[g], replace=False)]
    return [items[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def _converter(model: Any, kind: str, calibration: np.ndarray | None) -> Any:
    """TFLiteConverter set up for ``kind`` (full-integer kinds: calibrated on ``calibration``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown quantization {kind!r} (one of {KINDS})")
    _tf_quiet()
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind in ("int8", "uint8"):
        if calibration is None or len(calibration) == 0:
            raise ValueError("empty calibration set: full-integer quantization needs representative images")
        samples = np.asarray(calibration, dtype=np.float32)

        def representative():
            for i in range(len(samples)):
                yield [samples[i : i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = _io_type(kind)
        conv.inference_output_type = _io_type(kind)
    return conv


def _io_type(kind: str) -> Any:
    import tensorflow as tf

    return tf.int8 if kind == "int8" else tf.uint8


@contextlib.contextmanager
def _quiet_converter():
    """The Keras exporter prints its SavedModel signature to stdout and logs each asset folder:
    keep both out of our output."""
    captured = io.StringIO()
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            # Expected with float inputs to a full-integer model: the ranges come from calibration.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            yield
    finally:
        tf_log.setLevel(level)
        log.debug("converter output: %s", captured.getvalue())


def to_tflite(model: Any, kind: str, calibration: np.ndarray | None = None) -> bytes:
    """Serialized .tflite of ``model``: float32, float16 (weights), or full-integer int8/uint8."""
    conv = _converter(model, kind, calibration)
    with _quiet_converter():
        return conv.convert()


def to_int8_tflite(model: Any, kind: str, calibration: np.ndarray, check_images: np.ndarray,
                   max_error_steps: float = MAX_ERROR_STEPS) -> tuple[bytes, list[LayerError]]:
    """Full-integer .tflite of ``model`` whose layers int8 gets badly wrong on ``check_images``
    stay float32 (:mod:`convert.float_layers`), and those layers; ``max_error_steps`` inf: every
    layer int8, as :func:`to_tflite`."""
    if kind not in ("int8", "uint8"):
        raise ValueError(f"{kind!r} is not a full-integer kind (int8, uint8)")
    if math.isinf(max_error_steps) and max_error_steps > 0:
        return to_tflite(model, kind, calibration), []
    conv = _converter(model, kind, calibration)
    with _quiet_converter():
        return quantize_keeping_float(conv, check_images, _io_type(kind), max_error_steps)


def tensor_params(path: Path) -> dict[str, dict[str, Any]]:
    """Input/output dtype, scale and zero point as the interpreter reports them."""
    interp, _ = runtime.load_interpreter(path, 1)
    out = {}
    for key, info in (("input", runtime.input_info(interp)), ("output", runtime.output_info(interp))):
        out[key] = {"dtype": info.dtype.name, "scale": info.scale, "zero_point": info.zero_point}
    return out


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def default_name(model_path: Path) -> str:
    """The run's name when the model sits in a run folder (runs/NAME/model.keras), else the file stem."""
    model_path = Path(model_path)
    if (model_path.parent / "config.json").is_file() and model_path.parent.name:
        return model_path.parent.name
    return model_path.stem


def convert_model(opts: ConvertOptions) -> ConvertResult:
    """Convert, write models + cards, check parity. Never raises for a failed parity check:
    the result lists the failures so callers decide (files are written either way)."""
    if opts.int8_io not in ("int8", "uint8"):
        raise ValueError(f"--int8-io must be int8 or uint8, got {opts.int8_io!r}")
    if opts.calibration_size < 1:
        raise ValueError(f"--calibration-size must be at least 1, got {opts.calibration_size}")
    check_max_error(opts.max_int8_error)
    model_path = Path(opts.model)
    model = load_keras_model(model_path)
    size, n_out = image_input_size(model, model_path)
    src = source_card(model_path, size, n_out)
    data = resolve_data_dir(model_path, opts.data)
    labels = list(src.labels)

    val_rows = split_rows(data, "val", labels)
    if not val_rows:
        raise ValueError(f"{data}: its 'val' split has no {labels} images; the parity check needs them")
    train_rows = split_rows(data, "train", labels)
    if not train_rows:
        raise ValueError(
            f"{data}: empty calibration set: its 'train' split has no {labels} images "
            f"(split the dataset first: `maskwatch data split {data}`)"
        )
    calib_rows = calibration_sample(train_rows, opts.calibration_size, opts.seed, key=lambda r: r.label)
    calib, _ = load_rows(data, calib_rows, size, labels, "calibration images")
    x_val, y_val = load_rows(data, val_rows, size, labels, "val")
    log.info("calibration set: %d of %d training images (seed %d); parity set: %d val images",
             len(calib), len(train_rows), opts.seed, len(x_val))

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    name = opts.name or default_name(model_path)
    source_sha = sha256_file(model_path)
    kinds = ["float32", opts.int8_io] + (["float16"] if opts.float16 else [])

    result = ConvertResult(source=model_path, data=data)
    log.info("Keras predictions on %d val images", len(x_val))
    ref = keras_probabilities(model, x_val)
    alert_index = [labels.index(lb) for lb in src.alerts]  # their summed probability is what alerts
    for kind in kinds:
        path = out / f"{name}_{kind}.tflite"
        log.info("converting to %s -> %s", kind, path)
        float_layers: list[LayerError] = []
        try:
            if kind in ("int8", "uint8"):
                check = calibration_sample(list(range(len(x_val))), opts.error_check_size, opts.seed,
                                           key=lambda i: int(y_val[i]))
                tflite, float_layers = to_int8_tflite(model, kind, calib, x_val[check], opts.max_int8_error)
                for e in float_layers:
                    log.info("%s: layer %s stays float32 (int8 error %.2f quantization steps > %g)",
                             kind, e.layer, e.steps, opts.max_int8_error)
            else:
                tflite = to_tflite(model, kind)
        except ValueError:
            raise
        except Exception as exc:  # the converter raises its own types with pages of MLIR text
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise RuntimeError(f"{model_path}: {kind} conversion failed ({type(exc).__name__}: {first})") from exc
        if kind in ("int8", "uint8"):
            raw = len(tflite)
            tflite = compact_quantized(tflite)
            log.info("%s: shared identical quantization vectors: %d -> %d bytes (lossless)", kind, raw, len(tflite))
        _write_bytes(path, tflite)
        card = ModelCard.from_dict(json.loads(src.to_json()), where=str(card_path(model_path)))
        card.quantization = kind
        card.quantization_params = tensor_params(path)
        card.source_model_sha256 = source_sha
        card.calibration_size = len(calib) if kind in ("int8", "uint8") else None
        card.float_layers = [e.as_dict() for e in float_layers]
        card.metrics = {}
        card.extra = {**card.extra, "source_model": str(model_path), "source_metrics": src.metrics,
                      "dataset": str(data)}
        card.save(card_path(path))  # before the parity run: the device classifier reads it
        probs = tflite_probabilities(path, x_val, opts.num_threads or os.cpu_count())
        if probs.shape[1] == 2 and ref.shape[1] == 1:
            ref = np.concatenate([1.0 - ref, ref], axis=1)
        parity = parity_metrics(ref, probs, y_val, alert_index, float(src.threshold), split="val")
        card.metrics = parity.as_dict()
        card.save(card_path(path))
        result.models.append(Converted(path, card, parity))
        log.info("%s: %d bytes, agreement %.2f%%, max |dp| %.4f", path.name, path.stat().st_size,
                 100 * parity.agreement, parity.max_abs_diff)
        if parity.agreement < opts.min_agreement:
            result.failures.append(
                f"{path.name} agrees with the Keras model on {parity.agreement:.2%} of {parity.n_images} "
                f"val images, below --min-agreement {opts.min_agreement:.2%}"
            )
    return result


def summary_table(result: ConvertResult) -> str:
    lines = [
        "| file | quant | size KB | agreement % | max abs Δp | acc Keras % | acc TFLite % | Δ pts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in result.models:
        p = m.parity
        lines.append(
            f"| {m.path.name} | {m.card.quantization} | {m.path.stat().st_size / 1024:.1f} | "
            f"{100 * p.agreement:.2f} | {p.max_abs_diff:.4f} | {100 * p.accuracy_keras:.2f} | "
            f"{100 * p.accuracy_tflite:.2f} | {p.accuracy_delta_points:+.2f} |"
        )
    for m in result.models:
        if m.card.float_layers:
            kept = ", ".join(f"{f['layer']} ({f['rmse_steps']:.2f} steps)" for f in m.card.float_layers)
            lines.append(f"{m.path.name}: kept float32, int8 got them wrong by over --max-int8-error: {kept}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, metavar="MODEL.keras", help="trained Keras model (its card beside it)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the .tflite files and their cards")
    parser.add_argument("--data", type=Path,
                        help="dataset folder (default: \"data\" in the run's config.json beside the model)")
    parser.add_argument("--calibration-size", type=int, default=200,
                        help="training images used to calibrate int8 ranges (seeded sample; default 200)")
    parser.add_argument("--int8-io", choices=("int8", "uint8"), default="int8",
                        help="input/output type of the full-integer model (default int8)")
    parser.add_argument("--float16", action="store_true", help="also write a float16-weights model")
    parser.add_argument("--min-agreement", type=float, default=0.99,
                        help="fail when a model agrees with Keras on fewer val images than this (default 0.99)")
    parser.add_argument("--name", help="file name stem (default: the run folder's name)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default 0)")
    parser.add_argument("--threads", type=int, help="interpreter threads for the parity check (default: all)")
    parser.add_argument("--max-int8-error", type=float, default=MAX_ERROR_STEPS, metavar="STEPS",
                        help="int8 layers whose output is off by more than STEPS quantization steps (RMSE on "
                             f"{ConvertOptions.error_check_size} val images) stay float32 (default {MAX_ERROR_STEPS:g}; "
                             "inf: every layer int8)")


def main(args: argparse.Namespace) -> int:
    result = convert_model(ConvertOptions(
        model=args.model, out=args.out, data=args.data, calibration_size=args.calibration_size,
        int8_io=args.int8_io, float16=args.float16, min_agreement=args.min_agreement, name=args.name,
        seed=args.seed, num_threads=args.threads, max_int8_error=args.max_int8_error,
    ))
    print(summary_table(result))
    print(f"\nparity on the val split of {result.data}; files in {args.out}")
    if result.failures:
        raise RuntimeError(
            "parity check failed: " + "; ".join(result.failures) + f". Files kept in {args.out} for inspection"
        )
    return 0


def as_json(result: ConvertResult) -> dict[str, Any]:
    """A JSON-able summary (for benchmarks and logs)."""
    return {
        "source": str(result.source),
        "data": str(result.data),
        "failures": result.failures,
        "models": [
            {"path": str(m.path), "quantization": m.card.quantization, "size_bytes": m.path.stat().st_size,
             "parity": asdict(m.parity)}
            for m in result.models
        ],
    }
