"""``maskwatch convert``: a small model trained on real faces -> float32 + int8 TFLite, cards, parity.

The model is tiny (three convolutions at 64 px) but follows the contract of a trained run:
raw pixels in, our augmentation block (with its custom layers) and a Rescaling layer inside,
softmax over with_mask / without_mask, a card beside it and a config.json naming its dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from device.contract import BINARY_LABELS, ModelCard, card_path, sha256_file

LABELS = list(BINARY_LABELS)
SIZE = 64
THRESHOLD = 0.45
#: Images per class in train / val / test of the tiny dataset.
PER_CLASS = (24, 8, 8)

_BUILT: dict[str, object] = {}


# --------------------------------------------------------------------------------------------
# Helpers shared with tests/test_bench.py (built once per session)
# --------------------------------------------------------------------------------------------


def make_face_dataset(shared: Path, root: Path, per_class=PER_CLASS, side: int = 96) -> Path:
    """A dataset folder (manifest.csv + label folders) of real faces from faces-classify."""
    import cv2

    from device.manifest import Row, write_manifest

    rows = []
    rng = np.random.default_rng(1)
    for label in LABELS:
        files = sorted((shared / "datasets" / "faces-classify" / label).iterdir())
        rng.shuffle(files)
        (root / label).mkdir(parents=True, exist_ok=True)
        k = 0
        for f in files:
            if k == sum(per_class):
                break
            bgr = cv2.imdecode(np.fromfile(str(f), np.uint8), cv2.IMREAD_COLOR)
            if bgr is None or min(bgr.shape[:2]) < 48:
                continue
            bgr = cv2.resize(bgr, (side, side), interpolation=cv2.INTER_AREA)
            rel = f"{label}/{k:03d}.jpg"
            cv2.imwrite(str(root / rel), bgr)
            split = "train" if k < per_class[0] else "val" if k < per_class[0] + per_class[1] else "test"
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            rows.append(Row(rel, label, f.name, digest, "0" * 16, digest[:12], side, side, split))
            k += 1
    write_manifest(root, rows)
    return root


def train_tiny_run(data: Path, run: Path, epochs: int = 20) -> Path:
    """runs/NAME/{model.keras, model.json, config.json} for a tiny CNN trained on ``data``."""
    import keras

    from train.augment import AugmentConfig, build_augmentation
    from train.dataset import load_split

    keras.utils.set_random_seed(0)
    aug = AugmentConfig(zoom=0, translation=0, perspective=0, brightness=0, contrast=0, grayscale=0,
                        gamma_rate=0.2, low_res_rate=0.2)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = build_augmentation(aug, seed=0)(inp)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(x)
    for filters in (8, 16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    xt, yt = load_split(data, "train", SIZE, LABELS)
    model.fit(xt.astype("float32"), yt, epochs=epochs, batch_size=16, verbose=0)
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    ModelCard(name="tiny", backbone="tiny_cnn", input_size=SIZE, threshold=THRESHOLD,
              metrics={"val_accuracy": 0.5}).save(run / "model.json")
    (run / "config.json").write_text(json.dumps({"data": str(data)}), encoding="utf-8")
    return run / "model.keras"


@dataclass
class Assets:
    dataset: Path
    model: Path  # runs/tiny/model.keras
    out: Path  # converted: tiny_float32.tflite, tiny_int8.tflite, tiny_float16.tflite + cards
    rc: int

    @property
    def float32(self) -> Path:
        return self.out / "tiny_float32.tflite"

    @property
    def int8(self) -> Path:
        return self.out / "tiny_int8.tflite"


def dataset(shared: Path, tmp_path_factory) -> Path:
    if "dataset" not in _BUILT:
        _BUILT["dataset"] = make_face_dataset(shared, tmp_path_factory.mktemp("faces"))
    return _BUILT["dataset"]  # type: ignore[return-value]


def converted_assets(shared: Path, tmp_path_factory) -> Assets:
    """Train once, convert once through the real CLI (no --data: the run's config.json names it)."""
    if "assets" not in _BUILT:
        from train.cli import main as maskwatch

        data = dataset(shared, tmp_path_factory)
        model = train_tiny_run(data, tmp_path_factory.mktemp("runs") / "tiny")
        out = tmp_path_factory.mktemp("converted")
        rc = maskwatch(["convert", str(model), "--out", str(out), "--calibration-size", "16", "--float16",
                        "--min-agreement", "0.8"])
        _BUILT["assets"] = Assets(data, model, out, rc)
    return _BUILT["assets"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def assets(shared, tmp_path_factory) -> Assets:
    pytest.importorskip("tensorflow")
    return converted_assets(shared, tmp_path_factory)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_convert_writes_models_and_cards(assets):
    assert assets.rc == 0
    src_sha = sha256_file(assets.model)
    names = sorted(p.name for p in assets.out.iterdir())
    assert names == sorted(f"tiny_{k}.{e}" for k in ("float32", "int8", "float16") for e in ("tflite", "json"))
    cards = {k: ModelCard.load(assets.out / f"tiny_{k}.json") for k in ("float32", "int8", "float16")}
    for kind, card in cards.items():
        assert card.quantization == kind
        assert card.labels == LABELS and card.input_size == SIZE
        assert card.threshold == pytest.approx(THRESHOLD)  # copied from the Keras card
        assert card.source_model_sha256 == src_sha
        assert card.metrics["split"] == "val" and card.metrics["n_images"] == 2 * PER_CLASS[1]
        assert card.extra["source_metrics"] == {"val_accuracy": 0.5}
    q = cards["int8"].quantization_params
    assert q["input"]["dtype"] == "int8" and q["output"]["dtype"] == "int8"
    # Rescaling inside the model: raw pixels 0..255 use the int8 range with scale ~1, zero point -128.
    assert q["input"]["scale"] == pytest.approx(1.0, abs=0.02) and q["input"]["zero_point"] == -128
    assert 0 < q["output"]["scale"] <= 1 / 255 + 1e-6
    assert cards["float32"].quantization_params["input"]["dtype"] == "float32"
    assert cards["int8"].calibration_size == 16  # --calibration-size
    assert cards["float32"].calibration_size is None
    # Quantization shrinks the file (the tiny model is mostly graph, so not by 4x).
    assert assets.int8.stat().st_size < 0.6 * assets.float32.stat().st_size


@pytest.mark.slow
def test_parity_numbers_match_an_independent_keras_evaluation(assets):
    import keras

    from train.augment import custom_layers
    from train.dataset import load_split

    custom_layers()
    model = keras.saving.load_model(assets.model, compile=False)
    x, y = load_split(assets.dataset, "val", SIZE, LABELS)
    probs = keras.ops.convert_to_numpy(model(x.astype("float32"), training=False))
    pred = np.where(probs[:, 1] >= THRESHOLD, 1, 0)
    keras_acc = float(np.mean(pred == y))

    f32 = ModelCard.load(card_path(assets.float32)).metrics
    i8 = ModelCard.load(card_path(assets.int8)).metrics
    for m in (f32, i8):
        assert m["accuracy_keras"] == pytest.approx(keras_acc)
        assert m["accuracy_delta_points"] == pytest.approx(100 * (m["accuracy_tflite"] - m["accuracy_keras"]))
    assert keras_acc >= 0.7  # the tiny model did learn something from 48 real faces
    # float32 TFLite computes what Keras computes.
    assert f32["agreement"] == 1.0 and f32["max_abs_diff"] < 1e-4 and f32["accuracy_delta_points"] == 0
    # int8 stays close: same decisions on (nearly) every face, probabilities within a few percent.
    assert i8["agreement"] >= 0.8 and 0 < i8["max_abs_diff"] < 0.3


@pytest.mark.slow
def test_failed_parity_exits_nonzero_and_keeps_files(assets, tmp_path, capsys):
    from train.cli import main as maskwatch

    out = tmp_path / "forced"
    rc = maskwatch(["convert", str(assets.model), "--out", str(out), "--data", str(assets.dataset),
                    "--min-agreement", "1.01", "--int8-io", "uint8", "--name", "forced"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "parity check failed" in err and "forced_uint8.tflite" in err and "min-agreement" in err
    assert "kept" in err
    for kind in ("float32", "uint8"):
        card = ModelCard.load(out / f"forced_{kind}.json")
        assert (out / f"forced_{kind}.tflite").stat().st_size > 0
        assert card.metrics["agreement"] <= 1.0
    q = ModelCard.load(out / "forced_uint8.json").quantization_params["input"]
    assert q["dtype"] == "uint8" and q["zero_point"] == 0 and q["scale"] == pytest.approx(1.0, abs=0.02)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _convert_error(capsys, *argv: str) -> str:
    from train.cli import main as maskwatch

    rc = maskwatch(["convert", *argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_not_a_keras_file(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    text = tmp_path / "notes.keras"
    text.write_text("this is not a model\n")
    err = _convert_error(capsys, str(text), "--out", str(tmp_path / "o"), "--data", str(tmp_path))
    assert "notes.keras" in err and "not a Keras model file" in err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00\x01junk" * 100)
    err = _convert_error(capsys, str(junk), "--out", str(tmp_path / "o"), "--data", str(tmp_path))
    assert "junk.h5" in err and "HDF5" in err
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 600)
    err = _convert_error(capsys, str(fake), "--out", str(tmp_path / "o"), "--data", str(tmp_path))
    assert "fake.h5" in err and "cannot load" in err
    err = _convert_error(capsys, str(tmp_path / "missing.keras"), "--out", str(tmp_path / "o"))
    assert "missing.keras" in err and "not found" in err
    assert not (tmp_path / "o").exists()


def test_model_without_image_input(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    import keras

    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")])
    path = tmp_path / "dense.keras"
    model.save(path)
    err = _convert_error(capsys, str(path), "--out", str(tmp_path / "o"), "--data", str(tmp_path))
    assert "dense.keras" in err and "not a square RGB image" in err and "(None, 10)" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_empty_calibration_set_and_missing_dataset(assets, tmp_path, capsys):
    from device.manifest import read_manifest, write_manifest

    data = tmp_path / "no-train"
    shutil.copytree(assets.dataset, data)
    write_manifest(data, [replace(r, split="") if r.split == "train" else r for r in read_manifest(data)])
    err = _convert_error(capsys, str(assets.model), "--out", str(tmp_path / "o"), "--data", str(data))
    assert "empty calibration set" in err and "no-train" in err
    assert not (tmp_path / "o").exists()  # failed before any conversion

    lone = tmp_path / "lone" / "model.keras"  # not in a run folder: no config.json to name the data
    lone.parent.mkdir()
    shutil.copy(assets.model, lone)
    shutil.copy(card_path(assets.model), card_path(lone))
    err = _convert_error(capsys, str(lone), "--out", str(tmp_path / "o"))
    assert "no --data given" in err
    err = _convert_error(capsys, str(lone), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nowhere"))
    assert "nowhere" in err
    err = _convert_error(capsys, str(lone), "--out", str(tmp_path / "o"), "--data", str(data),
                         "--calibration-size", "0")
    assert "--calibration-size" in err


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def test_calibration_sample_is_seeded_and_bounded():
    from convert.tflite import calibration_sample

    items = list(range(100))
    a = calibration_sample(items, 10, seed=0)
    assert a == calibration_sample(items, 10, seed=0) and len(set(a)) == 10 and a == sorted(a)
    assert a != calibration_sample(items, 10, seed=1)
    assert calibration_sample(items, 500, seed=0) == items
    with pytest.raises(ValueError, match="empty calibration set"):
        calibration_sample([], 10, seed=0)
    with pytest.raises(ValueError, match="--calibration-size"):
        calibration_sample(items, 0, seed=0)


def test_calibration_gives_every_label_its_share():
    from collections import Counter

    from convert.tflite import calibration_sample

    # 90 masked faces, 40 bare ones, 6 masks worn wrong: a plain sample of 30 would hold ~1 of those
    items = [("with_mask", i) for i in range(90)] + [("without_mask", i) for i in range(40)] \
        + [("incorrect_mask", i) for i in range(6)]
    label = lambda item: item[0]  # noqa: E731
    a = calibration_sample(items, 30, seed=0, key=label)
    assert Counter(map(label, a)) == {"with_mask": 12, "without_mask": 12, "incorrect_mask": 6}
    assert a == sorted(a, key=items.index) and len(set(a)) == 30  # original order, no repeats
    assert a == calibration_sample(items, 30, seed=0, key=label)
    assert Counter(map(label, calibration_sample(items, 9, seed=3, key=label))) == dict.fromkeys(
        ("with_mask", "without_mask", "incorrect_mask"), 3)
    assert calibration_sample(items, 1000, seed=0, key=label) == items


def test_parity_metrics_by_hand():
    from convert.parity import parity_metrics

    keras_p = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.3, 0.7]], np.float32)
    tfl_p = np.array([[0.88, 0.12], [0.25, 0.75], [0.45, 0.55], [0.3, 0.7]], np.float32)
    y = np.array([0, 1, 0, 0])
    p = parity_metrics(keras_p, tfl_p, y, alert_index=1, threshold=0.5)
    assert p.n_images == 4
    assert p.agreement == pytest.approx(0.75)  # row 2 flips to the alert class
    assert p.max_abs_diff == pytest.approx(0.10, abs=1e-6)
    assert p.accuracy_keras == pytest.approx(0.75) and p.accuracy_tflite == pytest.approx(0.5)
    assert p.accuracy_delta_points == pytest.approx(-25.0)
    # At threshold 0.8 only Keras's 0.8 row is an alert: Keras is right on all four, TFLite misses it.
    q = parity_metrics(keras_p, tfl_p, y, alert_index=1, threshold=0.8)
    assert q.accuracy_keras == pytest.approx(1.0) and q.accuracy_tflite == pytest.approx(0.75)
    assert q.agreement == pytest.approx(0.75)
    with pytest.raises(ValueError, match="differ in shape"):
        parity_metrics(keras_p, tfl_p[:2], y, 1, 0.5)


@pytest.mark.slow
def test_compaction_is_lossless_and_smaller(assets):
    """The int8 file's identical quantization vectors are shared; nothing the interpreter reads changes."""
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    from convert.compact import compact_quantized
    from convert.tflite import load_keras_model, to_tflite

    files = sorted((assets.dataset / "with_mask").glob("*.jpg"))[:8]
    images = np.stack([cv2.resize(cv2.imread(str(f))[:, :, ::-1], (SIZE, SIZE)) for f in files])
    raw = to_tflite(load_keras_model(assets.model), "int8", images.astype(np.float32))
    small = compact_quantized(raw)
    assert len(small) < len(raw)

    def interpreter(content: bytes):
        it = Interpreter(model_content=content)
        it.allocate_tensors()
        return it

    a, b = interpreter(raw), interpreter(small)
    ta, tb = a.get_tensor_details(), b.get_tensor_details()
    assert [t["name"] for t in ta] == [t["name"] for t in tb]
    for x, y in zip(ta, tb, strict=True):
        assert x["dtype"] == y["dtype"] and list(x["shape"]) == list(y["shape"])
        for key in ("scales", "zero_points"):
            assert np.array_equal(x["quantization_parameters"][key], y["quantization_parameters"][key]), x["name"]
    inp = a.get_input_details()[0]
    for x in (images.astype(np.int16) - 128).astype(np.int8):
        outs = []
        for it in (a, b):
            it.set_tensor(inp["index"], x[None])
            it.invoke()
            outs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
        assert np.array_equal(*outs)
    # What convert wrote is the compacted file.
    assert assets.int8.stat().st_size < len(raw)
    with pytest.raises(ValueError, match="TFL3"):
        compact_quantized(b"not a model at all")
