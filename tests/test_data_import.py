"""`maskwatch data import` on the real datasets in ../shared and on generated bad/quirky files.

The two big imports run once per session (``imported_dataset``) and are shared with the split
and report tests, which import the helpers below.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.contract import expand_box, normalize_label
from device.manifest import read_manifest
from train import cli
from train.data.importer import REPORT, ImportReport, import_sources

# ---------------------------------------------------------------------------------------------
# Helpers shared with test_data_split / test_data_report / test_data_fetch
# ---------------------------------------------------------------------------------------------

_IMPORTS: dict[str, tuple[Path, ImportReport]] = {}


def imported_dataset(name: str, source: Path, tmp_path_factory) -> tuple[Path, ImportReport]:
    """Import ``source`` once per test session (the big real imports take seconds each)."""
    if name not in _IMPORTS:
        out = tmp_path_factory.mktemp(f"import-{name}") / "ds"
        _IMPORTS[name] = (out, import_sources([source], out))
    return _IMPORTS[name]


def smooth_image(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    """A photo-like image (low-frequency colour field): distinct per seed, stable under re-encoding."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def make_tree(root: Path, per_label: int = 3, seed: int = 0) -> Path:
    """with_mask/ and without_mask/ with a few distinct JPEG and PNG images."""
    for k, label in enumerate(("with_mask", "without_mask")):
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            fmt = "PNG" if i % 2 else "JPEG"
            smooth_image(seed + 100 * k + i).save(root / label / f"img{i}.{fmt.lower()}", fmt)
    return root


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def visible_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# faces-classify (folder per class)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classify(shared, tmp_path_factory):
    return imported_dataset("classify", shared / "datasets" / "faces-classify", tmp_path_factory)


@pytest.mark.slow
def test_classify_counts_match_the_files(shared, classify):
    out, report = classify
    src = shared / "datasets" / "faces-classify"
    files = visible_files(src)
    shas = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    label_of = {f: normalize_label(f.relative_to(src).parts[0]) for f in files}
    distinct = {(shas[f], label_of[f]) for f in files}

    assert report.seen == len(files)
    assert report.imported + report.skipped + report.duplicates_dropped == report.seen
    # Exact copies under one label are dropped, one kept: what is left is one row per (bytes, label).
    assert report.duplicates_dropped == len(files) - len(distinct)
    assert report.exact_duplicate_groups == sum(1 for n in Counter(shas.values()).values() if n > 1)
    assert report.exact_duplicate_groups >= 50  # the README promises 100+ byte-identical duplicates

    rows = read_manifest(out)
    assert len(rows) == report.imported == len(distinct) - report.skipped
    assert Counter(r.label for r in rows) == Counter(
        lab for (_sha, lab) in distinct) - Counter(label_of[Path(s["path"])] for s in report.skipped_files)
    assert all((out / r.path).is_file() for r in rows)
    assert len({r.path for r in rows}) == len(rows)
    assert all(r.path.isascii() for r in rows)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    assert on_disk == {r.path for r in rows}  # dropped duplicates leave no file behind

    data = json.loads((out / REPORT).read_text(encoding="utf-8"))
    assert data["seen"] == report.seen and len(data["dropped_duplicates"]) == report.duplicates_dropped
    for d in data["dropped_duplicates"]:
        assert shas[Path(d["source"])] == shas[Path(d["kept_source"])]


@pytest.mark.slow
def test_classify_groups_are_consistent(classify):
    out, report = classify
    rows = read_manifest(out)
    by_sha: dict[str, set[str]] = {}
    for r in rows:
        by_sha.setdefault(r.sha256, set()).add(r.group)
        assert len(r.phash) == 16 and int(r.phash, 16) >= 0
    assert all(len(g) == 1 for g in by_sha.values())  # same bytes => same group
    sizes = Counter(r.group for r in rows)
    assert sum(1 for n in sizes.values() if n > 1) == report.near_duplicate_groups + sum(
        1 for c in report.conflicts if c["kind"] == "exact")
    for c in report.conflicts:
        assert len({r["label"] for r in c["rows"]}) > 1


