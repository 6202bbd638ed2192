"""``maskwatch evaluate-scenes`` end to end on a small generated VOC folder (no ../shared, no TensorFlow).

The faces are drawn (skin ellipse, hair, eyes, brows, nose, mouth): BlazeFace short range finds
each of them at the sizes used here with a score of about 0.9, in the workstation and the
numpy 1.x env alike. Blank wall annotated as a face gives known misses, an unannotated drawn
face a known false detection, and the classifier's card threshold (0: every face flagged,
1: none) makes the flagged figures known whatever the tiny random classifier says.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from train.cli import main

WALL = (90, 100, 110)


def drawn_face(s: int) -> np.ndarray:
    """A 2s x 2s patch of wall with a face drawn in its middle; the face spans 0.84s x 1.1s."""
    import cv2

    img = np.full((2 * s, 2 * s, 3), WALL, np.uint8)
    aa = cv2.LINE_AA
    cv2.ellipse(img, (s, s), (int(s * 0.42), int(s * 0.55)), 0, 0, 360, (205, 160, 130), -1, aa)
    cv2.ellipse(img, (s, int(s * 0.5)), (int(s * 0.45), int(s * 0.2)), 0, 180, 360, (40, 30, 20), -1, aa)
    for dx in (-0.17, 0.17):
        x = int(s + dx * s)
        cv2.ellipse(img, (x, int(s * 0.9)), (int(s * 0.08), int(s * 0.04)), 0, 0, 360, (255, 255, 255), -1, aa)
        cv2.circle(img, (x, int(s * 0.9)), int(s * 0.035), (30, 20, 10), -1, aa)
        cv2.line(img, (int(x - s * 0.09), int(s * 0.8)), (int(x + s * 0.09), int(s * 0.8)), (60, 40, 30),
                 max(1, int(s * 0.025)), aa)
    cv2.line(img, (s, int(s * 0.95)), (s - int(s * 0.04), int(s * 1.15)), (170, 120, 100), max(1, int(s * 0.02)), aa)
    cv2.ellipse(img, (s, int(s * 1.3)), (int(s * 0.14), int(s * 0.05)), 0, 0, 180, (150, 60, 60),
                max(1, int(s * 0.03)), aa)
    return img


def face_box(x: int, y: int, s: int) -> tuple[int, int, int, int]:
    """The annotated box of a face drawn at (x, y) with size s (its skin ellipse)."""
    return round(x + s - 0.42 * s), round(y + s - 0.55 * s), round(x + s + 0.42 * s), round(y + s + 0.55 * s)


def voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, tuple]]) -> str:
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


#: name -> (photo size, drawn faces (x, y, s, label or None = not annotated), other annotated boxes)
SCENES = {
    # Two faces found; three annotated patches of wall (16-32, 32-64, 64-128 px) never found; a
    # 10 px face, a hat and an empty box left out.
    "door": ((640, 480), [(20, 20, 130, "without_mask"), (340, 200, 120, "with_mask")],
             [("no_mask", (40, 320, 60, 345)), ("with_mask", (100, 320, 140, 370)),
              ("mask", (180, 320, 240, 390)), ("with_mask", (400, 40, 410, 50)),
              ("hat", (450, 40, 520, 110)), ("with_mask", (600, 10, 590, 20))]),
    # 1280x960: shrunk to 640x480, the face becomes 143 px; the VOC spelling of incorrect_mask.
    "big": ((1280, 960), [(100, 100, 260, "mask_weared_incorrect")], []),
    # 400x300: not enlarged.
    "small": ((400, 300), [(60, 20, 125, "without_mask")], []),
    # A face nobody annotated: a detection that matches nothing.
    "decoy": ((640, 480), [(200, 100, 130, None)], []),
}


def make_voc(root: Path, scenes: dict = SCENES) -> Path:
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, (size, faces, others) in scenes.items():
        img = np.full((size[1], size[0], 3), WALL, np.uint8)
        objects = []
        for x, y, s, label in faces:
            img[y : y + 2 * s, x : x + 2 * s] = drawn_face(s)
            if label:
                objects.append((label, face_box(x, y, s)))
        assert cv2.imwrite(str(root / "images" / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        (root / "annotations" / f"{name}.xml").write_text(voc_xml(f"{name}.png", size, objects + others))
    return root


def classifier_with_threshold(tiny: Path, folder: Path, threshold: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / tiny.name
    shutil.copyfile(tiny, model)
    card = json.loads(tiny.with_suffix(".json").read_text())
    card["threshold"] = threshold
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main(["evaluate-scenes", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def voc_dir(tmp_path) -> Path:
    return make_voc(tmp_path / "faces-voc")


def test_report_counts_what_was_placed(tmp_path, voc_dir, tiny_classifier, detector_model, capsys):
    # One unreadable photo and one annotation without its photo: skipped, counted, not fatal.
    (voc_dir / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (voc_dir / "annotations" / "broken.xml").write_text(voc_xml("broken.jpg", (640, 480), [("mask", (1, 1, 50, 50))]))
    (voc_dir / "annotations" / "gone.xml").write_text(voc_xml("gone.jpg", (640, 480), [("mask", (1, 1, 50, 50))]))
    model = classifier_with_threshold(tiny_classifier, tmp_path / "flag-all", 0.0)
    out = tmp_path / "out"
    rc, text, _ = run(capsys, voc_dir, "--model", model, "--detector", "short", "--threads", 1, "--out", out)
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    sc = doc["scenes"]
    assert (sc["annotated"], sc["used"]) == (6, 4)
    assert sorted((Path(s["path"]).name, s["reason"]) for s in sc["skipped"]) == [
        ("broken.jpg", "unreadable"), ("gone.xml", "missing_image")]
    assert sc["faces"] == {"with_mask": 3, "without_mask": 3, "incorrect_mask": 1}
    assert sc["left_out"] == {"bad_box": 1, "too_small": 1, "unknown_class": 1}

    (d,) = doc["detectors"]
    assert d["name"] == "short 128x128 + mirror" and d["input_size"] == [128, 128]
    assert (d["faces"], d["found"]) == (7, 4)
    assert {k: (v["faces"], v["found"]) for k, v in d["by_class"].items()} == {
        "with_mask": (3, 1), "without_mask": (3, 2), "incorrect_mask": (1, 1)}
    assert {k: (v["faces"], v["found"]) for k, v in d["by_size"].items()} == {
        "16-32": (1, 0), "32-64": (1, 0), "64-128": (1, 0), "128+": (4, 4)}
    assert (d["with_mask_32px"]["faces"], d["with_mask_32px"]["found"]) == (3, 1)
    # Threshold 0: every detection flagged.
    assert d["alert_recall"] == {"faces": 3, "found_and_flagged": 2, "recall": 2 / 3}
    assert d["flagged_precision"] == {"flagged": 3, "really_without_mask": 2, "precision": 2 / 3}
    assert d["incorrect_mask"]["found_and_flagged"] == 1
    assert (d["detections"], d["unmatched"], d["flagged_unmatched"]) == (5, 1, 1)
    for stage in ("detect", "classify", "total"):
        assert d["ms"][stage]["frames"] == 4
    assert 0 < d["ms"]["detect"]["p50"] <= d["ms"]["total"]["p50"]
    # Threshold 0 flags the one masked face found: the alert's only mistake, listed and counted.
    (m,) = d["mistakes"]
    assert (m["kind"], m["label"]) == ("false_alert", "with_mask") and m["alert_score"] >= 0.0
    assert "_mistake_crops" not in doc
    assert "1 masked faces flagged, 0 no-mask faces not flagged" in (out / "report.md").read_text()
    # Fitted on the 4 faces found, beside the calibration short range's crops use.
    from device.detectors.blazeface import CONFIGS

    cal = d["box_calibration"]
    assert cal["faces"] == 4 and set(cal["fitted"]) == {"dx", "dy", "width", "height"}
    assert cal["used"] == CONFIGS["short"].box_calibration.as_dict()

    md = (out / "report.md").read_text()
    assert "short 128x128" in md and md.strip() in text
    assert "| 0.57 | 0.33 | 0.67 | 1.00 | 0.00 | 0.00 | 0.00 | 1.00 | 0.33 |" in md  # the recall row
    assert "| 0.67 (2/3; 0.21–0.94) | 0.67 (2/3; 0.21–0.94) |" in md  # recall and precision, 95 % interval
    if doc["png_note"] is None:  # matplotlib is there (the workstation)
        assert all(Path(p).stat().st_size > 1000 for p in doc["png"]) and len(doc["png"]) == 3
        assert Path(doc["png"][2]).name == "mistakes.png"


def test_nothing_flagged_at_threshold_one_and_detectors_side_by_side(tmp_path, voc_dir, tiny_classifier,
                                                                     detector_model, capsys):
    model = classifier_with_threshold(tiny_classifier, tmp_path / "flag-none", 1.0)
    rc, text, _ = run(capsys, voc_dir, "--model", model, "--detector", "short", "--detector", "short,score_threshold=0.95",
                      "--threads", 1, "--out", tmp_path / "out")
    assert rc == 0
    first, strict = json.loads((tmp_path / "out" / "report.json").read_text())["detectors"]
    assert first["alert_recall"]["found_and_flagged"] == 0 and first["flagged_precision"]["precision"] is None
    assert first["flagged_unmatched"] == 0 and first["found"] == 4
    assert strict["name"] == "short 128x128 + mirror score_threshold=0.95" and strict["found"] == 0  # scores are ~0.9
    assert "| — (0/0) |" in text


def test_split_filter_keeps_only_scenes_wholly_in_the_split(tmp_path, voc_dir, tiny_classifier, detector_model,
                                                            capsys):
    from device.manifest import Row, write_manifest

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    rows = []
    # The import ran where the VOC folder lived elsewhere: scenes are matched by their last path parts.
    for scene, boxes in (("door", {0: "test", 1: "test", 2: "test"}), ("big", {0: "train"}),
                         ("small", {0: "test", 1: "val"})):
        for k, split in boxes.items():
            rows.append(Row(f"with_mask/{scene}_{k}.jpg", "with_mask", f"/elsewhere/faces-voc/images/{scene}.png#box{k}",
                            "0" * 64, "0" * 16, f"g{scene}{k}", 50, 50, split))
    rows.append(Row("with_mask/x.jpg", "with_mask", "/elsewhere/classify/with_mask/x.jpg", "1" * 64, "0" * 16, "gx",
                    50, 50, "test"))
    write_manifest(dataset, rows)
    rc, text, _ = run(capsys, voc_dir, "--model", tiny_classifier, "--split-of", dataset, "--split", "test",
                      "--threads", 1, "--out", tmp_path / "out")
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["scenes"]["used"] == 1 and doc["detectors"][0]["faces"] == 5  # door only
    assert doc["scenes"]["filtered_out"] == {"mixed_splits": 1, "not_in_dataset": 1, "other_split": 1}

    rc, _, err = run(capsys, voc_dir, "--model", tiny_classifier, "--split-of", dataset, "--split", "val",
                     "--out", tmp_path / "out2")
    assert rc == 2 and "manifest.csv" in err and "split 'val'" in err


def test_bad_input_names_the_file(tmp_path, voc_dir, tiny_classifier, detector_model, capsys):
    out = tmp_path / "out"
    rc, _, err = run(capsys, tmp_path / "nowhere", "--model", tiny_classifier, "--out", out)
    assert rc == 2 and "nowhere" in err

    rc, _, err = run(capsys, tmp_path, "--model", tiny_classifier, "--out", out)
    assert rc == 2 and "not a PASCAL VOC folder" in err

    rc, _, err = run(capsys, voc_dir, "--model", tmp_path / "missing.tflite", "--out", out)
    assert rc == 2 and "missing.tflite" in err

    rc, _, err = run(capsys, voc_dir, "--model", tiny_classifier, "--detector", "tiny", "--out", out)
    assert rc == 2 and "unknown kind 'tiny'" in err

    rc, _, err = run(capsys, voc_dir, "--model", tiny_classifier, "--split-of", tmp_path, "--out", out)
    assert rc == 2 and "manifest.csv" in err

    (voc_dir / "annotations" / "half.xml").write_text("<annotation><object><name>mask</name>")
    rc, _, err = run(capsys, voc_dir, "--model", tiny_classifier, "--out", out)
    assert rc == 2 and "half.xml" in err and "not valid XML" in err
    assert not out.exists()  # nothing half-written


def test_no_readable_photo_is_an_error(tmp_path, tiny_classifier, detector_model, capsys):
    voc = make_voc(tmp_path / "voc", {})
    (voc / "images" / "a.jpg").write_bytes(b"")
    (voc / "annotations" / "a.xml").write_text(voc_xml("a.jpg", (640, 480), [("mask", (1, 1, 50, 50))]))
    rc, _, err = run(capsys, voc, "--model", tiny_classifier, "--out", tmp_path / "out")
    assert rc == 2 and "a.jpg" in err and "could be read" in err


def all_scenes_in_test_split(voc: Path, dataset: Path) -> Path:
    from device.manifest import Row, write_manifest

    dataset.mkdir()
    rows = [Row(f"with_mask/{p.stem}.jpg", "with_mask", f"{p}#box0", "0" * 64, "0" * 16, f"g{p.stem}", 50, 50, "test")
            for p in sorted((voc / "images").iterdir())]
    write_manifest(dataset, rows)
    return dataset


def test_scene_benchmark_checks_the_targets_on_the_default_detector(tmp_path, voc_dir, tiny_classifier,
                                                                    detector_model, capsys, monkeypatch):
    from benchmarks import scenes
    from train.scenes import runner

    # Whatever the daemon's default becomes, this test measures short range as "the default".
    monkeypatch.setattr(runner, "daemon_default_kind", lambda: "short")

    dataset = all_scenes_in_test_split(voc_dir, tmp_path / "dataset")
    model = classifier_with_threshold(tiny_classifier, tmp_path / "flag-all", 0.0)
    common = ["--voc", str(voc_dir), "--model", str(model), "--data", str(dataset), "--detector", "short",
              "--detector", "full", "--threads", "1", "--out", str(tmp_path / "out")]
    # Found 4 of 7, 1 of 3 masked >= 32 px, 2 of 3 no-mask faces flagged, precision 2/3 (see above).
    assert scenes.main([*common, "--target", "found=0.57", "--target", "masked_found_32px=0.33",
                        "--target", "alert_recall=0.66", "--target", "flagged_precision=0.66"]) == 0
    out = capsys.readouterr().out
    assert "PASS  found: 0.5714 (target >= 0.57); 4 of 7, 95 % interval 0.250-0.842" in out and "MISS" not in out
    assert "default detector, short 128x128" in out

    assert scenes.main([*common, "--target", "found=0.58", "--target", "masked_found_32px=0.33",
                        "--target", "alert_recall=0.66", "--target", "flagged_precision=0.66"]) == 1
    out = capsys.readouterr().out
    assert "MISS  found: 0.5714 (target >= 0.58)" in out and "PASS  alert_recall" in out
    targets = json.loads((tmp_path / "out" / "targets.json").read_text())
    assert targets["detector"] == "short 128x128 + mirror" and not targets["all_passed"]
    found = next(t for t in targets["targets"] if t["name"] == "found")
    assert found["faces"] == [4, 7] and found["interval_95"] == pytest.approx([0.2505, 0.8418], abs=1e-4)

    assert scenes.main([*common, "--target", "speed=3"]) == 2
    assert "speed=3" in capsys.readouterr().err
    assert scenes.main([*common[:3], str(tmp_path / "none.tflite"), *common[4:]]) == 2
    assert "make bench" in capsys.readouterr().err


def test_pipeline_gets_the_daemons_default_detector_settings():
    from device.config import DetectorConfig
    from train.scenes.runner import daemon_pipeline_options

    options = daemon_pipeline_options(None)
    assert options["min_face"] == DetectorConfig().min_face
    assert options["ignore_regions"] == DetectorConfig().ignore_regions
    assert daemon_pipeline_options(0)["min_face"] == 0
