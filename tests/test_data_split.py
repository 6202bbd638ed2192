"""`maskwatch data split`: leak-free (groups whole), stratified, reproducible by seed."""

from __future__ import annotations

import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from device.manifest import Row, read_manifest, write_manifest
from tests.test_data_import import imported_dataset
from train import cli
from train.data.split import assign_splits, leaking_groups, split_dataset


@pytest.fixture
def classify_manifest(shared, tmp_path_factory, tmp_path) -> Path:
    """A private copy of the faces-classify manifest (split needs no pixels)."""
    out, _ = imported_dataset("classify", shared / "datasets" / "faces-classify", tmp_path_factory)
    shutil.copy(out / "manifest.csv", tmp_path / "manifest.csv")
    return tmp_path


@pytest.mark.slow
def test_classify_split_keeps_duplicate_groups_whole_and_is_stratified(classify_manifest, capsys):
    rows = read_manifest(classify_manifest)
    sizes = Counter(r.group for r in rows)
    assert sum(n for n in sizes.values() if n > 1) >= 100  # there is something to leak
    assert cli.main(["data", "split", str(classify_manifest), "--seed", "3"]) == 0
    printed = capsys.readouterr().out

    rows = read_manifest(classify_manifest)
    assert all(r.split in ("train", "val", "test") for r in rows)
    assert leaking_groups(rows) == []
    splits_of = defaultdict(set)
    for r in rows:
        splits_of[r.group].add(r.split)
    assert all(len(s) == 1 for s in splits_of.values())
    for label in ("with_mask", "without_mask"):
        mine = [r for r in rows if r.label == label]
        share = Counter(r.split for r in mine)
        assert abs(share["val"] / len(mine) - 0.15) < 0.01, (label, share)
        assert abs(share["test"] / len(mine) - 0.15) < 0.01, (label, share)
        assert f"{label}" in printed and str(share["train"]) in printed


@pytest.mark.slow
def test_split_is_reproducible_by_seed_and_independent_of_row_order(classify_manifest):
    first = {r.path: r.split for r in split_dataset(classify_manifest, seed=0)}
    again = {r.path: r.split for r in split_dataset(classify_manifest, seed=0)}
    assert first == again
    other = {r.path: r.split for r in split_dataset(classify_manifest, seed=1)}
    assert other != first
    rows = read_manifest(classify_manifest)
    random.Random(5).shuffle(rows)
    write_manifest(classify_manifest, rows)
    shuffled = {r.path: r.split for r in split_dataset(classify_manifest, seed=0)}
    assert shuffled == first


def _rows(groups: dict[str, tuple[str, int]]) -> list[Row]:
    rows = []
    for gid, (label, n) in groups.items():
        rows += [Row(f"{label}/{gid}_{i}.jpg", label, "", f"{gid}{i}", "0" * 16, gid, 10, 10) for i in range(n)]
    return rows


def test_big_groups_stay_whole_and_fractions_are_met():
    groups = {f"a{i}": ("with_mask", 1) for i in range(170)}
    groups["big"] = ("with_mask", 30)
    groups |= {f"b{i}": ("without_mask", 1) for i in range(100)}
    rows = _rows(groups)
    assignment = assign_splits(rows, val=0.1, test=0.2, seed=0)
    for r in rows:
        r.split = assignment[r.group]
    assert leaking_groups(rows) == []
    for label, total in (("with_mask", 200), ("without_mask", 100)):
        got = Counter(r.split for r in rows if r.label == label)
        assert got["val"] == round(0.1 * total) and got["test"] == round(0.2 * total), got


def test_conflict_group_goes_with_its_majority_and_zero_val_means_no_val():
    rows = _rows({f"g{i}": ("with_mask", 1) for i in range(20)}) + _rows({"c": ("with_mask", 2)})
    rows.append(Row("without_mask/c_x.jpg", "without_mask", "", "cx", "0" * 16, "c", 10, 10))
    assignment = assign_splits(rows, val=0.0, test=0.25, seed=2)
    assert set(assignment.values()) == {"train", "test"}
    for r in rows:
        r.split = assignment[r.group]
    assert leaking_groups(rows) == []
    leak = [Row("a", "with_mask", "", "s", "0" * 16, "g", 1, 1, "train"),
            Row("b", "with_mask", "", "t", "0" * 16, "g", 1, 1, "test")]
    assert leaking_groups(leak) == ["g"]


def test_bad_fractions_and_missing_manifest_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="--val"):
        assign_splits(_rows({"a": ("with_mask", 1)}), val=0.6, test=0.5)
    assert cli.main(["data", "split", str(tmp_path)]) == 2
    assert "manifest.csv not found" in capsys.readouterr().err


def test_faces_of_one_scene_share_a_split():
    from device.manifest import Row
    from train.data.split import assign_splits

    rows = []
    for scene in range(40):
        for k in range(3):  # three different people in one photo: three groups
            label = "with_mask" if (scene + k) % 2 else "without_mask"
            rows.append(Row(f"{label}/s{scene}_{k}.jpg", label, f"voc/s{scene}.jpg#box{k}", f"{scene}{k}",
                            "0" * 16, f"g{scene}_{k}", 50, 50))
    assignment = assign_splits(rows, 0.2, 0.2, seed=1)
    for scene in range(40):
        assert len({assignment[f"g{scene}_{k}"] for k in range(3)}) == 1
    assert set(assignment.values()) == {"train", "val", "test"}


def test_crowded_scenes_are_not_all_sent_to_train():
    """Scene units of very different sizes (1 to 12 faces): every split gets its share of scene
    faces and of crowded scenes. Largest-first placement put every crowded scene in train."""
    from device.manifest import Row
    from train.data.split import assign_splits

    rows = [Row(f"with_mask/p{i}.jpg", "with_mask", f"classify/p{i}.jpg", f"p{i}", "0" * 16, f"p{i}", 90, 90)
            for i in range(300)]
    for scene in range(120):
        for k in range(1 + scene % 12):
            rows.append(Row(f"with_mask/s{scene}_{k}.jpg", "with_mask", f"voc/s{scene}.jpg#box{k}",
                            f"s{scene}_{k}", "0" * 16, f"g{scene}_{k}", 24, 24))
    assignment = assign_splits(rows, 0.15, 0.15, seed=0)
    scene_rows = [r for r in rows if "#box" in r.source]
    per_split = Counter(assignment[r.group] for r in scene_rows)
    for split, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        assert abs(per_split[split] / len(scene_rows) - fraction) < 0.06, per_split
    crowded = {f"g{s}_0" for s in range(120) if 1 + s % 12 >= 8}
    assert {assignment[g] for g in crowded} == {"train", "val", "test"}
