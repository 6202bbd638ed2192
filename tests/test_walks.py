"""The frames the daemon tests and ``make bench-device`` are built from (``train/data/walks.py``),
the public-domain faces pasted into them, and the config file written for such a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from device.detectors import make_detector
from train.data.walks import FRAME_H, FRAME_W, Walk, background, paste, render, two_people_walks, write_frames
from train.toml_writer import to_toml


def test_walk_moves_in_a_straight_line_and_is_absent_outside_its_frames():
    w = Walk(face=0, first=10, last=20, x0=100, x1=200, y=50)
    assert w.position(9) is None and w.position(21) is None
    assert w.position(10) == (100, 50) and w.position(15) == (150, 50) and w.position(20) == (200, 50)
    assert Walk(face=0, first=3, last=3, x0=7, x1=9).position(3) == (7, 120)  # one frame: its start


def test_paste_clips_at_the_frame_edge_and_returns_the_visible_box():
    frame = np.zeros((40, 60, 3), np.uint8)
    face = np.full((10, 20, 3), 200, np.uint8)
    assert paste(frame, face, -5, 35, 20) == (0, 35, 15, 40)
    assert (frame[35:40, 0:15] == 200).all() and frame[:35].max() == 0 and frame[:, 15:].max() == 0


def test_render_draws_each_walk_only_while_it_is_in_view(tmp_path):
    face = np.full((30, 30, 3), 255, np.uint8)
    frames = render([face], [Walk(face=0, first=1, last=2, x0=0, x1=10, y=0, width=30)], 4)
    bg = background(0)
    assert len(frames) == 4 and frames[0].shape == (FRAME_H, FRAME_W, 3)
    assert np.array_equal(frames[0], bg) and np.array_equal(frames[3], bg)
    assert (frames[1][0:30, 0:30] == 255).all() and (frames[2][0:30, 10:40] == 255).all()
    folder = write_frames(tmp_path / "f", frames)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png", "00003.png"]


@pytest.fixture(scope="module")
def short(detector_model):
    return make_detector("short", detector_model, min_face=0, num_threads=1)


def test_portraits_are_real_faces_blazeface_finds_at_the_sizes_the_tests_paste(faces, short):
    assert len(faces) == 2 and all(f.dtype == np.uint8 and f.ndim == 3 for f in faces)
    for k, face in enumerate([*faces, faces[0][:, ::-1]]):
        for width in (120, 170, 200, 260):
            for x, y in ((0, 0), (FRAME_W - width, 120), (250, FRAME_H - width)):
                frame = background(k)
                x0, y0, x1, y1 = paste(frame, face, x, y, width)
                found = short.detect(frame)
                assert len(found) == 1, (k, width, x, y, found)
                fx0, fy0, fx1, fy1 = found[0].box
                assert x0 <= (fx0 + fx1) / 2 <= x1 and y0 <= (fy0 + fy1) / 2 <= y1  # on the pasted face


def test_two_people_walk_is_seen_as_two_people_at_once(faces, short):
    counts = [len(short.detect(f)) for f in render(faces, two_people_walks(), 36)]
    assert counts[:12] == [1] * 12 and 2 in counts[12:24] and counts[-2:] == [0, 0]
    assert max(counts) == 2


def test_config_written_as_toml_reads_back_equal(tmp_path):
    cfg = {"device_id": "pi", "ratio": 0.5, "on": True, "camera": {"path": Path("/x y/\"q\""), "fps": 20.0},
           "detector": {"ignore_regions": [[0, 0, 10, 10]], "kind": "short"}}
    back = tomllib.loads(to_toml(cfg))
    assert back == {**cfg, "camera": {"path": '/x y/"q"', "fps": 20.0}}
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"x": object()})
