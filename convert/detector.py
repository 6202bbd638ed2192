"""``maskwatch convert-detector YUNET.onnx --size WxH --out DIR``: YuNet ONNX -> float32 TFLite.

The Pi runs YuNet on LiteRT (:mod:`device.detectors.yunet_litert`), about twice as fast as
OpenCV's DNN, and at a fixed input size chosen here: YuNet's cost grows with the input's pixels,
and a 640x480 camera frame fits a 640x480 input with no padding at all. Steps:

1. the ONNX graph is given the requested input size (YuNet's reshapes use -1 and its upsampling
   uses scales, so only the input shape changes) and the first convolution's input channels
   are reversed, so the model takes the camera's RGB instead of OpenCV's BGR with no per-frame
   conversion (exact: the same sums in another order);
2. ``onnx2tf`` converts it (NCHW -> NHWC), run in a temporary working folder that holds a
   generated calibration sample, so it never reaches for the internet;
3. the TFLite outputs are compared with onnxruntime's on a photo with a face (scikit-image's
   astronaut) and matched to YuNet's output names by shape and value; the match and the largest
   difference go into the card written beside the model (:class:`YuNetCard`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.contract import card_path, sha256_file
from device.detectors.model_files import DEFAULT_DIR, YUNET_ONNX
from device.detectors.yunet_litert import (
    DEFAULT_INPUT_SIZE,
    OUTPUT_NAMES,
    YuNetCard,
    check_input_size,
    converted_model_name,
    fit_params,
)

log = logging.getLogger(__name__)

#: Largest |TFLite - ONNX| accepted on any output (scores are 0..1, regressions a few units).
PARITY_ATOL = 1e-3
#: onnx2tf reads this sample from its working folder and downloads it when absent.
CALIBRATION_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: tf-keras (which onnx2tf needs) declares a dependency on the ``tensorflow`` package, not on the
#: ``tensorflow-cpu`` we install, so it is installed without its dependencies (the Makefile does).
TF_KERAS_REQUIREMENT = "tf-keras==2.21.0"


@dataclass
class ConvertedDetector:
    path: Path
    card: YuNetCard


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480), checked to be a size YuNet can take."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 640x480, got {text!r}") from None
    check_input_size(w, h)
    return w, h


# --------------------------------------------------------------------------------------------
# Step 1: the ONNX graph at the wanted size, taking RGB
# --------------------------------------------------------------------------------------------


def load_yunet_onnx(path: Path) -> Any:
    """The ONNX model in ``path``, checked to be YuNet (one NCHW image input, its 12 outputs)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path} (run `maskwatch-device fetch-models`)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends with protobuf's text
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    outputs = sorted(o.name for o in model.graph.output)
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4 or outputs != sorted(OUTPUT_NAMES):
        raise ValueError(f"{path}: not a YuNet model (expected one NCHW image input and outputs "
                         f"{', '.join(OUTPUT_NAMES)}; got inputs {[i.name for i in inputs]}, outputs {outputs})")
    return model


def prepare_onnx(model: Any, width: int, height: int) -> Any:
    """A copy of the YuNet graph with a 1x3xHxW input that takes RGB (see the module doc)."""
    import onnx
    from onnx import numpy_helper

    check_input_size(width, height)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    image = graph.input[0]
    dims = image.type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, height, width), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    # Every other shape in the file is the 640x640 export's; shape inference redoes them.
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    del graph.value_info[:]
    consumers = [n for n in graph.node if image.name in n.input]
    weights = {t.name: t for t in graph.initializer}
    if not consumers or any(n.op_type != "Conv" or n.input[0] != image.name or n.input[1] not in weights
                            for n in consumers):
        raise ValueError("the YuNet input feeds something other than convolutions; cannot fold RGB into it")
    for name in {n.input[1] for n in consumers}:
        w = numpy_helper.to_array(weights[name])
        weights[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[:, ::-1]), name))
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


# --------------------------------------------------------------------------------------------
# Step 2: onnx2tf
# --------------------------------------------------------------------------------------------


def _import_onnx2tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import onnx2tf
    except ImportError as exc:
        missing = exc.name or str(exc)
        hint = (f"pip install --no-deps '{TF_KERAS_REQUIREMENT}'" if missing == "tf_keras"
                else "pip install -e '.[workstation]' (make setup)")
        raise RuntimeError(f"convert-detector needs onnx2tf and its dependencies; {missing} is missing: {hint}") from None
    return onnx2tf


@contextlib.contextmanager
def _working_dir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_onnx2tf(onnx_path: Path, workdir: Path) -> Path:
    """The float32 .tflite onnx2tf makes of ``onnx_path``, written under ``workdir``."""
    onnx2tf = _import_onnx2tf()
    # onnx2tf checks its conversion on this sample and downloads it when it is not in the
    # working folder; a generated one keeps the conversion offline (its values do not matter).
    np.save(workdir / CALIBRATION_SAMPLE, np.zeros((20, 128, 128, 3), dtype=np.float32))
    out = workdir / "onnx2tf"
    chatter = io.StringIO()
    with _working_dir(workdir), contextlib.redirect_stdout(chatter):
        try:
            onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out),
                            not_use_onnxsim=True, non_verbose=True)
        except SystemExit:  # onnx2tf exits on conversion errors after printing them
            raise RuntimeError(f"onnx2tf failed on {onnx_path}:\n{chatter.getvalue()[-2000:]}") from None
    path = out / f"{onnx_path.stem}_float32.tflite"
    if not path.is_file():
        raise RuntimeError(f"onnx2tf wrote no {path.name} in {out}:\n{chatter.getvalue()[-2000:]}")
    return path


