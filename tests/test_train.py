"""``maskwatch train`` end to end on small datasets, and every bad input it must refuse.

The plumbing runs and refusals use faces of ``maskwatch data synth`` (the ``face_tree``
fixture), so they run on any clone; the run that must learn from ImageNet weights uses real
faces and the offline weights in ../shared.

The dataset helpers and the shared tiny runs live here; test_evaluate / test_predict import
them. A tiny run is trained once per session (cached under pytest's base temp folder), so the
three modules share it.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from device.contract import BINARY_LABELS, ModelCard, card_path
from device.manifest import Row, manifest_sha256, read_manifest, write_manifest

KERAS_CACHE_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


# --------------------------------------------------------------------------------------------
# helpers shared with test_evaluate.py and test_predict.py
# --------------------------------------------------------------------------------------------


def make_dataset(src: Path, root: Path, per_class: dict[str, int], splits=(0.6, 0.2, 0.2),
                 seed: int = 0, max_side: int = 128, labels=BINARY_LABELS) -> Path:
    """A dataset folder in the import layout (+ manifest rows) from a folder-per-class tree of
    faces ``src`` (``face_tree``, or ../shared's faces-classify).

    Images are downscaled to ``max_side`` to keep the tests fast; ``splits`` are the
    train/val/test fractions per class (all zero: no split assigned).
    """
    from PIL import Image

    from train.dataset import read_rgb

    rng = random.Random(seed)
    rows: list[Row] = []
    for label, n in per_class.items():
        files = sorted((src / label).iterdir())
        rng.shuffle(files)
        picked = []
        for f in files:  # skip the odd tiny or unreadable file: these tests are not about them
            if len(picked) == n:
                break
            try:
                img = read_rgb(f)
            except ValueError:
                continue
            if min(img.shape[:2]) >= 48:
                picked.append((f, img))
        (root / label).mkdir(parents=True, exist_ok=True)
        n_train, n_val = round(n * splits[0]), round(n * splits[1])
        for i, (f, img) in enumerate(picked):
            im = Image.fromarray(img)
            im.thumbnail((max_side, max_side))
            rel = f"{label}/{i:04d}.jpg"
            im.save(root / rel, quality=92)
            split = "" if sum(splits) == 0 else ("train" if i < n_train else "val" if i < n_train + n_val else "test")
            rows.append(Row(path=rel, label=label, source=str(f), sha256=f"{label}{i}", phash="", group=f"{label}{i}",
                            width=im.width, height=im.height, split=split))
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(root, rows)
    return root


def run_train(argv: list[str]) -> int:
    from train.cli import main

    return main(["train", *argv])


def tiny_cli_args(data: Path, out: Path, **over) -> list[str]:
    """A fast run: random weights, narrow MobileNetV2 at 64 px, one epoch per phase."""
    opts = {"--weights": "none", "--alpha": "0.35", "--input-size": "64", "--epochs-head": "1",
            "--epochs-finetune": "1", "--finetune-layers": "10", "--batch-size": "16", "--head-copies": "2",
            **over}
    return ["--data", str(data), "--out", str(out), *[x for kv in opts.items() for x in kv]]


def _cached_run(tmp_path_factory, name: str, build) -> Path:
    """Train once per session: the first module to ask builds it, the others reuse the folder."""
    root = tmp_path_factory.getbasetemp() / "shared-train-runs" / name
    done = root / "DONE"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        build(root)
        done.write_text("ok")
    return root


@pytest.fixture(scope="module")
def keras_home(shared):
    """KERAS_HOME pointing at the offline ImageNet cache in ../shared (as the Makefile sets it)."""
    cache = shared / "keras-home"
    if not (cache / "models" / KERAS_CACHE_FILE).exists():
        pytest.skip(f"{cache}/models/{KERAS_CACHE_FILE} is absent")
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("KERAS_HOME", None)
    else:
        os.environ["KERAS_HOME"] = old


@pytest.fixture(scope="module")
def tiny_data(shared, tmp_path_factory) -> Path:
    """80 real faces (40 per class), split 24/8/8 per class: what the ImageNet run learns from."""
    src = shared / "datasets" / "faces-classify"
    return _cached_run(tmp_path_factory, "tiny-data",
                       lambda root: make_dataset(src, root / "data", {"with_mask": 40, "without_mask": 40})) / "data"


@pytest.fixture(scope="module")
def synth_data(face_tree, tmp_path_factory) -> Path:
    """80 faces of ``maskwatch data synth`` (40 per class), split 24/8/8 per class: for plumbing."""
    return _cached_run(tmp_path_factory, "synth-data",
                       lambda root: make_dataset(face_tree, root / "data", {"with_mask": 40, "without_mask": 40})) / "data"


@pytest.fixture(scope="module")
def tiny_run(synth_data, tmp_path_factory) -> Path:
    """Run folder of a tiny random-weights run (plumbing: every artefact, both phases)."""
    pytest.importorskip("tensorflow")

    def build(root: Path) -> None:
        assert run_train(tiny_cli_args(synth_data, root / "run")) == 0

    return _cached_run(tmp_path_factory, "tiny-run", build) / "run"


@pytest.fixture(scope="module")
def imagenet_run(tiny_data, keras_home, tmp_path_factory) -> Path:
    """Run folder of a small run that really loads the cached ImageNet MobileNetV2 (alpha 1.0, 96 px).

    Head phase only: the tiny run already covers fine-tuning, and this model serves the
    evaluate / predict tests, which need its predictions to mean something.
    """
    pytest.importorskip("tensorflow")

    def build(root: Path) -> None:
        argv = tiny_cli_args(tiny_data, root / "run", **{"--weights": "imagenet", "--alpha": "1.0",
                                                          "--input-size": "96", "--epochs-head": "15",
                                                          "--epochs-finetune": "0", "--patience": "5"})
        assert run_train(argv) == 0

    return _cached_run(tmp_path_factory, "imagenet-run", build) / "run"


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_writes_every_artefact(tiny_run, synth_data):
    for name in ("model.keras", "model.json", "config.json", "history.csv", "curves.png"):
        assert (tiny_run / name).is_file(), name
    assert not (tiny_run / "checkpoint.weights.h5").exists()

    card = ModelCard.load(card_path(tiny_run / "model.keras"))
    assert card.input_size == 64 and card.labels == list(BINARY_LABELS)
    assert card.backbone == "mobilenet_v2" and card.quantization == "none"
    assert card.dataset_manifest_sha256 == manifest_sha256(synth_data)
    assert card.margin == pytest.approx(0.2)
    val = card.metrics["val"]
    assert val["n"] == 16 and 0.0 <= val["accuracy"] <= 1.0

    config = json.loads((tiny_run / "config.json").read_text())
    assert config["weights"] == "none" and config["alpha"] == 0.35 and config["input_size"] == 64
    assert config["epochs_head"] == 1 and config["finetune_layers"] == 10 and config["seed"] == 0
    assert config["counts"]["train"] == {"with_mask": 24, "without_mask": 24}
    assert config["class_weights"] == {"with_mask": 1.0, "without_mask": 1.0}

    with open(tiny_run / "history.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    assert [h["phase"] for h in hist] == ["head", "finetune"]
    assert all(np.isfinite(float(h["val_loss"])) for h in hist)
    assert (tiny_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_saved_model_takes_raw_pixels_and_has_no_augmentation(tiny_run, synth_data):
    from train.dataset import load_split
    from train.model import load_model

    model = load_model(tiny_run / "model.keras")
    assert model.input_shape == (None, 64, 64, 3) and model.output_shape == (None, 2)
    assert "augment" not in [layer.name for layer in model.layers]
    x, y = load_split(synth_data, "val", 64, BINARY_LABELS)
    p1 = model.predict(x.astype(np.float32), verbose=0)
    p2 = model.predict(x.astype(np.float32), verbose=0)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p1, p2)  # deterministic at inference: no augmentation left


@pytest.mark.slow
def test_imagenet_run_loads_cached_weights_and_learns(imagenet_run, tiny_data):
    """The cached ImageNet backbone makes 48 training faces enough; random weights would not."""
    card = ModelCard.load(imagenet_run / "model.json")
    config = json.loads((imagenet_run / "config.json").read_text())
    assert config["weights"] == "imagenet" and card.input_size == 96
    assert card.metrics["val"]["accuracy"] >= 0.8, card.metrics


def test_existing_run_is_not_overwritten(synth_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_text("precious")
    assert run_train(tiny_cli_args(synth_data, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "model.keras").read_text() == "precious"


# ---- bad input: a clear error before training ------------------------------------------------


def _error(argv: list[str], capsys) -> str:
    assert run_train(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1].split("\r")[-1]  # after any progress bar
    assert err.startswith("maskwatch: error: "), err
    return err


def test_missing_split_is_refused(face_tree, tmp_path, capsys):
    data = make_dataset(face_tree, tmp_path / "data", {"with_mask": 3, "without_mask": 3}, splits=(0, 0, 0))
    err = _error(tiny_cli_args(data, tmp_path / "run"), capsys)
    assert "no 'train' rows" in err and "maskwatch data split" in err
    assert not (tmp_path / "run").exists()


def test_val_split_missing_is_refused(face_tree, tmp_path, capsys):
    data = make_dataset(face_tree, tmp_path / "data", {"with_mask": 4, "without_mask": 4}, splits=(1.0, 0, 0))
    err = _error(tiny_cli_args(data, tmp_path / "run"), capsys)
    assert "no 'val' rows" in err


def test_one_class_only_is_refused(face_tree, tmp_path, capsys):
    data = make_dataset(face_tree, tmp_path / "data", {"with_mask": 5})
    err = _error(tiny_cli_args(data, tmp_path / "run"), capsys)
    assert "only with_mask" in err and "missing: without_mask" in err


def test_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    err = _error(tiny_cli_args(tmp_path / "data", tmp_path / "run"), capsys)
    assert "is empty" in err and str(tmp_path / "data") in err
    err = _error(tiny_cli_args(tmp_path / "nope", tmp_path / "run"), capsys)
    assert "not found" in err and "nope" in err


def test_extra_train_must_come_from_this_datasets_train_split(synth_data, tmp_path, capsys):
    """Synthetic faces made from another dataset (or before a re-split) could be val or test
    faces in disguise: refused before training, with the command that makes them right."""
    import json

    from device.manifest import manifest_sha256

    extra = tmp_path / "extra"
    extra.mkdir()
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--extra-train": str(extra)}), capsys)
    assert "--extra-train" in err and "add_masks_report.json" in err
    made = {"split": "test", "manifest_sha256": manifest_sha256(synth_data), "path": str(synth_data)}
    (extra / "add_masks_report.json").write_text(json.dumps({"dataset": made}))
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--extra-train": str(extra)}), capsys)
    assert "not made from the train split" in err and "--split train" in err
    made.update(split="train", manifest_sha256="0" * 64)  # the dataset changed since
    (extra / "add_masks_report.json").write_text(json.dumps({"dataset": made}))
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--extra-train": str(extra)}), capsys)
    assert "not made from the train split" in err
    assert not (tmp_path / "run" / "model.keras").exists()


def test_unreadable_image_is_named(face_tree, tmp_path, capsys):
    data = make_dataset(face_tree, tmp_path / "data", {"with_mask": 3, "without_mask": 3})
    bad = read_manifest(data)[1]
    (data / bad.path).write_bytes(b"this is not an image")
    err = _error(tiny_cli_args(data, tmp_path / "run"), capsys)
    assert bad.path in err and "not a usable image" in err
    assert not (tmp_path / "run" / "model.keras").exists()


@pytest.mark.parametrize("size", ["24", "8"])
def test_input_size_the_backbone_cannot_take(synth_data, tmp_path, capsys, size):
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--input-size": size}), capsys)
    assert f"--input-size {size}" in err and "32" in err


def test_bad_options_are_refused(synth_data, tmp_path, capsys):
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--weights": str(tmp_path / "none.h5")}), capsys)
    assert "none.h5" in err and "not found" in err
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--alpha": "0.6", "--weights": "imagenet"}), capsys)
    assert "alpha" in err and "--weights none" in err
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--epochs-head": "0", "--epochs-finetune": "0"}),
                 capsys)
    assert "nothing to train" in err


def test_imagenet_offline_without_cache_names_the_way_out(synth_data, tmp_path, capsys, monkeypatch):
    """No cached file and no network (a dead proxy makes this hold on any machine)."""
    pytest.importorskip("tensorflow")
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    err = _error(tiny_cli_args(synth_data, tmp_path / "run", **{"--weights": "imagenet", "--alpha": "0.5"}), capsys)
    expected = home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
    assert "--weights none" in err and str(expected) in err and "$KERAS_HOME/models/" in err
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_class_weights_balance_the_loss():
    from train.dataset import class_weights

    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert 3 * w[0] == pytest.approx(1 * w[1])


def test_load_split_contract(face_tree, tmp_path):
    """What the converter relies on: contract-resized uint8 images, label indices in the given order."""
    from device.contract import THREE_CLASS_LABELS, resize_face
    from train.dataset import load_split, read_rgb

    data = make_dataset(face_tree, tmp_path / "data", {"with_mask": 5, "without_mask": 5}, splits=(0.6, 0.4, 0))
    rows = read_manifest(data)
    rows[0].label = "incorrect_mask"  # a third-class row: left out of a binary load
    write_manifest(data, rows)
    x, y = load_split(data, "train", 48, BINARY_LABELS)
    train_rows = [r for r in rows if r.split == "train" and r.label in BINARY_LABELS]
    assert x.shape == (len(train_rows), 48, 48, 3) and x.dtype == np.uint8
    assert y.tolist() == [BINARY_LABELS.index(r.label) for r in train_rows]
    np.testing.assert_array_equal(x[0], resize_face(read_rgb(data / train_rows[0].path), 48))
    x3, y3 = load_split(data, "train", 48, THREE_CLASS_LABELS)
    assert len(x3) == len(train_rows) + 1 and y3[0] == 2
    xr, yr = load_split(data, "train", 48, tuple(reversed(BINARY_LABELS)))
    assert (yr == 1 - y).all()
    assert len(load_split(data, "all", 32, BINARY_LABELS)[0]) == 9
