"""``maskwatch convert-detector``: input checks, output matching, and the graph edits on YuNet.

The conversion itself (onnx2tf, parity with onnxruntime, the card) runs in the ``yunet_tflite``
fixture, which the LiteRT detector tests then compare with OpenCV on real photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from convert.detector import load_yunet_onnx, match_outputs, parse_size, prepare_onnx
from device.detectors.model_files import YUNET_ONNX
from device.detectors.yunet_litert import OUTPUT_NAMES
from train.cli import main


def test_size_parsing_and_errors():
    assert parse_size("640x480") == (640, 480)
    assert parse_size("512X384") == (512, 384)
    with pytest.raises(ValueError, match="like 640x480"):
        parse_size("640")
    with pytest.raises(ValueError, match="use 320x256"):
        parse_size("320x240")


def test_command_rejects_a_bad_size_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["convert-detector", str(tmp_path / "y.onnx"), "--size", "480x360"])
    assert info.value.code == 2
    assert "use 480x384" in capsys.readouterr().err


def test_not_yunet_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch-models"):
        load_yunet_onnx(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match="garbage.onnx"):
        load_yunet_onnx(garbage)
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["out"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(ValueError, match=r"other.onnx: not a YuNet model.*outputs \['out'\]"):
        load_yunet_onnx(other)


def test_outputs_are_matched_by_shape_and_value():
    rng = np.random.default_rng(0)
    ref = {"cls_8": rng.random((1, 6, 1)), "obj_8": rng.random((1, 6, 1)), "bbox_8": rng.random((1, 6, 4))}
    got = {"Identity": ref["obj_8"] + 1e-6, "Identity_1": ref["cls_8"], "Identity_2": ref["bbox_8"]}
    mapping, diffs = match_outputs(ref, got)
    assert mapping == {"cls_8": "Identity_1", "obj_8": "Identity", "bbox_8": "Identity_2"}
    assert diffs["obj_8"] == pytest.approx(1e-6) and diffs["cls_8"] == 0
    with pytest.raises(ValueError, match=r"bbox_8: the closest converted output \(Identity_2\) differs by 0.5"):
        match_outputs(ref, {**got, "Identity_2": ref["bbox_8"] + 0.5})
    with pytest.raises(ValueError, match="no converted output has the shape"):
        match_outputs(ref, {k: v for k, v in got.items() if k != "Identity_2"})
    with pytest.raises(ValueError, match="matched the same converted output"):
        match_outputs({"cls_8": ref["cls_8"], "obj_8": ref["cls_8"]}, {"a": ref["cls_8"], "b": ref["obj_8"]})


def test_prepare_sets_the_size_and_folds_rgb_into_the_first_convolution(yunet_onnx):
    from onnx import numpy_helper

    model = load_yunet_onnx(yunet_onnx)
    prepared = prepare_onnx(model, 512, 384)
    dims = [d.dim_value for d in prepared.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 384, 512]
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in prepared.graph.output}
    assert shapes["cls_8"] == [1, 64 * 48, 1] and shapes["kps_32"] == [1, 16 * 12, 10]
    first = next(n for n in model.graph.node if "input" in n.input)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}[first.input[1]]
    after = {t.name: numpy_helper.to_array(t) for t in prepared.graph.initializer}[first.input[1]]
    np.testing.assert_array_equal(after, before[:, ::-1])
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 640, 640]  # untouched


def test_converted_card_records_source_licence_and_parity(yunet_tflite):
    card = json.loads(yunet_tflite.with_suffix(".json").read_text())
    assert card["source"] == {"file": YUNET_ONNX.name, "sha256": YUNET_ONNX.sha256, "url": YUNET_ONNX.url,
                              "licence": "MIT"}
    assert (card["input_width"], card["input_height"], card["colour_order"]) == (640, 480, "RGB")
    assert set(card["outputs"]) == set(OUTPUT_NAMES)
    assert card["parity"]["max_abs_diff"] < 1e-3
    assert card["converter"]["onnx2tf"]


def test_makefile_makes_the_devices_default_model(tmp_path):
    """`make setup` must make the very file make_detector("yunet") loads by default."""
    import re

    from device.detectors.yunet_litert import DEFAULT_INPUT_SIZE, DEFAULT_QUANTIZATION, default_model_path
    from tests.conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    size = re.search(r"^YUNET_SIZE\s*:=\s*(\S+)", makefile, re.M).group(1)
    target = re.search(r"^YUNET_TFLITE\s*:=\s*(\S+)", makefile, re.M).group(1).replace("$(YUNET_SIZE)", size)
    assert parse_size(size) == DEFAULT_INPUT_SIZE
    (tmp_path / Path(target).name).write_bytes(b"")
    assert default_model_path(tmp_path).name == Path(target).name
    rule = re.search(r"^\$\(YUNET_TFLITE\):.*\n\t(.*)$", makefile, re.M).group(1)
    assert ("--int8" in rule) == (DEFAULT_QUANTIZATION == "int8")


def test_calibration_frames_from_a_folder_and_built_in(tmp_path):
    import cv2

    from convert.detector import BUILTIN_CALIBRATION, calibration_frames

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    cv2.imwrite(str(photos / "a.jpg"), np.full((300, 400, 3), 200, np.uint8))
    cv2.imwrite(str(photos / "sub" / "b.png"), np.full((100, 50, 3), 100, np.uint8))
    (photos / "broken.jpg").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("skipped")
    frames = calibration_frames(photos, 64, 32, count=10)
    assert frames.shape == (2, 32, 64, 3) and frames.dtype == np.float32
    wide = next(f for f in frames if f[0, 0, 0] == 200)  # 400x300 fits as 43x32, black to the right
    assert wide[:, :42].min() == 200 and wide[:, 44:].max() == 0
    assert len(calibration_frames(photos, 64, 32, count=1)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no readable images"):
        calibration_frames(tmp_path / "empty", 64, 32, count=5)
    with pytest.raises(FileNotFoundError, match="calibration folder not found"):
        calibration_frames(tmp_path / "absent", 64, 32, count=5)
    builtin = calibration_frames(BUILTIN_CALIBRATION, 64, 32, count=100)
    assert builtin.shape == (13, 32, 64, 3) and builtin.max() > 200
