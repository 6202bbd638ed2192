"""int8 models keep the layers int8 gets badly wrong in float32, and say which."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convert.float_layers import MAX_ERROR_STEPS, LayerError, layer_errors, too_noisy

CSV = """op_name,tensor_idx,num_elements,stddev,mean_error,max_abs_error,mean_squared_error,scale,zero_point,tensor_name
DEPTHWISE_CONV_2D,7,100,0.1,0.0,0.2,0.0009,0.0235,-128,net/backbone_1/expanded_conv_depthwise_relu_1/Relu6;net/x
CONV_2D,9,100,0.1,0.0,0.2,0.0004,0.04,-128,net/backbone_1/block_6_project_BN_1/batchnorm/add_1;net/y
FULLY_CONNECTED,11,3,0.1,0.0,0.2,0.0001,0.1,0,net/predictions_1/MatMul
QUANTIZE,0,3,0.0,0.0,0.0,0.0,0.0,0,serving_input
SOFTMAX,12,3,0.1,0.0,0.2,nan,0.0039,-128,StatefulPartitionedCall_1:0
"""


def test_layer_errors_are_rmse_in_quantization_steps_worst_first():
    errors = layer_errors(CSV)
    # sqrt(0.0009) / 0.0235 = 1.277, sqrt(0.0004) / 0.04 = 0.5, sqrt(0.0001) / 0.1 = 0.1;
    # a tensor without a scale or with no measured error is left out
    assert [round(e.steps, 3) for e in errors] == [1.277, 0.5, 0.1]
    assert [e.layer for e in errors] == ["expanded_conv_depthwise", "block_6_project", "predictions"]
    assert errors[0].op == "DEPTHWISE_CONV_2D"
    assert errors[0].as_dict() == {"layer": "expanded_conv_depthwise", "op": "DEPTHWISE_CONV_2D",
                                   "rmse_steps": 1.277, "tensor": errors[0].tensor}
    assert too_noisy(errors, MAX_ERROR_STEPS) == errors[:1]
    assert too_noisy(errors, 0.3) == errors[:2]
    assert too_noisy(errors, math.inf) == []
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--max-int8-error"):
            too_noisy(errors, bad)
    assert LayerError("StatefulPartitionedCall_1:0", "SOFTMAX", 0.4).layer == "StatefulPartitionedCall_1:0"


def _model_with_one_bad_layer():
    """A depthwise layer whose kernels are one 1.0 among eight 0.0035s: int8 weights (steps of
    1/127) round the small ones to zero, so every output misses ~1.4 % of the input's level, a
    few of its own quantization steps, and the head turns that into a different answer."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inp)  # 0..1, mean 0.5: the missing part does not average out
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="spread")(x)
    x = keras.layers.ReLU(name="spread_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    kernel = np.full((3, 3, 3, 1), 0.0035, np.float32)
    kernel[1, 1] = 1.0
    model.get_layer("spread").set_weights([kernel])
    level = 0.5 * (1 + 8 * 0.0035)  # a random image's mean after the layer
    model.get_layer("head").set_weights([np.array([[0, 0], [0, 0], [-300.0, 300.0]], np.float32),
                                         np.array([300 * level, -300 * level], np.float32)])
    return model


def test_the_badly_quantized_layer_stays_float_and_the_model_stays_int8_in_and_out():
    pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    from convert.tflite import to_int8_tflite, to_tflite

    model = _model_with_one_bad_layer()
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (32, 16, 16, 3)).astype(np.float32)
    check = rng.integers(0, 256, (16, 16, 16, 3)).astype(np.float32)
    kept, float_layers = to_int8_tflite(model, "int8", calib, check)
    # the depthwise layer, and the head that turns its small error into a large one
    assert {e.layer for e in float_layers} == {"spread", "head"}
    assert all(e.steps > MAX_ERROR_STEPS for e in float_layers)
    assert [e.layer for e in to_int8_tflite(model, "int8", calib, check, max_error_steps=1e6)[1]] == []
    plain, none = to_int8_tflite(model, "int8", calib, check, max_error_steps=math.inf)
    assert none == [] and plain == to_tflite(model, "int8", calib)

    def run(content: bytes, x: np.ndarray) -> np.ndarray:
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        assert inp["dtype"] == np.int8 and out["dtype"] == np.int8  # what the device feeds and reads
        s, z = inp["quantization"]
        it.set_tensor(inp["index"], np.clip(np.round(x / s + z), -128, 127).astype(np.int8)[None])
        it.invoke()
        so, zo = out["quantization"]
        return (it.get_tensor(out["index"])[0].astype(np.float32) - zo) * so

    test = rng.integers(0, 256, (24, 16, 16, 3)).astype(np.float32)
    want = model.predict_on_batch(test)
    err_kept = np.abs(np.stack([run(kept, x) for x in test]) - want).mean()
    err_plain = np.abs(np.stack([run(plain, x) for x in test]) - want).mean()
    assert err_kept < 0.5 * err_plain, (err_kept, err_plain)


def test_convert_refuses_a_max_error_that_is_not_positive(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from train.cli import main as maskwatch

    for value in ("0", "-1"):
        rc = maskwatch(["convert", str(tmp_path / "m.keras"), "--out", str(tmp_path / "o"), "--max-int8-error", value])
        err = capsys.readouterr().err
        assert rc == 2 and "--max-int8-error" in err and "inf keeps every layer int8" in err
    assert not (tmp_path / "o").exists()


def test_the_convert_summary_names_the_layers_kept_float(tmp_path):
    from convert.parity import Parity
    from convert.tflite import Converted, ConvertResult, summary_table
    from device.contract import ModelCard

    parity = Parity("val", 10, 1.0, 0.0, 0.0, 0.9, 0.9, 0.0, 0.9, 0.9)
    result = ConvertResult(tmp_path / "m.keras", tmp_path)
    for kind, layers in (("float32", []), ("int8", [LayerError("net/backbone_1/expanded_conv_depthwise_relu_1/Relu6",
                                                                  "DEPTHWISE_CONV_2D", 1.372).as_dict()])):
        path = tmp_path / f"m_{kind}.tflite"
        path.write_bytes(b"x" * 1024)
        result.models.append(Converted(path, ModelCard(quantization=kind, float_layers=layers), parity))
    lines = summary_table(result).splitlines()
    assert lines[-1] == ("m_int8.tflite: kept float32, int8 got them wrong by over --max-int8-error: "
                         "expanded_conv_depthwise (1.37 steps)")
    assert sum("kept float32" in line for line in lines) == 1
