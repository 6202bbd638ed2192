"""``maskwatch convert-detector YUNET.onnx --size WxH --out DIR [--int8]``: YuNet ONNX -> TFLite.

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
   astronaut) and matched to YuNet's output names by shape and value, and both must find the
   same faces there; the match and the largest difference go into the card written beside the
   model (:class:`YuNetCard`).

``--int8`` makes a full-integer model (int8 in and out) instead: about 1.6x faster than float32
on LiteRT + XNNPACK, and on faces-voc it finds the same share of faces. All of YuNet's ops run
in XNNPACK except its two nearest-neighbour upsamplings (float32 and int8 alike), which split
the graph into three delegate partitions; replacing them by an exact Concat + DepthToSpace
made one partition but no measurable difference in speed, so the graph keeps them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.contract import card_path, sha256_file
from device.detectors.model_files import DEFAULT_DIR, YUNET_ONNX
from device.detectors.yunet import DEFAULT_SCORE_THRESHOLD
from device.detectors.yunet_litert import (
    DEFAULT_INPUT_SIZE,
    OUTPUT_NAMES,
    YuNetCard,
    check_input_size,
    converted_model_name,
    decode,
    fit_params,
    nms,
)

log = logging.getLogger(__name__)

#: Largest |TFLite - ONNX| accepted on any output (scores are 0..1, regressions a few units).
PARITY_ATOL = 1e-3
#: The same for int8, whose outputs are coarser (a step of a landmark output is ~0.04 cells);
#: a sanity bound: the faces found on the parity image are what must agree.
INT8_PARITY_ATOL = 2.0
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


def run_onnx2tf(onnx_path: Path, workdir: Path, calibration: np.ndarray | None = None) -> Path:
    """The .tflite onnx2tf makes of ``onnx_path`` under ``workdir``: float32, or with
    ``calibration`` frames (N, H, W, 3) float32 0..255, full-integer int8 (int8 in and out)."""
    onnx2tf = _import_onnx2tf()
    # onnx2tf checks its conversion on this sample and downloads it when it is not in the
    # working folder; a generated one keeps the conversion offline (its values do not matter).
    np.save(workdir / CALIBRATION_SAMPLE, np.zeros((20, 128, 128, 3), dtype=np.float32))
    options: dict[str, Any] = {}
    suffix = "float32"
    if calibration is not None:
        np.save(workdir / "calibration.npy", calibration.astype(np.float32))
        # Mean 0 and std 1: the model takes raw pixels, no normalisation.
        options = {"output_integer_quantized_tflite": True,
                   "custom_input_op_name_np_data_path": [["input", str(workdir / "calibration.npy"),
                                                          [[[[0.0, 0.0, 0.0]]]], [[[[1.0, 1.0, 1.0]]]]]]}
        suffix = "full_integer_quant"
    out = workdir / "onnx2tf"
    chatter = io.StringIO()
    with _working_dir(workdir), contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        # onnx2tf calibrates with tf.lite.Interpreter, which warns that it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        try:
            onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(out),
                            not_use_onnxsim=True, non_verbose=True, **options)
        except SystemExit:  # onnx2tf exits on conversion errors after printing them
            raise RuntimeError(f"onnx2tf failed on {onnx_path}:\n{chatter.getvalue()[-2000:]}") from None
    path = out / f"{onnx_path.stem}_{suffix}.tflite"
    if not path.is_file():
        raise RuntimeError(f"onnx2tf wrote no {path.name} in {out}:\n{chatter.getvalue()[-2000:]}")
    return path


# --------------------------------------------------------------------------------------------
# Step 3: parity with onnxruntime, and the output names
# --------------------------------------------------------------------------------------------


def fitted(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 RGB 0..255: ``rgb`` as the detector places it (scaled, top-left, black)."""
    import cv2

    fit = fit_params(rgb.shape[1], rgb.shape[0], width, height)
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    canvas[:fit.new_height, :fit.new_width] = cv2.resize(rgb, (fit.new_width, fit.new_height),
                                                         interpolation=cv2.INTER_AREA)
    return canvas


def parity_image(width: int, height: int) -> np.ndarray:
    """A photo with a face (scikit-image's astronaut), fitted into width x height."""
    from skimage import data

    return fitted(data.astronaut(), width, height)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: ``--int8`` without a folder: public-domain sample photos shipped inside scikit-image and