# --------------------------------------------------------------------------------------------
# Step 3: parity with onnxruntime, and the output names
# --------------------------------------------------------------------------------------------


def parity_image(width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 RGB 0..255: a photo with a face, fitted top-left, black padding."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    fit = fit_params(photo.shape[1], photo.shape[0], width, height)
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    canvas[:fit.new_height, :fit.new_width] = cv2.resize(photo, (fit.new_width, fit.new_height),
                                                         interpolation=cv2.INTER_AREA)
    return canvas


def match_outputs(reference: dict[str, np.ndarray], candidates: dict[str, np.ndarray],
                  atol: float = PARITY_ATOL) -> tuple[dict[str, str], dict[str, float]]:
    """Map each reference output to the candidate of the same shape closest to it in value.

    Returns (reference name -> candidate name, reference name -> max abs difference); a
    ValueError when some output has no candidate within ``atol`` or two share one.
    """
    mapping: dict[str, str] = {}
    diffs: dict[str, float] = {}
    for name, ref in reference.items():
        same_shape = {c: v for c, v in candidates.items() if v.shape == ref.shape}
        if not same_shape:
            raise ValueError(f"no converted output has the shape {ref.shape} of {name}")
        best = min(same_shape, key=lambda c: float(np.max(np.abs(same_shape[c] - ref))))
        diff = float(np.max(np.abs(same_shape[best] - ref)))
        if diff > atol:
            raise ValueError(f"{name}: the closest converted output ({best}) differs by {diff:.3g} > {atol}")
        mapping[name], diffs[name] = best, diff
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"two YuNet outputs matched the same converted output: {mapping}")
    return mapping, diffs


def compare_with_onnx(onnx_model: Any, tflite_path: Path, width: int, height: int) -> tuple[dict[str, str], dict[str, float]]:
    """Run both models on :func:`parity_image` and :func:`match_outputs` them."""
    import onnxruntime

    from device.runtime import load_interpreter

    image = parity_image(width, height)
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.transpose(2, 0, 1)[None]}
    reference = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed), strict=True))
    interp, _ = load_interpreter(tflite_path, num_threads=1)
    interp.set_tensor(interp.get_input_details()[0]["index"], image[None])
    interp.invoke()
    converted = {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    return match_outputs(reference, converted)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("onnx2tf", "tensorflow-cpu", "tf-keras", "onnx", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def convert_detector(onnx_path: Path, width: int, height: int, out_dir: Path) -> ConvertedDetector:
    """Convert YuNet at width x height into ``out_dir`` (model + card); see the module doc."""
    onnx_path = Path(onnx_path)
    model = load_yunet_onnx(onnx_path)
    digest = sha256_file(onnx_path)
    pinned = digest == YUNET_ONNX.sha256
    if not pinned:
        log.warning("%s is not the pinned %s (sha256 %s); converting it anyway", onnx_path, YUNET_ONNX.name, digest)
    prepared = prepare_onnx(model, width, height)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / converted_model_name(width, height, "float32", stem=onnx_path.stem)
    with tempfile.TemporaryDirectory(prefix="convert-detector-") as tmp:
        work = Path(tmp)
        prepared_path = work / f"{onnx_path.stem}.onnx"
        prepared_path.write_bytes(prepared.SerializeToString())
        log.info("converting %s at %dx%d with onnx2tf", onnx_path, width, height)
        tflite = run_onnx2tf(prepared_path, work)
        outputs, diffs = compare_with_onnx(prepared, tflite, width, height)
        card = YuNetCard(
            input_width=width, input_height=height, outputs=outputs, colour_order="RGB",
            quantization="float32",
            source={"file": onnx_path.name, "sha256": digest, "url": YUNET_ONNX.url if pinned else None,
                    "licence": YUNET_ONNX.licence if pinned else "unknown (not the pinned YuNet file)"},
            converter={"tool": "maskwatch convert-detector", **_versions()},
            parity={"reference": "onnxruntime on the same graph", "image": "skimage.data.astronaut",
                    "max_abs_diff": max(diffs.values()), "atol": PARITY_ATOL},
        )
        card.validate(str(card_path(target)))
        part = target.with_name(target.name + ".part")
        shutil.copyfile(tflite, part)
        os.replace(part, target)
        card.save(card_path(target))
    log.info("wrote %s (%d bytes) and its card; largest difference from ONNX %.2g",
             target, target.stat().st_size, max(diffs.values()))
    return ConvertedDetector(target, card)


def _size_arg(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:  # argparse shows an ArgumentTypeError's own text
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    w, h = DEFAULT_INPUT_SIZE
    parser.add_argument("onnx", type=Path, metavar="YUNET.onnx",
                        help=f"YuNet ONNX model, e.g. {DEFAULT_DIR.name}/{YUNET_ONNX.name} from `fetch-models`")
    parser.add_argument("--size", type=_size_arg, default=DEFAULT_INPUT_SIZE, metavar="WxH",
                        help=f"fixed model input, multiples of 32 (default {w}x{h}, the daemon's default; "
                             f"a frame of another size is scaled to fit and padded)")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR,
                        help="folder for the .tflite and its .json card (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    result = convert_detector(args.onnx, *args.size, args.out)
    print(f"ok  {result.path}  ({result.card.input_width}x{result.card.input_height} float32, "
          f"max |TFLite - ONNX| {result.card.parity['max_abs_diff']:.2g})")
    return 0
