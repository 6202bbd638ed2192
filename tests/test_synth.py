"""``maskwatch data synth``: the built-in sample dataset and demo video."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.contract import WITH_MASK, WITHOUT_MASK
from device.manifest import read_manifest
from train.cli import main

N = 40


@pytest.fixture(scope="module")
def built(detector_model, tmp_path_factory) -> tuple[Path, Path]:
    """One run of the CLI: a small sample dataset and the demo video."""
    root = tmp_path_factory.mktemp("synth")
    ds, video = root / "sample", root / "video" / "walk.avi"
    assert main(["data", "synth", "--out", str(ds), "--n", str(N), "--seed", "0", "--video", str(video)]) == 0
    return ds, video


@pytest.fixture(scope="module")
def sources(detector_model):
    from device.detectors import make_detector
    from train.data.synth import load_sources

    return load_sources(make_detector("short"))


@pytest.mark.slow
def test_sample_dataset_is_balanced_imported_and_split(built):
    ds, _ = built
    rows = read_manifest(ds)
    assert len(rows) == N
    assert Counter(r.label for r in rows) == {WITH_MASK: N // 2, WITHOUT_MASK: N // 2}
    assert {r.split for r in rows} == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert {r.label for r in rows if r.split == split} == {WITH_MASK, WITHOUT_MASK}
    assert all((ds / r.path).is_file() and r.source.startswith("synth/") for r in rows)
    assert all(128 <= r.width <= 224 and r.width == r.height for r in rows)
    report = json.loads((ds / "import_report.json").read_text())
    assert report["imported"] == N and report["skipped"] == 0
    info = json.loads((ds / "synth.json").read_text())
    assert {s["name"] for s in info["sources"]} >= {"astronaut", "lfw_subset"}
    # Every face is used for both classes: the mask is the only difference between them.
    faces = {lab: Counter(s["face"] for s in info["samples"] if s["label"] == lab) for lab in (WITH_MASK, WITHOUT_MASK)}
    assert faces[WITH_MASK] == faces[WITHOUT_MASK]


def test_render_sample_is_seeded_and_the_mask_is_the_difference(sources):
    from train.data.synth import load_backgrounds, render_sample

    bank = load_backgrounds()
    src = next(s for s in sources if s.name == "astronaut")
    a = render_sample(src, True, np.random.default_rng(5), bank)
    b = render_sample(src, True, np.random.default_rng(5), bank)
    c = render_sample(src, False, np.random.default_rng(5), bank)
    assert np.array_equal(a, b)
    assert a.shape == c.shape and a.shape[0] == a.shape[1]
    # Same generator, same augmentation: the images differ by the mask alone, so on the lower
    # face and not on the forehead.
    d = np.abs(a.astype(int) - c.astype(int)).sum(axis=2)
    h = d.shape[0]
    assert d[: int(0.15 * h)].mean() < 1.0
    assert d[int(0.55 * h):int(0.85 * h), int(0.3 * h):int(0.7 * h)].mean() > 15
    assert np.nonzero(d > 30)[0].mean() > 0.45 * h
    lfw = [s for s in sources if s.tight]
    assert len(lfw) >= 90 and all(s.grey for s in lfw)


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    assert main(["data", "synth"]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--n", "7"]) == 2
    assert "--n" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "8"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "synth", "--video", str(tmp_path / "v.mp4")]) == 2
    assert ".avi" in capsys.readouterr().err


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.slow
def test_video_frames_ground_truth_and_detector_rate(built):
    from device.detectors import make_detector
    from train.data.synth import video_paths

    _, video = built
    frames_dir, truth_path = video_paths(video)
    truth = json.loads(truth_path.read_text())
    cap = cv2.VideoCapture(str(video))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == truth["frames"]
        ok, first = cap.read()
    finally:
        cap.release()
    assert ok and first.shape == (480, 640, 3)
    frames = sorted(frames_dir.glob("*.jpg"))
    assert len(frames) == truth["frames"]
    assert 15 <= truth["frames"] / truth["fps"] <= 30

    people = truth["people"]
    assert len(people) == 6
    assert Counter(p["label"] for p in people) == {WITH_MASK: 3, WITHOUT_MASK: 3}
    # People are apart: in time, or (the pair walking together) well apart in space.
    for i, p in enumerate(people):
        assert p["first_frame"] < p["last_frame"] and len(p["boxes"]) >= 12
        for q in people[i + 1:]:
            if p["last_frame"] < q["first_frame"]:
                continue
            shared = {b["frame"]: b["box"] for b in p["boxes"]}
            for b in q["boxes"]:
                if b["frame"] in shared:
                    assert _iou(shared[b["frame"]], b["box"]) == 0.0
    at_once = Counter(b["frame"] for p in people for b in p["boxes"])
    assert max(at_once.values()) <= 2
    for p in people:
        sides = [b["box"][2] - b["box"][0] for b in p["boxes"]]
        assert min(sides) >= 80 and max(sides) <= 200

    # The short-range detector finds the drawn faces (measured: every one of 123 face-frames).
    detector = make_detector("short")
    hits = total = 0
    for f, boxes in sorted(_boxes_by_frame(people).items()):
        from PIL import Image

        found = detector.detect(np.asarray(Image.open(frames_dir / f"{f:06d}.jpg").convert("RGB")))
        for box in boxes:
            total += 1
            hits += any(_iou(d.box, box) > 0.4 for d in found)
    assert total > 100
    assert hits / total >= 0.9, f"detector found {hits} of {total} faces"


def _boxes_by_frame(people: list[dict]) -> dict[int, list]:
    out: dict[int, list] = {}
    for p in people:
        for b in p["boxes"]:
            out.setdefault(b["frame"], []).append(b["box"])
    return out
