"""Synthetic masks: geometry follows the keypoints; ``maskwatch data add-masks`` on real photos."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from device.contract import INCORRECT_MASK, WITH_MASK
from train.cli import main
from train.data.masks import (
    MOUTH,
    NOSE,
    PATTERNS,
    SHAPES,
    MaskStyle,
    draw_mask,
    face_frame,
    mask_polygon,
    random_style,
)

# A frontal face: eyes 60 px apart at y=200, nose tip 38 px and mouth 66 px below the eye line,
# ear tragions 62 px either side of the face centre (typical BlazeFace output, in pixels).
FACE = np.array([[170, 200], [230, 200], [200, 238], [200, 266], [138, 212], [262, 212]], np.float32)
BOX = (135.0, 165.0, 265.0, 300.0)


def inside(poly: np.ndarray, pt) -> bool:
    return cv2.pointPolygonTest(poly.astype(np.float32).reshape(-1, 1, 2), (float(pt[0]), float(pt[1])), False) > 0


def around(img: np.ndarray, pt, r: int = 2) -> np.ndarray:
    x, y = int(pt[0]), int(pt[1])
    return img[y - r:y + r + 1, x - r:x + r + 1]


def similarity(points: np.ndarray, angle_deg: float, scale: float, shift) -> np.ndarray:
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return points @ r.T + np.asarray(shift)


@pytest.mark.parametrize("shape", SHAPES)
def test_correct_mask_covers_nose_and_mouth_not_eyes(shape):
    poly = mask_polygon(FACE, MaskStyle(shape=shape))
    assert inside(poly, FACE[NOSE]) and inside(poly, FACE[MOUTH])
    assert not inside(poly, FACE[0]) and not inside(poly, FACE[1])
    # It reaches below the chin (about 0.7 eye-to-mouth lengths under the mouth) ...
    assert poly[:, 1].max() > FACE[MOUTH, 1] + 0.5 * (FACE[MOUTH, 1] - 200)
    # ... and most of the way out to the ears, but not past them.
    assert poly[:, 0].min() < 160 and poly[:, 0].max() > 240
    assert poly[:, 0].min() > FACE[4, 0] - 2 and poly[:, 0].max() < FACE[5, 0] + 2


@pytest.mark.parametrize("shape", SHAPES)
def test_below_nose_mask_leaves_nose_tip_uncovered(shape):
    poly = mask_polygon(FACE, MaskStyle(shape=shape, placement="below_nose"))
    assert not inside(poly, FACE[NOSE])
    assert inside(poly, FACE[MOUTH])
    assert MaskStyle(placement="below_nose").label == INCORRECT_MASK and MaskStyle().label == WITH_MASK


@pytest.mark.parametrize("angle,scale", [(30.0, 2.0), (-45.0, 0.5), (90.0, 1.3), (180.0, 1.0)])
def test_mask_turns_and_scales_with_the_eye_line(angle, scale):
    style = MaskStyle(shape="cloth")
    base = mask_polygon(FACE, style)
    moved = similarity(FACE, angle, scale, (400, 300))
    poly = mask_polygon(moved, style)
    assert np.allclose(poly, similarity(base, angle, scale, (400, 300)), atol=1e-3)
    assert inside(poly, moved[NOSE]) and inside(poly, moved[MOUTH]) and not inside(poly, moved[0])


def test_implausible_mouth_keypoint_is_clamped_not_followed():
    bad = FACE.copy()
    bad[MOUTH] = (320, 210)  # off to the side, nearly on the eye line
    poly = mask_polygon(bad, MaskStyle())
    f = face_frame(bad)
    # The down axis stays within 30 degrees of the eye line's perpendicular.
    angle = math.degrees(math.atan2(f.down[0], f.down[1]))
    assert abs(angle) <= 30.0 + 1e-6
    assert inside(poly, FACE[NOSE])


def test_keypoints_must_fit_the_box_and_be_finite():
    img = np.zeros((400, 400, 3), np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="face box"):
        draw_mask(img, FACE, (0, 0, 2000, 2000), MaskStyle(), rng)
    nan = FACE.copy()
    nan[2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        draw_mask(img, nan, BOX, MaskStyle(), rng)
    with pytest.raises(ValueError, match="shape"):
        MaskStyle(shape="scarf")


def test_draw_mask_on_a_rotated_real_face_changes_only_the_lower_face():
    import skimage.data

    img = skimage.data.astronaut()
    # Keypoints of the astronaut's face as BlazeFace short-range reports them.
    kp = np.array([[203.9, 100.8], [248.0, 108.4], [222.0, 124.7], [218.9, 145.5], [177.9, 109.2],
                   [271.1, 124.7]], np.float32)
    box = (178.1, 80.9, 272.1, 175.0)
    m = cv2.getRotationMatrix2D((256, 256), 35, 1.0)
    rot = cv2.warpAffine(img, m, (512, 512))
    kp_r = (np.c_[kp, np.ones(6)] @ m.T).astype(np.float32)
    for placement in ("correct", "below_nose"):
        out = draw_mask(rot, kp_r, box, MaskStyle(shape="surgical", placement=placement), np.random.default_rng(1))
        assert out.shape == rot.shape and out.dtype == np.uint8
        diff = np.abs(out.astype(int) - rot.astype(int)).sum(axis=2)
        assert around(diff, kp_r[MOUTH]).mean() > 20
        assert (around(diff, kp_r[NOSE]).mean() > 20) == (placement == "correct")
        for eye in kp_r[:2]:
            assert around(diff, eye).max() == 0
        assert diff[:60, :].max() == 0 and diff[-60:, :].max() == 0  # far from the face: untouched
        # The masked region is elongated along the eye line (its main axis turned by 35 degrees).
        ys, xs = np.nonzero(diff > 20)
        cov = np.cov(np.vstack([xs, ys]))
        evals, evecs = np.linalg.eigh(cov)
        major = evecs[:, 1]
        eye_dir = (kp_r[1] - kp_r[0]) / np.linalg.norm(kp_r[1] - kp_r[0])
        assert abs(float(major @ eye_dir)) > math.cos(math.radians(20))


def test_random_style_is_seeded_and_varied():
    a = [random_style(np.random.default_rng([7, i])) for i in range(60)]
    b = [random_style(np.random.default_rng([7, i])) for i in range(60)]
    assert a == b
    assert {s.shape for s in a} == set(SHAPES)
    assert len({s.color for s in a}) > 20
    assert {s.pattern for s in a} - {"plain"} and {s.pattern for s in a} <= set(PATTERNS)
    assert all(s.placement == "correct" for s in a)
    assert random_style(np.random.default_rng(0), "below_nose").placement == "below_nose"


@pytest.mark.slow
def test_add_masks_cli_on_real_photos(faces, detector_model, tmp_path, capsys):
    from device.manifest import read_manifest
    from train.data.importer import import_sources

    src = tmp_path / "src"
    src.mkdir()
    # Four unmasked face photos: the two public-domain portraits, as they are and mirrored.
    for i, face in enumerate([*faces, *(f[:, ::-1] for f in faces)]):
        cv2.imwrite(str(src / f"face{i}.jpg"), np.ascontiguousarray(face[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    # A photo with no face in it, and a file that is not an image at all.
    cv2.imwrite(str(src / "wall.jpg"), np.full((200, 200, 3), (180, 190, 200), np.uint8))
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "masked"
    rc = main(["data", "add-masks", str(src), "--out", str(out), "--incorrect-fraction", "0.5", "--seed", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped 1 with no face found, 1 unreadable" in printed
    report = json.loads((out / "add_masks_report.json").read_text())
    assert report["images"] == 6 and report["written"] == 4 and report["no_face"] == 1 and report["unreadable"] == 1
    assert {s["file"]: s["reason"] for s in report["skipped"]}["wall.jpg"] == "no face found"
    written = sorted(out.glob("*/*.jpg"))
    assert len(written) == 4 and {p.parent.name for p in written} <= {WITH_MASK, INCORRECT_MASK}
    assert sum(report["by_label"].values()) == 4 and len(report["by_label"]) == 2  # exactly half below the nose
    for p in written:
        before = cv2.imread(str(src / p.name))
        after = cv2.imread(str(p))
        assert before.shape == after.shape
        h = before.shape[0]
        diff = np.abs(before.astype(int) - after.astype(int)).mean(axis=(1, 2))
        # The mask sits on the lower half of the face photo; the top (forehead) is untouched
        # apart from JPEG re-encoding.
        assert diff[int(0.6 * h):].mean() > 15 > diff[: int(0.15 * h)].mean()
    # Same seed, same result.
    out2 = tmp_path / "again"
    assert main(["data", "add-masks", str(src), "--out", str(out2), "--incorrect-fraction", "0.5", "--seed", "3"]) == 0
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in sorted(out2.glob("*/*.jpg"))]
    # The output is a folder-per-class tree the importer takes as it is.
    ds = tmp_path / "ds"
    import_sources([out], ds, progress=False)
    rows = read_manifest(ds)
    assert len(rows) == 4 and {r.label for r in rows} == {WITH_MASK, INCORRECT_MASK}


def test_add_masks_cli_rejects_bad_arguments(tmp_path, capsys):
    rc = main(["data", "add-masks", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "nowhere" in capsys.readouterr().err
    (tmp_path / "src").mkdir()
    rc = main(["data", "add-masks", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--incorrect-fraction", "2"])
    assert rc == 2 and "--incorrect-fraction" in capsys.readouterr().err


# YuNet gives five points: eyes, nose tip, mouth corners; the mouth centre is their mean and the
# ears are NaN (device.detectors.yunet.yunet_rows_to_faces). The box's sides stand in for ears.
YUNET_FACE = FACE.copy()
YUNET_FACE[4:] = np.nan


@pytest.mark.parametrize("shape", SHAPES)
def test_on_chin_mask_leaves_nose_and_mouth_uncovered(shape):
    poly = mask_polygon(FACE, MaskStyle(shape=shape, placement="on_chin"))
    assert not inside(poly, FACE[NOSE]) and not inside(poly, FACE[MOUTH])
    chin = FACE[MOUTH] + (0, 0.5 * (FACE[MOUTH, 1] - 200))  # half an eye-to-mouth length below the mouth
    assert inside(poly, chin)
    assert MaskStyle(placement="on_chin").label == INCORRECT_MASK


@pytest.mark.parametrize("placement", ["correct", "below_nose", "on_chin"])
def test_yunet_keypoints_without_ears_place_the_mask_from_the_box(placement):
    poly = mask_polygon(YUNET_FACE, MaskStyle(placement=placement), box=BOX)
    assert inside(poly, FACE[NOSE]) == (placement == "correct")
    assert inside(poly, FACE[MOUTH]) == (placement != "on_chin")
    # As wide as the face box allows, not wider.
    assert BOX[0] - 2 < poly[:, 0].min() < 160 and 240 < poly[:, 0].max() < BOX[2] + 2
    with pytest.raises(ValueError, match="finite"):
        mask_polygon(YUNET_FACE, MaskStyle())  # no box: nothing to take the ears from


@pytest.mark.slow
def test_add_masks_worn_wrong_from_a_dataset_train_split(faces, detector_model, tmp_path, capsys):
    """``--split train --style worn-wrong``: only train faces, each under the nose and on the chin
    (and worn properly with --also-correct), a manifest of train rows in their originals' groups,
    and a contact sheet."""
    from device.manifest import Row, read_manifest, write_manifest

    ds = tmp_path / "ds"
    rows = []
    for i, (face, split) in enumerate(zip([*faces, *(f[:, ::-1] for f in faces)], ["train", "train", "test", "val"],
                                          strict=True)):
        path = ds / "without_mask" / f"f{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.ascontiguousarray(face[..., ::-1]))
        rows.append(Row(f"without_mask/f{i}.jpg", "without_mask", f"src/f{i}.jpg", "0", "", f"g{i}",
                        face.shape[1], face.shape[0], split))
    write_manifest(ds, rows)
    out = tmp_path / "ww"
    args = ["data", "add-masks", str(ds), "--split", "train", "--style", "worn-wrong", "--also-correct",
            "--detector", "short", "--out", str(out)]
    assert main(args) == 0
    assert "below_nose 2, correct 2, on_chin 2" in capsys.readouterr().out
    made = read_manifest(out)
    assert sorted((r.label, r.group) for r in made) == [
        (INCORRECT_MASK, "g0"), (INCORRECT_MASK, "g0"), (INCORRECT_MASK, "g1"), (INCORRECT_MASK, "g1"),
        (WITH_MASK, "g0"), (WITH_MASK, "g1")]
    assert {r.split for r in made} == {"train"}  # nothing made from a val or test face
    assert all((out / r.path).is_file() and r.source.startswith("src/f") for r in made)
    report = json.loads((out / "add_masks_report.json").read_text())
    assert report["dataset"]["split"] == "train" and report["contact_sheet"] == "contact_sheet.png"
    assert cv2.imread(str(out / "contact_sheet.png")) is not None
    # Bad combinations are refused, naming the option.
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["data", "add-masks", str(plain), "--split", "train", "--out", str(tmp_path / "x")]) == 2
    assert "not a dataset folder" in capsys.readouterr().err
    assert main(["data", "add-masks", str(ds), "--also-correct", "--out", str(tmp_path / "y")]) == 2
    assert "--also-correct" in capsys.readouterr().err