@pytest.mark.slow
def test_classify_quirk_files_import_as_rgb_jpeg(shared, classify):
    out, _ = classify
    src = shared / "datasets" / "faces-classify"
    by_source = {r.source: r for r in read_manifest(out)}
    mislabelled, rgba, non_ascii = [], [], []
    for f in visible_files(src):
        with Image.open(f) as im:
            fmt, mode = im.format, im.mode
        if {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(f.suffix.lower()) != fmt:
            mislabelled.append(f)  # content does not match the name
        if mode == "RGBA":
            rgba.append(f)
        if not f.name.isascii():
            non_ascii.append(f)
    assert mislabelled and rgba and non_ascii, "faces-classify lost its quirk files?"
    assert {Image.open(f).format for f in mislabelled} >= {"PNG", "WEBP"}  # PNG as .jpg, x.jpg_1088Wx1632H
    for f in mislabelled + rgba[:10] + non_ascii[:10]:
        row = by_source.get(str(f))
        if row is None:  # an exact copy of an earlier file: dropped, and said so
            dropped = json.loads((out / REPORT).read_text(encoding="utf-8"))["dropped_duplicates"]
            assert str(f) in {d["source"] for d in dropped}
            continue
        assert row.path.isascii() and row.path.endswith(".jpg")
        with Image.open(out / row.path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (row.width, row.height))
        with Image.open(f) as orig:
            assert orig.size == (row.width, row.height)


# ---------------------------------------------------------------------------------------------
# faces-voc (PASCAL VOC)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocset(shared, tmp_path_factory):
    return imported_dataset("voc", shared / "datasets" / "faces-voc", tmp_path_factory)


def _voc_boxes(src: Path) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Independent reading of the annotations: {source#boxN: (label, box)}."""
    boxes = {}
    for xml in sorted((src / "annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        image = src / "images" / root.findtext("filename")
        for k, obj in enumerate(root.findall("object")):
            box = tuple(float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes[f"{image}#box{k}"] = (normalize_label(obj.findtext("name")), box)
    return boxes


@pytest.mark.slow
def test_voc_counts_match_the_boxes(shared, vocset):
    out, report = vocset
    src = shared / "datasets" / "faces-voc"
    boxes = _voc_boxes(src)
    small = {s for s, (_lab, b) in boxes.items() if max(b[2] - b[0], b[3] - b[1]) < 16}

    assert report.seen == len(boxes)
    assert report.imported + report.skipped + report.duplicates_dropped == report.seen
    assert report.skipped_by_reason.get("too_small", 0) == len(small) > 0
    lost = [s["path"] for s in report.skipped_files] + [d["source"] for d in report.dropped_duplicates]
    assert set(lost) <= set(boxes)
    expected = Counter(lab for s, (lab, _b) in boxes.items()) - Counter(boxes[s][0] for s in lost)
    rows = read_manifest(out)
    assert Counter(r.label for r in rows) == expected
    assert {"with_mask", "without_mask", "incorrect_mask"} == set(expected)  # mask_weared_incorrect mapped
    assert {r.source for r in rows} == set(boxes) - set(lost)


@pytest.mark.slow
def test_voc_crops_use_the_device_margin_unresized(shared, vocset):
    out, _ = vocset
    src = shared / "datasets" / "faces-voc"
    boxes = _voc_boxes(src)
    rows = read_manifest(out)
    for r in rows[:: max(1, len(rows) // 25)]:
        image_path, _ = r.source.split("#box")
        _lab, box = boxes[r.source]
        with Image.open(image_path) as im:
            scene = np.asarray(im.convert("RGB"))
        x0, y0, x1, y1 = expand_box(box, 0.2, scene.shape[1], scene.shape[0])
        assert (r.width, r.height) == (x1 - x0, y1 - y0)
        crop = np.asarray(Image.open(out / r.path).convert("RGB"), dtype=np.float32)
        assert np.abs(crop - scene[y0:y1, x0:x1]).mean() < 6  # same pixels, up to JPEG noise


def test_voc_min_face_and_margin_are_options(tmp_path):
    voc = tmp_path / "voc"
    (voc / "images").mkdir(parents=True)
    (voc / "annotations").mkdir()
    smooth_image(1, (200, 100)).save(voc / "images" / "scene.jpg")
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in [("with_mask", (10, 10, 50, 50)), ("no_mask", (100, 20, 110, 30)),
                     ("mask_weared_incorrect", (150, 40, 190, 90)), ("cat", (60, 60, 80, 80)),
                     ("with_mask", (300, 300, 320, 320))]
    )
    (voc / "annotations" / "scene.xml").write_text(
        f"<annotation><filename>scene.jpg</filename><size><width>200</width><height>100</height></size>"
        f"{objects}</annotation>")
    report = import_sources([voc], tmp_path / "out", margin=0.0, min_face=16)
    assert report.seen == 5 and report.imported == 2
    assert report.skipped_by_reason == {"bad_box": 1, "too_small": 1, "unknown_class": 1}
    rows = {r.source.rsplit("#", 1)[1]: r for r in read_manifest(tmp_path / "out")}
    assert (rows["box0"].label, rows["box0"].width, rows["box0"].height) == ("with_mask", 40, 40)
    assert rows["box2"].label == "incorrect_mask" and (rows["box2"].width, rows["box2"].height) == (50, 50)
    report = import_sources([voc], tmp_path / "out2", margin=0.2, min_face=5)
    assert report.imported == 3 and report.skipped_by_reason == {"bad_box": 1, "unknown_class": 1}


# ---------------------------------------------------------------------------------------------
# Bad input, quirks, archives, duplicates, atomic output
# ---------------------------------------------------------------------------------------------


def test_bad_files_are_skipped_and_reported(tmp_path, capsys):
    src = make_tree(tmp_path / "src")
    good = encoded(smooth_image(7), "JPEG")
    png = encoded(smooth_image(8), "PNG")
    bad = {
        "with_mask/truncated.jpg": good[: len(good) // 2],
        "with_mask/empty.jpg": b"",
        "with_mask/notes.jpg": b"this is a text file, not a photo\n",
        "without_mask/corrupt.png": png[:60] + bytes(50) + png[110:],
        "without_mask/readme.txt": b"hello",
    }
    for rel, data in bad.items():
        (src / rel).write_bytes(data)
    assert cli.main(["data", "import", str(src), "--out", str(tmp_path / "out")]) == 0
    console = capsys.readouterr().out

    report = json.loads((tmp_path / "out" / REPORT).read_text(encoding="utf-8"))
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]}
    assert reasons == {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.jpg": "not_an_image",
                       "corrupt.png": "corrupt", "readme.txt": "not_an_image"}
    assert (report["seen"], report["imported"], report["skipped"]) == (11, 6, 5)
    assert len(read_manifest(tmp_path / "out")) == 6
    for name in reasons:
        assert name in console
    assert "skipped 5" in console


def test_quirky_modes_become_rgb(tmp_path):
    src = tmp_path / "src" / "WithMask"  # a class folder given directly, alias name
    src.mkdir(parents=True)
    base = smooth_image(3, (40, 20))
    rgba = base.convert("RGBA")
    alpha = np.full((20, 40), 255, np.uint8)
    alpha[:, :10] = 0  # left quarter fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(src / "rgba.png")
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(src / "palette.png", transparency=0)
    base.convert("L").save(src / "grey.png")
    base.convert("CMYK").save(src / "cmyk.jpg")
    Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(src / "sixteen.png")
    (src / "webp-named.jpg").write_bytes(encoded(base, "WEBP"))
    (src / "photo.jpg_1088Wx1632H").write_bytes(encoded(base, "PNG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees
    base.save(src / "rotated.jpg", exif=exif.tobytes())
    smooth_image(4, (40, 20)).save(src / "masque_été_😷.png")

    report = import_sources([src], tmp_path / "out")
    assert report.skipped == 0 and report.imported == 9 and report.per_label == {"with_mask": 9}
    rows = {Path(r.source).name: r for r in read_manifest(tmp_path / "out")}
    for name, r in rows.items():
        with Image.open(tmp_path / "out" / r.path) as im:
            assert (im.format, im.mode) == ("JPEG", "RGB"), name
        assert r.path.isascii()
    assert (rows["rotated.jpg"].width, rows["rotated.jpg"].height) == (20, 40)
    assert (rows["grey.png"].width, rows["grey.png"].height) == (40, 20)
    white = np.asarray(Image.open(tmp_path / "out" / rows["rgba.png"].path))
    assert white[:, :8].min() > 240  # transparent pixels composited on white
    assert abs(np.asarray(Image.open(tmp_path / "out" / rows["sixteen.png"].path), np.float32).mean()
               - np.asarray(base.convert("L"), np.float32).mean()) < 3  # 16-bit scaled, not clipped
    assert "masque_été_😷.png" in rows  # the original name survives in `source`
    assert rows["photo.jpg_1088Wx1632H"].path == "with_mask/photo.jpg_1088Wx1632H.jpg"


def test_missing_path_and_no_classes_are_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope"):
        import_sources([tmp_path / "nope"], tmp_path / "out")
    junk = tmp_path / "junk"
    (junk / "cats").mkdir(parents=True)
    (junk / "dogs").mkdir()
    smooth_image(0).save(junk / "cats" / "a.jpg")
    with pytest.raises(ValueError, match=r"junk.*no class folders.*cats/"):
        import_sources([junk], tmp_path / "out")
    assert cli.main(["data", "import", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "source not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["junk"]  # no temporary folder left behind


def test_folders_that_are_not_classes_are_ignored_and_named(tmp_path):
    src = make_tree(tmp_path / "src")
    (src / "thumbnails").mkdir()
    smooth_image(50).save(src / "thumbnails" / "t.jpg")
    (src / "README.md").write_text("about")
    report = import_sources([src], tmp_path / "out")
    assert report.imported == 6
    assert sorted(Path(p).name for p in report.ignored) == ["README.md", "thumbnails"]


def _zip_tree(tree: Path, path: Path, prefix: str = "dataset/") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in visible_files(tree):
            zf.write(f, prefix + f.relative_to(tree).as_posix())
    return path


def test_archives_import_and_merge(tmp_path):
    tree = make_tree(tmp_path / "tree")
    smooth_image(77).save(tree / "with_mask" / "ünïcode.png")
    zipped = _zip_tree(tree, tmp_path / "set.zip")
    tarred = tmp_path / "set.tar.gz"
    with tarfile.open(tarred, "w:gz") as tf:
        tf.add(tree, arcname="wrapper")
    report = import_sources([zipped], tmp_path / "a")
    assert (report.imported, report.skipped) == (7, 0)
    sources = {r.source for r in read_manifest(tmp_path / "a")}
    assert f"{zipped}!/dataset/with_mask/ünïcode.png" in sources

    report = import_sources([tarred, zipped], tmp_path / "b")
    # The same seven files twice: the second copies are exact duplicates and are dropped.
    assert (report.seen, report.imported, report.duplicates_dropped) == (14, 7, 7)
    assert all(r.source.startswith(str(tarred)) for r in read_manifest(tmp_path / "b"))


def test_a_wrapper_named_like_a_label_is_not_a_class(tmp_path):
    """``masks/with_mask/…`` + ``masks/without_mask/…``: "masks" is an alias of with_mask, but a
    folder holding class folders is a wrapper; before the fix every face came out with_mask."""
    tree = make_tree(tmp_path / "masks")
    for src in ([tmp_path / "masks"], [_zip_tree(tree, tmp_path / "masks.zip", prefix="masks/")]):
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        report = import_sources(src, out)
        assert report.imported == 6
        assert Counter(r.label for r in read_manifest(out)) == {"with_mask": 3, "without_mask": 3}
    # A class folder of that name without class folders inside is still a class.
    plain = tmp_path / "plain" / "masks"
    plain.mkdir(parents=True)
    smooth_image(5).save(plain / "a.png")
    import_sources([tmp_path / "plain"], tmp_path / "out-plain")
    assert [r.label for r in read_manifest(tmp_path / "out-plain")] == ["with_mask"]


def test_archive_with_path_traversal_is_rejected(tmp_path):
    tree = make_tree(tmp_path / "tree")
    evil = _zip_tree(tree, tmp_path / "evil.zip")
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("../escaped.jpg", encoded(smooth_image(1), "JPEG"))
    with pytest.raises(ValueError, match="path traversal"):
        import_sources([evil], tmp_path / "out")
    evil_tar = tmp_path / "evil.tar.gz"
    with tarfile.open(evil_tar, "w:gz") as tf:
        tf.add(tree, arcname="ok")
        data = encoded(smooth_image(2), "JPEG")
        info = tarfile.TarInfo("/tmp/absolute.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="outside"):
        import_sources([evil_tar], tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escaped.jpg").exists()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(evil.read_bytes()[:200])
    with pytest.raises(ValueError, match="broken.zip"):
        import_sources([broken], tmp_path / "out")


def test_duplicates_near_duplicates_and_conflicts(tmp_path, capsys):
    src = make_tree(tmp_path / "src")
    photo = src / "with_mask" / "img0.jpeg"
    shutil.copy(photo, src / "with_mask" / "z_copy.jpeg")  # exact, same label, sorts last -> dropped
    Image.open(photo).resize((80, 80)).save(src / "with_mask" / "smaller.jpg", quality=70)  # near -> kept
    shutil.copy(photo, src / "without_mask" / "mislabelled.jpg")  # exact, other label -> conflict
    assert cli.main(["data", "import", str(src), "--out", str(tmp_path / "out")]) == 0
    console = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / REPORT).read_text(encoding="utf-8"))
    rows = {"/".join(Path(r.source).parts[-2:]): r for r in read_manifest(tmp_path / "out")}
    assert (report["seen"], report["imported"], report["duplicates_dropped"]) == (9, 8, 1)
    assert "with_mask/z_copy.jpeg" not in rows and report["dropped_duplicates"][0]["kept_source"] == str(photo)
    assert rows["with_mask/img0.jpeg"].group == rows["with_mask/smaller.jpg"].group == rows[
        "without_mask/mislabelled.jpg"].group
    assert len({r.group for r in rows.values()}) == 6
    assert report["exact_duplicate_groups"] == 1 and report["near_duplicate_groups"] == 1
    [conflict] = report["conflicts"]
    assert conflict["labels"] == ["with_mask", "without_mask"]
    assert "CONFLICTS" in console and "mislabelled.jpg" in console

    strict = import_sources([src], tmp_path / "strict", near_threshold=0)
    groups = {"/".join(Path(r.source).parts[-2:]): r.group for r in read_manifest(tmp_path / "strict")}
    assert groups["with_mask/smaller.jpg"] != groups["with_mask/img0.jpeg"] == groups["without_mask/mislabelled.jpg"]
    assert strict.near_duplicate_groups == 0


def test_existing_output_needs_force_and_survives_a_failed_import(tmp_path):
    src = make_tree(tmp_path / "src")
    out = tmp_path / "out"
    import_sources([src], out)
    before = (out / "manifest.csv").read_bytes()
    with pytest.raises(ValueError, match="already exists.*--force"):
        import_sources([src], out)
    junk = tmp_path / "junk"
    (junk / "other").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class folders"):
        import_sources([junk], out, force=True)
    assert (out / "manifest.csv").read_bytes() == before  # the failed --force import changed nothing
    smooth_image(99).save(src / "without_mask" / "new.png")
    report = import_sources([src], out, force=True)
    assert report.imported == 7 and len(read_manifest(out)) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk", "out", "src"]  # no temp folders left
    with pytest.raises(ValueError, match="would contain or replace the source"):
        import_sources([src], tmp_path, force=True)


def test_merged_sources_keep_names_unique(tmp_path):
    a = make_tree(tmp_path / "a", seed=0)
    b = make_tree(tmp_path / "b", seed=500)  # same file names, different photos
    (b / "with_mask" / "img0.jpeg").rename(b / "with_mask" / "IMG0.jpeg")
    report = import_sources([a, b], tmp_path / "out")
    rows = read_manifest(tmp_path / "out")
    assert report.imported == len(rows) == 12
    assert len({r.path.lower() for r in rows}) == 12


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def test_near_pairs_match_brute_force_and_groups_are_transitive():
    from train.data import dedup

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 700, dtype=np.uint64)
    hashes[10] = hashes[3] ^ np.uint64(0b1011)  # 3 bits from 3
    hashes[20] = hashes[10] ^ np.uint64(1 << 60)  # 1 bit from 10, 4 from 3
    hashes[30] = hashes[20] ^ np.uint64(0b111 << 30)  # 3 bits from 20
    assert np.array_equal(dedup.popcount64(hashes), dedup.popcount64_table(hashes))
    ints = [int(h) for h in hashes]
    brute = {(i, j) for i in range(700) for j in range(i + 1, 700) if (ints[i] ^ ints[j]).bit_count() <= 3}
    assert {tuple(p) for p in dedup.near_pairs(hashes, 3).tolist()} == brute == {(3, 10), (10, 20), (20, 30)}

    hexes = [f"{h:016x}" for h in ints]
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(700)]
    shas[500] = shas[0]  # an exact copy joins too
    ids = dedup.group_ids(shas, hexes, 3)
    assert ids[3] == ids[10] == ids[20] == ids[30] != ids[4]
    assert ids[0] == ids[500] and len(set(ids)) == 700 - 3 - 1
    order = list(range(700))[::-1]  # ids do not depend on the order of the items
    again = dedup.group_ids([shas[i] for i in order], [hexes[i] for i in order], 3)
    assert [again[order.index(i)] for i in range(700)] == ids


def test_safe_names_are_ascii_stable_and_distinct():
    from train.data.importer import safe_stem

    assert safe_stem("0_0_0 copy 2.png") == "0_0_0_copy_2"
    assert safe_stem("black3.jpg_1088Wx1632H") == "black3.jpg_1088Wx1632H"
    a, b = safe_stem("1_0_≈˙◊¢ 2020-02-24 215624.png"), safe_stem("1_0_≈˙◊ 2020-02-24 215624.png")
    assert a.isascii() and b.isascii() and a != b and a == safe_stem("1_0_≈˙◊¢ 2020-02-24 215624.png")
    assert safe_stem("口罩.jpg").startswith("image-") and safe_stem("..jpg") == "image"
