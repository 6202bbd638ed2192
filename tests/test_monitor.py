"""The daemon's bookkeeping: the state payload (counters, midnight reset, latency medians,
presence) and the monitor (uncertain crops for retraining, blurred snapshots, full disks)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from device import captures
from device.captures import Monitor, UncertainSaver, crop_name, crop_time, render_snapshot, uncertain_mask
from device.config import SnapshotConfig, UncertainConfig
from device.safe_write import UnsafePathError
from device.state import DeviceState, LatencyWindow, PeopleCounter
from device.tracking.tracker import TrackEvent
from train.data.walks import background, paste

LABELS = ("with_mask", "without_mask")


def ev(kind: str, track: int, label: str) -> TrackEvent:
    return TrackEvent(kind, track, label, 0.9, 0.9, (0, 0, 10, 10), 0.0, 0.0, 0.0 if kind == "end" else None)


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def test_latency_window_reports_medians_per_stage_and_resets():
    w = LatencyWindow()
    for ms in (1.0, 2.0, 100.0):  # one slow frame does not move the median
        w.add({"detect": ms, "classify": ms / 2})
    med = w.medians()
    assert med["detect"] == 2.0 and med["classify"] == 1.0
    assert med["publish"] is None  # a stage without samples says so instead of 0
    w.reset()
    assert w.medians()["detect"] is None


def test_people_counter_resets_today_at_local_midnight_only():
    before = datetime(2025, 3, 1, 23, 59, 50).timestamp()  # local time, like the device
    c = PeopleCounter(LABELS, before)
    c.add("without_mask", before)
    c.add("with_mask", before + 5)
    assert c.today == {"with_mask": 1, "without_mask": 1}
    after = before + 20  # 00:00:10 the next day
    c.add("without_mask", after)
    assert c.today == {"with_mask": 0, "without_mask": 1}
    assert c.total == {"with_mask": 1, "without_mask": 2}
    assert not c.roll(after + 3600)  # same day: nothing reset


def test_state_payload_counts_people_once_and_tracks_presence():
    t0 = datetime(2025, 3, 1, 12, 0, 0).timestamp()
    s = DeviceState("pi-1", LABELS, "without_mask", start_wall=t0, start_mono=100.0)
    s.on_events([ev("new", 1, "without_mask"), ev("new", 2, "with_mask")], t0)
    s.on_events([ev("update", 1, "with_mask")], t0 + 1)  # a label flip is not a second person
    s.on_events([ev("update", 2, "without_mask")], t0 + 1)
    for i in range(10):
        s.on_frame({"capture": 1.0, "detect": 3.0, "classify": 2.0, "track": 0.1, "publish": 0.2}, 2, t0 + i * 0.1)
    p = s.payload(t0 + 2, 102.0, camera={"status": "ok"}, mqtt={"connected": True}, monitor={"errors": 0})
    assert p["no_mask_present"] is True  # track 2 is now without a mask
    assert p["with_mask_total"] == 1 and p["without_mask_total"] == 1
    assert p["with_mask_today"] == 1 and p["without_mask_today"] == 1
    assert p["fps"] == 5.0  # 10 frames in the 2 s since the window started
    assert p["latency_ms"]["detect"] == 3.0 and p["people_present"] == 2
    assert p["uptime_s"] == 2.0 and p["camera"]["status"] == "ok"
    json.dumps(p)  # what goes on the wire
    s.on_events([ev("end", 2, "without_mask")], t0 + 3)
    s.next_window(103.0)
    p2 = s.payload(t0 + 4, 104.0)
    assert p2["no_mask_present"] is False and p2["people_present"] == 1
    assert p2["latency_ms"]["detect"] is None and p2["fps"] == 0.0  # no frames in the new window
    assert p2["without_mask_total"] == 1  # an end does not uncount


# --------------------------------------------------------------------------------------------
# Uncertain crops
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_frame(faces):
    frame = background(3)
    face = faces[0]
    box = paste(frame, face, 200, 120, 180)
    return frame, box


def saver(root: Path, **kw) -> UncertainSaver:
    opts = dict(low=0.3, high=0.7, max_files=3, min_interval_s=0.0, labels=LABELS, alert_label="without_mask",
                margin=0.2, meta={"device_id": "pi-1"})
    opts.update(kw)
    return UncertainSaver(root, **opts)


def test_uncertain_mask_bounds_are_inclusive():
    np.testing.assert_array_equal(uncertain_mask(np.array([0.29, 0.3, 0.5, 0.7, 0.71]), 0.3, 0.7),
                                  [False, True, True, True, False])


def test_uncertain_crops_are_saved_with_sidecars_bounded_and_rate_limited(tmp_path, face_frame):
    frame, box = face_frame
    s = saver(tmp_path)
    boxes = [box, (10, 10, 60, 60)]
    probs = np.array([[0.45, 0.55], [0.95, 0.05]], np.float32)  # only the first face is uncertain
    assert s.consider(frame, boxes, probs, probs[:, 1], now_wall=1000.0, now_mono=1.0) == 1
    jpgs = sorted(s.folder.glob("*.jpg"))
    assert len(jpgs) == 1 and jpgs[0].name.endswith("_without_mask_0.55.jpg")
    side = json.loads(jpgs[0].with_suffix(".json").read_text())
    assert side["label_guess"] == "without_mask" and side["alert_score"] == pytest.approx(0.55)
    assert side["scores"] == {"with_mask": pytest.approx(0.45), "without_mask": pytest.approx(0.55)}
    assert side["device_id"] == "pi-1" and side["time_unix"] == 1000.0
    import cv2

    crop = cv2.cvtColor(cv2.imread(str(jpgs[0])), cv2.COLOR_BGR2RGB)
    x0, y0, x1, y1 = side["crop_box"]
    assert crop.shape[:2] == (y1 - y0, x1 - x0)  # the face grown by the margin, unresized
    assert abs(crop.astype(int) - frame[y0:y1, x0:x1]).mean() < 6  # JPEG of the same pixels

    both = saver(tmp_path / "both")  # two unsure faces: the one nearest the middle of [low, high] is kept
    two = np.array([[0.65, 0.35], [0.48, 0.52]], np.float32)
    assert both.consider(frame, [box, box], two, two[:, 1], now_wall=1000.0, now_mono=1.0) == 1
    assert [p.name[-9:] for p in both.folder.glob("*.jpg")] == ["_0.52.jpg"]

    rate = saver(tmp_path / "rate", min_interval_s=10.0)
    assert rate.consider(frame, boxes, probs, probs[:, 1], 1000.0, now_mono=1.0) == 1
    assert rate.consider(frame, boxes, probs, probs[:, 1], 1001.0, now_mono=5.0) == 0  # too soon
    assert rate.consider(frame, boxes, probs, probs[:, 1], 1010.0, now_mono=11.5) == 1

    for i in range(1, 6):
        s.consider(frame, boxes, probs, probs[:, 1], now_wall=1000.0 + i, now_mono=1.0 + i)
    names = sorted(p.name for p in s.folder.glob("*.jpg"))
    assert len(names) == 3 and len(list(s.folder.glob("*.json"))) == 3  # max_files, oldest removed
    assert jpgs[0].name not in names and not list(s.folder.glob("*.part"))

    # A person moved two crops out to label them: the bound counts what is really there.
    (tmp_path / "uncertain" / "without_mask").mkdir()
    for n in names[:2]:
        shutil.move(s.folder / n, tmp_path / "uncertain" / "without_mask" / n)
    s.consider(frame, boxes, probs, probs[:, 1], now_wall=2000.0, now_mono=100.0)
    s.consider(frame, boxes, probs, probs[:, 1], now_wall=2001.0, now_mono=101.0)
    assert len(list(s.folder.glob("*.jpg"))) == 3
    assert len(list((tmp_path / "uncertain" / "without_mask").glob("*.jpg"))) == 2  # never touched


def test_relabelled_crops_import_as_a_dataset(tmp_path, face_frame):
    importer = pytest.importorskip("train.data.importer")
    frame, box = face_frame
    s = saver(tmp_path, max_files=10)
    probs = np.array([[0.4, 0.6]], np.float32)
    for i in range(3):
        s.consider(frame, [box], probs, probs[:, 1], now_wall=1000.0 + i, now_mono=float(i))
    # What the README tells a person to do: move the JPEGs into class folders.
    crops = sorted(s.folder.glob("*.jpg"))
    for dest, files in (("with_mask", crops[:1]), ("without_mask", crops[1:])):
        (s.root / dest).mkdir()
        for f in files:
            shutil.move(f, s.root / dest / f.name)
    report = importer.import_sources([s.root], tmp_path / "dataset", progress=False)
    assert report.per_label.get("with_mask") == 1
    # The three crops are one photo: exact copies with the same label are dropped, not lost.
    rows = (tmp_path / "dataset" / "manifest.csv").read_text().splitlines()[1:]
    assert {r.split(",")[1] for r in rows} == {"with_mask", "without_mask"}


def test_unwritable_uncertain_folder_is_counted_not_raised(tmp_path, face_frame):
    frame, box = face_frame
    (tmp_path / "uncertain").write_text("a file where the folder should be")
    errors: list[str] = []
    mon = Monitor(tmp_path, UncertainConfig(enabled=True, low=0.0, high=1.0, max_files=5, min_interval_s=0.0),
                  SnapshotConfig(enabled=False), labels=LABELS, alert_label="without_mask", margin=0.2,
                  log_error=errors.append)
    probs = np.array([[0.5, 0.5]], np.float32)
    assert mon.uncertain.consider(frame, [box], probs, probs[:, 1], 1000.0, 1.0) == 0
    st = mon.status()
    assert st["errors"] == 1 and "uncertain crop" in st["last_error"] and st["uncertain_saved"] == 0
    assert errors and "uncertain" in errors[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs: a real "No space left on device" (needs root; skipped otherwise)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_reported_and_saving_resumes_when_space_returns(small_disk, face_frame):
    frame, box = face_frame
    noise = np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8)  # JPEGs that do not compress
    s = saver(small_disk, max_files=1000, quality=100)
    probs = np.array([[0.5, 0.5]], np.float32)
    big = (0, 0, 400, 400)
    for i in range(60):
        s.consider(noise, [big], probs, probs[:, 1], now_wall=1000.0 + i, now_mono=float(i))
        if s.errors.count:
            break
    assert s.errors.count >= 1 and "No space left" in s.errors.last_error
    saved = s.saved
    for f in s.folder.glob("*"):
        f.unlink()
    assert s.consider(frame, [box], probs, probs[:, 1], now_wall=5000.0, now_mono=500.0) == 1
    assert s.saved == saved + 1


# --------------------------------------------------------------------------------------------
# Privacy: off by default, private modes, age limit, leftovers, planted links
# --------------------------------------------------------------------------------------------

DAY = 86400.0
UNSURE = np.array([[0.5, 0.5]], np.float32)


@pytest.fixture
def plain_frame():
    """Any picture will do for the file handling (no real face needed, so no ../shared)."""
    return background(5), (200, 120, 380, 300)


def save_at(s: UncertainSaver, frame_box, wall: float, mono: float) -> int:
    frame, box = frame_box
    return s.consider(frame, [box], UNSURE, UNSURE[:, 1], now_wall=wall, now_mono=mono)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_uncertain_crops_are_off_by_default(tmp_path, plain_frame):
    mon = Monitor(tmp_path, UncertainConfig(), SnapshotConfig(), labels=LABELS, alert_label="without_mask",
                  margin=0.2)
    assert save_at(mon.uncertain, plain_frame, 1000.0, 1.0) == 0
    assert not (tmp_path / "uncertain").exists() and mon.status()["uncertain_enabled"] is False
    assert UncertainConfig().max_age_days == 14.0


def test_crops_are_private_whatever_the_umask(tmp_path, plain_frame):
    s = saver(tmp_path)
    old = os.umask(0)  # the most permissive umask: nothing may come out world-readable
    try:
        assert save_at(s, plain_frame, 1000.0, 1.0) == 1
    finally:
        os.umask(old)
    files = sorted(s.folder.iterdir())
    assert [p.suffix for p in files] == [".jpg", ".json"]
    assert [mode(p) for p in files] == [0o600, 0o600]
    assert mode(s.folder) == 0o700 and mode(s.root) == 0o700
    # Files and folders an older version left 0644/0755 are made private at the next start.
    os.chmod(s.folder, 0o755)
    for p in files:
        os.chmod(p, 0o644)
    s2 = saver(tmp_path, now_wall=1001.0)
    assert [mode(p) for p in files] == [0o600, 0o600] and s2.files() == 1 and mode(s2.folder) == 0o700


def test_crops_older_than_max_age_are_removed_saving_or_not(tmp_path, plain_frame):
    t0 = 1_700_000_000.0
    s = saver(tmp_path, max_files=100, max_age_days=2)
    for day in range(4):
        assert save_at(s, plain_frame, t0 + day * DAY, 10.0 * day) == 1
    # 3 days after the first: the first is past 2 days and gone, the newest three stay.
    stems = sorted(p.stem for p in s.folder.glob("*.jpg"))
    assert [crop_time(x) for x in stems] == [t0 + DAY, t0 + 2 * DAY, t0 + 3 * DAY]
    assert len(list(s.folder.glob("*.json"))) == 3 and s.removed == 2

    # Saving turned off: the age limit still applies, at start ...
    off = saver(tmp_path, max_files=100, max_age_days=2, enabled=False, now_wall=t0 + 4.5 * DAY)
    assert sorted(p.stem for p in off.folder.glob("*.jpg")) == stems[2:]
    # ... and while running, once per sweep interval, with no crop saved.
    save_at(off, plain_frame, t0 + 4.5 * DAY, 0.0)
    save_at(off, plain_frame, t0 + 6 * DAY, captures.SWEEP_INTERVAL_S - 1)
    assert len(list(off.folder.glob("*.jpg"))) == 1  # not yet: the interval has not passed
    save_at(off, plain_frame, t0 + 6 * DAY, captures.SWEEP_INTERVAL_S + 1)
    assert list(off.folder.iterdir()) == [] and off.saved == 0
    assert off.errors.count == 0


def test_leftovers_are_removed_at_start_and_with_every_save(tmp_path, plain_frame):
    folder = tmp_path / "uncertain" / "unsorted"
    folder.mkdir(parents=True)
    t = 1_700_000_000.0
    pair = crop_name(t, "with_mask", 0.5)
    (folder / f"{pair}.jpg").write_bytes(b"jpeg")
    (folder / f"{pair}.json").write_text("{}")
    leftovers = [
        f"{crop_name(t + 1, 'with_mask', 0.4)}.jpg.part",  # what older versions left after a crash
        f".{crop_name(t + 2, 'with_mask', 0.4)}.jpg.a1b2c3d4e5f6.part",  # what write_file leaves
        f"{crop_name(t + 3, 'with_mask', 0.4)}.json",  # its JPEG was moved out to be labelled
        f"{crop_name(t + 4, 'with_mask', 0.4)}.jpg",  # a crash between the two writes
    ]
    for name in leftovers:
        (folder / name).write_bytes(b"x")
    (folder / "notes").mkdir()  # a person's folder: not ours, kept
    s = saver(tmp_path, now_wall=t + 10)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{pair}.jpg", f"{pair}.json", "notes"])
    assert s.files() == 1 and s.removed == 4
    (folder / leftovers[0]).write_bytes(b"x")  # appears while running (e.g. an old daemon's crash)
    assert save_at(s, plain_frame, t + 20, 1.0) == 1
    assert not (folder / leftovers[0]).exists() and s.files() == 2
    assert len(list(folder.glob("*.jpg"))) == len(list(folder.glob("*.json"))) == 2


def test_a_planted_link_in_the_crop_folder_is_not_followed(tmp_path, plain_frame):
    victim = tmp_path / "outside.txt"
    victim.write_text("precious\n")
    s = saver(tmp_path)
    s.folder.mkdir(parents=True)
    stem = crop_name(1000.0, "with_mask", 0.5)
    (s.folder / f"{stem}.json").symlink_to(victim)
    assert save_at(s, plain_frame, 1000.0, 1.0) == 0  # refused and counted, the daemon goes on
    assert victim.read_text() == "precious\n"
    assert s.errors.count == 1 and "symbolic link" in s.errors.last_error and stem in s.errors.last_error
    with pytest.raises(UnsafePathError):
        s._write(s.folder / f"{stem}.json", b"{}")
    assert save_at(s, plain_frame, 1001.0, 2.0) == 1  # the next crop has its own name


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def test_snapshot_blur_hides_faces_from_a_detector(detector_model, face_frame):
    import cv2

    from device.detectors import make_detector

    frame, box = face_frame
    det = make_detector("short", detector_model)
    assert len(det.detect(frame)) == 1
    faces = [f.box for f in det.detect(frame)]

    def decode(data: bytes) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    clear = decode(render_snapshot(frame, faces, blur_faces=False, margin=0.2, highlight=faces))
    blurred = decode(render_snapshot(frame, faces, blur_faces=True, margin=0.2, highlight=faces))
    assert clear.shape == blurred.shape == frame.shape
    assert len(det.detect(clear)) == 1
    assert det.detect(blurred) == []
    x0, y0, x1, y1 = (int(v) for v in faces[0])
    assert blurred[y0, (x0 + x1) // 2, 0] > 200 and blurred[y0, (x0 + x1) // 2, 2] < 60  # red outline


def test_presence_follows_the_tracker_when_a_person_is_reopened():
    from device.tracking.tracker import TrackState

    t0 = datetime(2025, 3, 1, 12, 0, 0).timestamp()
    s = DeviceState("pi-1", LABELS, "without_mask", start_wall=t0, start_mono=100.0)
    s.on_events([ev("new", 7, "without_mask"), ev("end", 7, "without_mask")], t0)
    assert s.payload(t0 + 1, 101.0)["no_mask_present"] is False
    # the tracker merged the person back into track 7 within its cooldown: no new event was sent
    s.presence.sync([TrackState(7, (0, 0, 9, 9), 0.9, "without_mask", 5, t0, t0 + 2, 0.9),
                     TrackState(8, (20, 0, 29, 9), 0.5, None, 1, t0 + 2, t0 + 2, 0.5)])
    p = s.payload(t0 + 2, 102.0)
    assert p["no_mask_present"] is True and p["people_present"] == 1
    assert p["without_mask_total"] == 1