#: matplotlib (a face, people, a cat, objects, text, space, microscopy). Activation ranges are
#: generic enough that these calibrate YuNet as well as 100 real door scenes did (faces-voc:
#: 0.876 of 2800 faces found, the same as float32).
BUILTIN_CALIBRATION = "builtin"
BUILTIN_PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "colorwheel", "hubble_deep_field",
                  "immunohistochemistry", "logo", "page", "retina", "rocket")


def builtin_calibration_images() -> list[np.ndarray]:
    """The built-in calibration photos as RGB uint8 (see :data:`BUILTIN_PHOTOS`)."""
    import cv2
    import matplotlib
    from skimage import data

    images = []
    for name in BUILTIN_PHOTOS:
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append(np.ascontiguousarray(img[..., :3].astype(np.uint8)))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    images.append(cv2.cvtColor(cv2.imread(str(hopper)), cv2.COLOR_BGR2RGB))
    return images


def calibration_frames(folder: Path | str, width: int, height: int, count: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``count`` images under ``folder`` (recursive; ``"builtin"``: the
    built-in photos), each fitted into the input as the detector would place a frame;
    unreadable files are skipped."""
    import cv2

    if str(folder) == BUILTIN_CALIBRATION:
        return np.stack([fitted(img, width, height) for img in builtin_calibration_images()])
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    rng = np.random.default_rng(seed)
    frames = []
    for i in rng.permutation(len(files)):
        bgr = cv2.imdecode(np.fromfile(str(files[i]), dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is not None:
            frames.append(fitted(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height))
        if len(frames) == count:
            break
    if not frames:
        raise ValueError(f"{folder}: no readable images ({', '.join(IMAGE_SUFFIXES)}) to calibrate on")
    log.info("calibrating int8 ranges on %d images from %s", len(frames), folder)
    return np.stack(frames)


def match_outputs(reference: dict[str, np.ndarray], candidates: dict[str, np.ndarray],
                  atol: float = PARITY_ATOL) -> tuple[dict[str, str], dict[str, float]]:
    """Map each reference output to the candidate of the same shape closest to it on average.

    Returns (reference name -> candidate name, reference name -> max abs difference); a
    ValueError when some output has no candidate within ``atol`` everywhere or two share one.
    """
    mapping: dict[str, str] = {}
    diffs: dict[str, float] = {}
    for name, ref in reference.items():
        same_shape = {c: v for c, v in candidates.items() if v.shape == ref.shape}
        if not same_shape:
            raise ValueError(f"no converted output has the shape {ref.shape} of {name}")
        best = min(same_shape, key=lambda c: float(np.mean(np.abs(same_shape[c] - ref))))
        diff = float(np.max(np.abs(same_shape[best] - ref)))
        if diff > atol:
            raise ValueError(f"{name}: the closest converted output ({best}) differs by {diff:.3g} > {atol}")
        mapping[name], diffs[name] = best, diff
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"two YuNet outputs matched the same converted output: {mapping}")
    return mapping, diffs


def faces_of(outputs: dict[str, np.ndarray], width: int, height: int) -> np.ndarray:
    """The faces (OpenCV rows) the device would report from these raw outputs."""
    rows = decode(outputs, width, height, DEFAULT_SCORE_THRESHOLD)
    return nms(rows, DEFAULT_SCORE_THRESHOLD, 0.3)


def same_faces(reference: np.ndarray, converted: np.ndarray, min_iou: float = 0.8) -> bool:
    """Each reference face has a converted one at IoU >= min_iou, and the counts agree."""
    from device.detectors.blazeface import iou

    def corners(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([rows[:, 0:2], rows[:, 0:2] + rows[:, 2:4]], axis=1)

    if len(reference) != len(converted):
        return False
    return all(iou(box, corners(converted)).max() >= min_iou for box in corners(reference))


def compare_with_onnx(onnx_model: Any, tflite_path: Path, width: int, height: int,
                      atol: float = PARITY_ATOL) -> tuple[dict[str, str], dict[str, float]]:
    """Run both models on :func:`parity_image`, :func:`match_outputs` them, and check that
    they find the same faces there."""
    import onnxruntime

    from device.contract import dequantize, quantize
    from device.runtime import input_info, load_interpreter, output_info

    image = parity_image(width, height)
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: image.transpose(2, 0, 1)[None]}
    reference = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed), strict=True))
    interp, _ = load_interpreter(tflite_path, num_threads=1)
    inp = input_info(interp)
    interp.set_tensor(inp.index, quantize(image[None], inp.scale, inp.zero_point, inp.dtype)
                      if inp.quantized else image[None])
    interp.invoke()
    converted = {}
    for i, d in enumerate(interp.get_output_details()):
        out = output_info(interp, i)
        value = interp.get_tensor(out.index)
        converted[d["name"]] = dequantize(value, out.scale, out.zero_point) if out.quantized else value
    mapping, diffs = match_outputs(reference, converted, atol)
    ours = faces_of({name: converted[t] for name, t in mapping.items()}, width, height)
    theirs = faces_of(reference, width, height)
    if not len(theirs) or not same_faces(theirs, ours):
        raise ValueError(f"{tflite_path.name}: finds {len(ours)} face(s) on the parity image where the ONNX "
                         f"model finds {len(theirs)} (or they do not overlap)")
    return mapping, diffs


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


def convert_detector(onnx_path: Path, width: int, height: int, out_dir: Path,
                     calibration: Path | str | None = None, calibration_size: int = 100,
                     seed: int = 0) -> ConvertedDetector:
    """Convert YuNet at width x height into ``out_dir`` (model + card); see the module doc.

    With ``calibration`` (a folder of scene photos, or ``"builtin"``) the model is full-integer
    int8, its ranges calibrated on a seeded sample of ``calibration_size`` of them.
    """
    onnx_path = Path(onnx_path)
    model = load_yunet_onnx(onnx_path)
    digest = sha256_file(onnx_path)
    pinned = digest == YUNET_ONNX.sha256
    if not pinned:
        log.warning("%s is not the pinned %s (sha256 %s); converting it anyway", onnx_path, YUNET_ONNX.name, digest)
    prepared = prepare_onnx(model, width, height)
    frames = None if calibration is None else calibration_frames(calibration, width, height, calibration_size, seed)
    quantization = "float32" if frames is None else "int8"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / converted_model_name(width, height, quantization, stem=onnx_path.stem)
    with tempfile.TemporaryDirectory(prefix="convert-detector-") as tmp:
        work = Path(tmp)
        prepared_path = work / f"{onnx_path.stem}.onnx"
        prepared_path.write_bytes(prepared.SerializeToString())
        log.info("converting %s at %dx%d (%s) with onnx2tf", onnx_path, width, height, quantization)
        tflite = run_onnx2tf(prepared_path, work, frames)
        atol = PARITY_ATOL if frames is None else INT8_PARITY_ATOL
        outputs, diffs = compare_with_onnx(prepared, tflite, width, height, atol)
        card = YuNetCard(
            input_width=width, input_height=height, outputs=outputs, colour_order="RGB",
            quantization=quantization,
            source={"file": onnx_path.name, "sha256": digest, "url": YUNET_ONNX.url if pinned else None,
                    "licence": YUNET_ONNX.licence if pinned else "unknown (not the pinned YuNet file)"},
            converter={"tool": "maskwatch convert-detector", **_versions()},
            parity={"reference": "onnxruntime on the same graph", "image": "skimage.data.astronaut",
                    "max_abs_diff": max(diffs.values()), "atol": atol, "same_faces": True},
            calibration={} if frames is None else {
                "photos": (f"built-in: {', '.join(BUILTIN_PHOTOS)} (scikit-image), grace_hopper (matplotlib)"
                           if str(calibration) == BUILTIN_CALIBRATION else Path(calibration).name),
                "images": len(frames), "seed": seed},
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
    parser.add_argument("--int8", nargs="?", const=BUILTIN_CALIBRATION, metavar="PHOTOS_DIR",
                        help="make a full-integer int8 model instead (faster on the Pi), its ranges calibrated "
                             "on the photos in PHOTOS_DIR (searched recursively; e.g. your camera's) or, with "
                             "no folder, on sample photos shipped with scikit-image and matplotlib")
    parser.add_argument("--calibration-size", type=int, default=100,
                        help="photos sampled for int8 calibration (seeded; default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default 0)")


def main(args: argparse.Namespace) -> int:
    result = convert_detector(args.onnx, *args.size, args.out, calibration=args.int8,
                              calibration_size=args.calibration_size, seed=args.seed)
    card = result.card
    print(f"ok  {result.path}  ({card.input_width}x{card.input_height} {card.quantization}, "
          f"max |TFLite - ONNX| {card.parity['max_abs_diff']:.2g})")
    return 0
