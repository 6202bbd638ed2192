"""The event schema file and the Event class agree, and both reject what breaks the contract."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from device.comms.events import EVENT_TYPES, Event, load_schema, model_info

jsonschema = pytest.importorskip("jsonschema")

MODEL = model_info("mobilenet_v2_128", "ab" * 32, "int8", 0.6)


def make_event(kind: str = "new", **over) -> Event:
    fields = dict(
        type=kind, label="without_mask", score=0.91234567, top_score=0.95, box=[10.4, 20.6, 110, 140],
        frame_time=1_760_000_123.4567, start_time=1_760_000_120.0, device_id="door-pi", model=MODEL,
        track_id=7, end_time=1_760_000_125.0 if kind == "end" else None,
    )
    fields.update(over)
    return Event(**fields)


@pytest.fixture(scope="module")
def validator():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_produced_events_validate_and_round_trip(validator, kind):
    ev = make_event(kind)
    data = json.loads(ev.to_json())
    validator.validate(data)
    assert list(data) == [
        "event_id", "type", "device_id", "track_id", "label", "score", "top_score", "box",
        "frame_time", "start_time", "end_time", "model",
    ]
    assert data["box"] == [10, 21, 110, 140] and all(isinstance(v, int) for v in data["box"])
    assert data["score"] == 0.9123 and data["frame_time"] == 1_760_000_123.457
    assert (data["end_time"] is None) == (kind != "end")
    assert len(data["event_id"]) == 32
    assert Event.from_json(ev.to_json()) == ev


def test_event_ids_are_unique_and_negative_box_is_clipped(validator):
    a, b = make_event(), make_event(box=[-3, -1, 50, 60])
    assert a.event_id != b.event_id
    assert b.box == [0, 0, 50, 60]
    validator.validate(b.to_dict())


def _mutate(path: str, value):
    def apply(d: dict) -> dict:
        d = copy.deepcopy(d)
        *parents, last = path.split(".")
        target = d
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
        return d
    return apply


_DELETE = object()

INVALID = {
    "missing event_id": _mutate("event_id", _DELETE),
    "unknown field": _mutate("color", "red"),
    "event_id not hex": _mutate("event_id", "not-a-uuid"),
    "unknown type": _mutate("type", "start"),
    "unknown label": _mutate("label", "mask"),
    "score above 1": _mutate("score", 1.5),
    "score as text": _mutate("score", "0.9"),
    "top_score negative": _mutate("top_score", -0.1),
    "box of 3": _mutate("box", [1, 2, 3]),
    "box of text": _mutate("box", ["a", 2, 3, 4]),
    "box of floats": _mutate("box", [10.5, 20, 110, 140]),
    "box negative": _mutate("box", [-1, 20, 110, 140]),
    "score of 400 digits": _mutate("score", 10**400),
    "top_score infinite": _mutate("top_score", float("inf")),
    "device_id with slash": _mutate("device_id", "door/pi"),
    "track_id negative": _mutate("track_id", -1),
    "end_time on new": _mutate("end_time", 1_760_000_130.0),
    "model without sha256": _mutate("model.sha256", _DELETE),
    "model sha256 short": _mutate("model.sha256", "abc"),
    "model threshold above 1": _mutate("model.threshold", 2),
    "model extra key": _mutate("model.size", 3),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_events_fail_schema_and_class(validator, name):
    bad = INVALID[name](make_event().to_dict())
    assert not validator.is_valid(bad), name
    with pytest.raises(ValueError):
        Event.from_dict(bad)


def test_end_without_end_time_fails(validator):
    bad = make_event("end").to_dict()
    bad["end_time"] = None
    assert not validator.is_valid(bad)
    with pytest.raises(ValueError, match="end_time"):
        Event.from_dict(bad)


def test_numpy_scalars_are_accepted(validator):
    np = pytest.importorskip("numpy")
    ev = make_event(score=np.float32(0.75), top_score=np.float64(0.8), track_id=np.int64(3),
                    box=np.array([1.2, 2, 30, 40.7]), frame_time=np.float64(1_760_000_000.5))
    data = json.loads(ev.to_json())
    validator.validate(data)
    assert (data["score"], data["track_id"], data["box"]) == (0.75, 3, [1, 2, 30, 41])


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="'label'"):
        make_event(label="maybe")
    with pytest.raises(ValueError, match="'model.sha256'"):
        make_event(model={**MODEL, "sha256": "x"})
    with pytest.raises(ValueError, match="not valid JSON"):
        Event.from_json(b"{nope")


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_an_event_is_built_once_from_what_the_tracker_hands_out(validator, kind):
    from device.tracking.tracker import TrackEvent

    # A tracker event carries everything but the device and model; numpy numbers are fine.
    te = TrackEvent(kind, np.int64(4), "with_mask", np.float64(0.8123456), 0.9, (-2, 20, 110, 140),
                    1_760_000_123.4567, 1_760_000_120.0, 1_760_000_122.0)
    ev = Event.from_track(te, device_id="door-pi", model=MODEL)
    data = ev.to_dict()
    validator.validate(data)
    assert (data["type"], data["track_id"], data["label"], data["score"], data["top_score"]) == (
        kind, 4, "with_mask", 0.8123, 0.9)
    assert data["box"] == [0, 20, 110, 140] and data["frame_time"] == 1_760_000_123.457
    assert data["end_time"] == (1_760_000_122.0 if kind == "end" else None)  # only an end has one
    assert data["device_id"] == "door-pi" and data["model"] == MODEL
