"""``maskwatch-device detect``: text, JSON Lines, annotated images, and bad files that do not stop the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from device.cli import main
from tests.conftest import ROOT


@pytest.fixture
def media(shared, detector_model):
    return shared / "media"


def test_text_output_lists_faces_per_image(media, capsys):
    rc = main(["detect", str(media / "pic1.jpeg"), str(media / "pic3.jpg")])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"{media / 'pic1.jpeg'}: 2 faces (840x549)" in out
    assert f"{media / 'pic3.jpg'}: 1 face (474x248)" in out
    assert out.count("score ") == 3 and out.count("box ") == 3


def test_json_lines_and_annotations_with_non_ascii_names(media, tmp_path, capsys):
    odd = tmp_path / "fotos ünï" / "图片 3.jpg"
    odd.parent.mkdir()
    shutil.copyfile(media / "pic3.jpg", odd)
    out_dir = tmp_path / "annotated"
    rc = main(["detect", str(media / "pic2.jpg"), str(odd), "--detector", "full", "--json",
               "--annotate", str(out_dir)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    records = [json.loads(line) for line in lines]
    assert [r["image"] for r in records] == [str(media / "pic2.jpg"), str(odd)]
    assert len(records[0]["faces"]) >= 3 and len(records[1]["faces"]) == 1
    face = records[1]["faces"][0]
    assert set(face) == {"box", "score", "keypoints"} and len(face["keypoints"]) == 6
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= records[1]["width"] and 0 <= y0 < y1 <= records[1]["height"]
    for r, src in zip(records, [media / "pic2.jpg", odd], strict=True):
        img = cv2.imdecode(np.fromfile(r["annotated"], np.uint8), cv2.IMREAD_COLOR)
        orig = cv2.imdecode(np.fromfile(str(src), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == orig.shape
        # Boxes were drawn: the annotated image differs from the photo along the first box's top edge.
        fx0, fy0, fx1, _ = (int(round(v)) for v in r["faces"][0]["box"])
        edge = np.abs(img[fy0, fx0 + 5:fx1 - 5].astype(int) - orig[fy0, fx0 + 5:fx1 - 5].astype(int))
        assert edge.mean() > 40
    assert sorted(p.name for p in out_dir.iterdir()) == ["pic2.jpg", "图片 3.jpg"]


def test_yunet_json_has_null_ears(media, shared, capsys):
    model = shared / "models" / "face_detection_yunet_2023mar.onnx"
    rc = main(["detect", str(media / "demo2.jpg"), "--detector", "yunet", "--model", str(model), "--json"])
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and len(record["faces"]) == 1
    assert record["faces"][0]["keypoints"][4:] == [[None, None], [None, None]]


def test_unreadable_images_are_reported_and_the_rest_still_run(media, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    rc = main(["detect", str(broken), str(media / "demo2.jpg"), str(empty), str(missing), str(tmp_path)])
    captured = capsys.readouterr()
    assert rc == 1
    assert f"{media / 'demo2.jpg'}: 1 face" in captured.out
    err = captured.err.splitlines()
    for bad in (broken, empty, missing, tmp_path):
        assert any(line.startswith("error: ") and str(bad) in line for line in err), (bad, err)
    assert "4 of 5 image(s) could not be read" in captured.err


def test_command_line_errors_exit_2_with_one_line(media, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MASKWATCH_MODELS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", "detect", str(media / "pic3.jpg"), "--detector", "yunet"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert "error: " in proc.stderr and "face_detection_yunet_2023mar_" in proc.stderr
    assert "maskwatch convert-detector" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(media):
    """``maskwatch-device detect --json ... | head -1``: no BrokenPipeError traceback."""
    files = [str(p) for p in sorted(media.iterdir())] * 40
    proc = subprocess.Popen([sys.executable, "-m", "device.cli", "detect", "--json", *files], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away while the command still has lines to print
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert json.loads(first)["faces"]
    assert "Traceback" not in err and "BrokenPipe" not in err
