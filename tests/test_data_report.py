"""`maskwatch data report`: PNGs, JSON and a Markdown summary that agree with the manifest."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from device.manifest import read_manifest
from tests.test_data_import import imported_dataset, make_tree, smooth_image
from train import cli
from train.data.importer import import_sources
from train.data.split import split_dataset


@pytest.mark.slow
def test_report_on_faces_voc(shared, tmp_path_factory, tmp_path, capsys):
    out, imp = imported_dataset("voc", shared / "datasets" / "faces-voc", tmp_path_factory)
    ds = tmp_path / "ds"  # the images are shared read-only; the manifest is ours to split
    ds.mkdir()
    for label_dir in out.iterdir():
        if label_dir.is_dir():
            (ds / label_dir.name).symlink_to(label_dir)
    for name in ("manifest.csv", "import_report.json"):
        shutil.copy(out / name, ds / name)
    rows = split_dataset(ds, seed=0)

    assert cli.main(["data", "report", str(ds), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    rep = tmp_path / "rep"
    data = json.loads((rep / "report.json").read_text(encoding="utf-8"))
    assert data["images"] == len(rows) == imp.imported
    for label, cell in data["counts"].items():
        assert cell == {s: sum(r.label == label and r.split == s for r in rows) for s in ("train", "val", "test")}
    assert data["leaking_groups"] == [] and data["missing_files"] == []
    assert data["skipped"]["by_reason"]["too_small"] == imp.skipped_by_reason["too_small"]
    assert data["duplicates"]["near_groups_at_import"] == imp.near_duplicate_groups
    assert data["duplicates"]["groups_with_several_images"] == sum(
        1 for n in Counter(r.group for r in rows).values() if n > 1)

    labels = {r.label for r in rows}
    assert labels == {"with_mask", "without_mask", "incorrect_mask"}
    for label in labels:
        with Image.open(rep / f"contact_{label}.png") as sheet:
            assert sheet.format == "PNG" and sheet.width > 300 and sheet.height > 60
    with Image.open(rep / "sizes.png") as hist:
        assert hist.format == "PNG" and hist.size == (700, 400)
    assert (rep / "report.md").read_text(encoding="utf-8") in printed
    assert "incorrect_mask" in printed and "## Duplicates" in printed


def test_report_lists_conflicts_and_skips_and_defaults_to_dir_report(tmp_path, capsys):
    src = make_tree(tmp_path / "src", per_label=4)
    smooth_image(0).save(src / "without_mask" / "same_as_with_mask_img0.jpeg", "JPEG")  # conflict
    (src / "with_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    import_sources([src], tmp_path / "ds")
    rows = read_manifest(tmp_path / "ds")
    assert cli.main(["data", "report", str(tmp_path / "ds")]) == 0  # unsplit is fine
    printed = capsys.readouterr().out
    data = json.loads((tmp_path / "ds" / "report" / "report.json").read_text(encoding="utf-8"))
    assert data["split"] is False and "not split yet" in printed
    assert len(data["conflicts"]) == 1 and "same_as_with_mask_img0" in printed
    assert [Path(s["path"]).name for s in data["skipped"]["files"]] == ["broken.jpg"]
    assert "broken.jpg" in printed
    assert data["counts"]["with_mask"]["unsplit"] == sum(r.label == "with_mask" for r in rows)
    # A missing image is noticed (red tile, listed), not a crash.
    (tmp_path / "ds" / rows[0].path).unlink()
    assert cli.main(["data", "report", str(tmp_path / "ds"), "--out", str(tmp_path / "r2")]) == 0
    assert json.loads((tmp_path / "r2" / "report.json").read_text())["missing_files"] == [rows[0].path]
