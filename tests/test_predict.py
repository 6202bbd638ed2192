"""``maskwatch predict`` on real photos (detector + classifier) and on face crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import test_train as shared_runs

# the tiny runs and dataset are trained once per session and shared by the train/evaluate/predict tests
keras_home = shared_runs.keras_home
tiny_data = shared_runs.tiny_data
imagenet_run = shared_runs.imagenet_run


def _predict(argv: list[str]) -> int:
    from train.cli import main

    return main(["predict", *argv])


@pytest.fixture(scope="module")
def media(shared) -> Path:
    return shared / "media"


@pytest.mark.slow
def test_photos_faces_found_and_labelled(imagenet_run, media, detector_model, tmp_path, capsys):
    photos = [media / "pic1.jpeg", media / "pic2.jpg", media / "pic3.jpg"]
    argv = [str(imagenet_run / "model.keras"), *map(str, photos), "--json", "--detector", "short",
            "--no-mirror", "--detector-model", str(detector_model), "--annotate", str(tmp_path / "ann")]
    assert _predict(argv) == 0
    out = json.loads(capsys.readouterr().out)
    by_name = {Path(r["image"]).name: r for r in out["images"]}
    assert [len(by_name[p.name]["faces"]) for p in photos] == [2, 3, 1]
    for r in out["images"]:
        for f in r["faces"]:
            assert f["label"] in ("with_mask", "without_mask") and 0 < f["detector_score"] <= 1
            assert sum(f["probs"].values()) == pytest.approx(1, abs=1e-3)
            x0, y0, x1, y1 = f["box"]
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
    # pic1: everyone masked; pic3: a bare face; pic2: only the woman in the middle wears her mask
    assert [f["label"] for f in by_name["pic1.jpeg"]["faces"]] == ["with_mask", "with_mask"]
    assert by_name["pic3.jpg"]["faces"][0]["label"] == "without_mask"
    pic2 = sorted(by_name["pic2.jpg"]["faces"], key=lambda f: f["box"][0])
    p_alert = [f["probs"]["without_mask"] for f in pic2]
    assert p_alert[1] < min(p_alert[0], p_alert[2])
    for p in photos:
        assert (tmp_path / "ann" / f"{p.stem}_annotated.jpg").stat().st_size > 10_000


@pytest.mark.slow
def test_table_output_and_single_annotated_file(imagenet_run, media, detector_model, tmp_path, capsys):
    out_img = tmp_path / "one.png"
    assert _predict([str(imagenet_run / "model.keras"), str(media / "pic3.jpg"), "--detector", "short",
                     "--detector-model", str(detector_model), "--annotate", str(out_img)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["image", "face", "label"]
    assert lines[1].split()[:3] == ["pic3.jpg", "1", "without_mask"]
    import cv2

    img = cv2.imread(str(out_img))
    src = cv2.imread(str(media / "pic3.jpg"))
    assert img.shape == src.shape and not np.array_equal(img, src)  # boxes drawn


@pytest.mark.slow
def test_crops_skip_the_detector(imagenet_run, tiny_data, capsys):
    from device.manifest import read_manifest

    rows = [r for r in read_manifest(tiny_data) if r.split == "test"]
    paths = [str(tiny_data / r.path) for r in rows]
    assert _predict([str(imagenet_run / "model.keras"), *paths, "--crops", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["images"]) == len(rows)
    assert all(len(r["faces"]) == 1 and r["faces"][0]["detector_score"] is None for r in out["images"])
    correct = sum(r["faces"][0]["label"] == row.label for r, row in zip(out["images"], rows, strict=True))
    assert correct >= 0.75 * len(rows)


def test_missing_or_unreadable_image_is_named(imagenet_run, tmp_path, capsys):
    assert _predict([str(imagenet_run / "model.keras"), str(tmp_path / "nope.jpg"), "--crops"]) == 2
    assert "nope.jpg" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    assert _predict([str(imagenet_run / "model.keras"), str(bad), "--crops"]) == 2
    assert "bad.jpg: not a usable image (not_an_image" in capsys.readouterr().err
