"""A 3-label model in the daemon, against a real Mosquitto: mask on -> mask under the nose -> mask off.

One person (the public-domain astronaut portrait of ``maskwatch data synth``) stands at the door
and moves a little; ``add-masks``' own drawing puts a mask on the face, then the same mask below
the nose, then none. The classifier is a tiny 3-label CNN trained here on crops of those frames
(no ../shared needed): it says nothing about accuracy, only that labels, events, the state and
Home Assistant discovery carry three labels end to end. Built with TensorFlow in the workstation
run and reused from ``.cache`` by the Pi-like run, like the ``tiny_classifier`` fixture.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from device.contract import INCORRECT_MASK, THREE_CLASS_LABELS, WITH_MASK, WITHOUT_MASK
from tests.conftest import ASSETS, WORKSTATION_FIRST
from tests.daemon_helpers import Recorder, daemon_config, finish, retained, start_daemon, write_config
from train.data.walks import background, paste, write_frames

pytestmark = pytest.mark.broker
DEVICE = "door-3"
PREFIX = f"maskwatch/{DEVICE}"
#: Frames per phase: mask on, mask under the nose, mask off.
PHASE = 16
PHASES = (WITH_MASK, INCORRECT_MASK, WITHOUT_MASK)
SIZE = 64  # the tiny model's input


def worn(face: np.ndarray, detector_model: Path) -> dict[str, np.ndarray]:
    """The face three ways: a mask worn properly, the same mask below the nose, no mask."""
    from device.detectors import make_detector
    from train.data.masks import MaskStyle, detect_faces, draw_mask

    found = detect_faces(make_detector("short", detector_model), face)
    assert found, "BlazeFace finds no face in the portrait"
    f = found[0]
    out = {WITHOUT_MASK: face}
    for label, placement in ((WITH_MASK, "correct"), (INCORRECT_MASK, "below_nose")):
        style = MaskStyle(shape="surgical", color=(60, 120, 220), placement=placement)
        out[label] = draw_mask(face, f.keypoints, f.box, style, np.random.default_rng(0))
    return out


def sequence(faces3: dict[str, np.ndarray], shift: int = 0, width: int = 180) -> list[np.ndarray]:
    """3 x PHASE frames of one person drifting right: mask on, under the nose, off."""
    bg = background(3)
    frames = []
    for i in range(3 * PHASE):
        f = bg.copy()
        paste(f, faces3[PHASES[i // PHASE]], 200 + shift + 2 * i, 130, width)
        frames.append(f)
    return frames


def training_crops(faces3: dict[str, np.ndarray], detector_model: Path) -> tuple[np.ndarray, np.ndarray]:
    """Crops the way the daemon makes them (detector box -> contract crop) of the three faces at
    several positions and sizes, with their labels."""
    from device.contract import crop_face
    from device.detectors import make_detector

    det = make_detector("short", detector_model)
    x, y = [], []
    for shift, width in ((-60, 160), (0, 180), (40, 200), (90, 170)):
        for i, frame in enumerate(sequence(faces3, shift, width)[::2]):
            boxes = det.detect(frame)
            if boxes:
                x.append(crop_face(frame, boxes[0].box, SIZE))
                y.append(THREE_CLASS_LABELS.index(PHASES[(2 * i) // PHASE]))
    return np.stack(x), np.asarray(y)


def train_tiny_3class(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """A tiny CNN fitted to ``x, y`` and converted to int8 TFLite, with a 3-label card."""
    import keras

    from convert.tflite import to_tflite
    from device.contract import ModelCard

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32), y, epochs=60, batch_size=16, verbose=0)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_tflite(model, "int8", x[:32].astype(np.float32)))
    ModelCard(name="tiny3", backbone="tiny_cnn", input_size=SIZE, labels=list(THREE_CLASS_LABELS),
              alert_labels=[WITHOUT_MASK, INCORRECT_MASK], threshold=0.5, quantization="int8").save(
        path.with_suffix(".json"))
    return path


@pytest.fixture(scope="module")
def faces3(faces, detector_model) -> dict[str, np.ndarray]:
    return worn(faces[0], detector_model)


@pytest.fixture(scope="module")
def tiny3(faces3, detector_model, tmp_path_factory) -> Path:
    cached = ASSETS / "tiny3_int8.tflite"
    if importlib.util.find_spec("tensorflow") is None:
        if cached.exists() and cached.with_suffix(".json").exists():
            return cached
        pytest.skip(f"TensorFlow is absent and no cached 3-label tiny model: {WORKSTATION_FIRST}")
    x, y = training_crops(faces3, detector_model)
    path = train_tiny_3class(tmp_path_factory.mktemp("tiny3") / "tiny3_int8.tflite", x, y)
    ASSETS.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(path.read_bytes())
    cached.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())
    return path


def test_tiny_3class_model_tells_the_three_apart(tiny3, faces3, detector_model):
    """The premise of the daemon test below: the model labels the crops of each phase right."""
    from device.classifier import MaskClassifier

    x, y = training_crops(faces3, detector_model)
    pred = MaskClassifier(tiny3).predict_crops(x).argmax(axis=1)
    assert float(np.mean(pred == y)) >= 0.95, np.c_[y, pred].tolist()


def test_mask_on_under_the_nose_off_is_one_person_with_two_updates(tmp_path, broker, faces3, tiny3,
                                                                   detector_model):
    frames = write_frames(tmp_path / "frames", sequence(faces3))
    cfg = daemon_config(tmp_path, frames=frames, model=tiny3, detector=detector_model, port=broker.port,
                        device_id=DEVICE, uncertain={"enabled": False},
                        camera={"fps": 10.0}, tracker={"evidence_frames": 3, "timeout_s": 1.0, "cooldown_s": 5.0})
    config = write_config(tmp_path / "config.toml", cfg)
    with Recorder(broker.host, broker.port, [f"{PREFIX}/#"]) as rec:
        proc = start_daemon(config, "--exit-on-end", log=tmp_path / "daemon.log")
        assert finish(proc, tmp_path / "daemon.log") == 0, (tmp_path / "daemon.log").read_text()
        rec.wait(lambda r: any(e["type"] == "end" for e in r.events()), 10, "the end event")
        events = rec.events()
    log = (tmp_path / "daemon.log").read_text()
    assert [(e["type"], e["label"]) for e in events] == [
        ("new", WITH_MASK), ("update", INCORRECT_MASK), ("update", WITHOUT_MASK), ("end", WITHOUT_MASK)], log
    assert len({e["track_id"] for e in events}) == 1
    assert all(0.5 <= e["score"] <= 1.0 for e in events)  # the probability of the event's own label

    # Home Assistant: a counter pair per label, and one "alert present" binary sensor.
    def config_of(component: str, key: str) -> dict:
        payload = retained(broker.host, broker.port, f"homeassistant/{component}/maskwatch_door_3/{key}/config")
        assert payload is not None, f"no discovery config for {component}/{key}"
        return json.loads(payload)

    for label in THREE_CLASS_LABELS:
        for when in ("total", "today"):
            c = config_of("sensor", f"{label}_{when}")
            assert c["value_template"] == f"{{{{ value_json.{label}_{when} }}}}"
    alert = config_of("binary_sensor", "alert_present")
    assert alert["name"] == "Alert: person without mask or with mask worn wrong present"
    state = json.loads(retained(broker.host, broker.port, f"{PREFIX}/state"))
    # Counted once, with the label it was confirmed with; every label has its counters.
    assert {k: state[f"{k}_total"] for k in THREE_CLASS_LABELS} == {WITH_MASK: 1, WITHOUT_MASK: 0, INCORRECT_MASK: 0}
    assert state["alert_labels"] == [WITHOUT_MASK, INCORRECT_MASK]
    assert state["alert_present"] is False and state["people_present"] == 0  # the person left


def test_alerts_labels_the_model_lacks_are_refused_naming_the_field(tmp_path, tiny_classifier, detector_model):
    """``[alerts] labels = ["incorrect_mask"]`` with a 2-label model: refused at start-up."""
    from tests.daemon_helpers import run_device

    frames = write_frames(tmp_path / "frames", [background(0)])
    cfg = daemon_config(tmp_path, frames=frames, model=tiny_classifier, detector=detector_model, port=1,
                        alerts={"labels": [INCORRECT_MASK]})
    r = run_device("check", "--config", str(write_config(tmp_path / "config.toml", cfg)), "--no-camera")
    assert r.returncode != 0
    assert "alerts.labels" in r.stderr and "incorrect_mask" in r.stderr, r.stderr
