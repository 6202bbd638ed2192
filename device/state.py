"""The retained ``state`` document the daemon publishes every ``state_interval_s``.

Home Assistant's discovery templates read a few flat keys (``no_mask_present``,
``alert_present``, ``<label>_total``, ``<label>_today``, ``<label>_present``, ``fps``); everything else (per-stage latency, camera,
broker and monitor status) is there so a person looking at one retained message can tell
whether the device is healthy without logging in to it.

Nothing here does I/O or reads a clock: every method takes the times it needs, so the
midnight reset and the latency medians are plain unit-testable arithmetic.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

#: Per-frame stages whose latency the state reports (milliseconds, median over one interval).
STAGES: tuple[str, ...] = ("capture", "detect", "classify", "track", "publish")


def local_date(wall: float) -> date:
    """The local calendar day of a wall-clock time (the device's timezone decides midnight)."""
    return datetime.fromtimestamp(wall).date()


def iso_utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LatencyWindow:
    """Per-stage samples since the last state message; the median resists one slow frame."""

    def __init__(self, stages: Sequence[str] = STAGES):
        self.stages = tuple(stages)
        self._samples: dict[str, list[float]] = {s: [] for s in self.stages}

    def add(self, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self._samples.setdefault(stage, []).append(float(ms))

    def medians(self) -> dict[str, float | None]:
        """Median ms per stage (None for a stage without samples in this window)."""
        return {s: (round(statistics.median(v), 3) if v else None) for s, v in self._samples.items()}

    def reset(self) -> None:
        for v in self._samples.values():
            v.clear()


class PeopleCounter:
    """People per label, since start and since local midnight.

    A person is counted once, when its track is confirmed (the tracker's ``new`` event); a
    label change later on the same track does not count the person again.
    """

    def __init__(self, labels: Sequence[str], now_wall: float):
        self.labels = tuple(labels)
        self.total = dict.fromkeys(self.labels, 0)
        self.today = dict.fromkeys(self.labels, 0)
        self.day = local_date(now_wall)

    def roll(self, now_wall: float) -> bool:
        """Reset the day's counts when local midnight has passed; True when it did."""
        d = local_date(now_wall)
        if d != self.day:
            self.day = d
            self.today = dict.fromkeys(self.labels, 0)
            return True
        return False

    def add(self, label: str, now_wall: float) -> None:
        self.roll(now_wall)
        if label not in self.total:  # a label outside the card is a bug upstream; count it visibly
            self.total[label] = 0
            self.today.setdefault(label, 0)
        self.total[label] += 1
        self.today[label] = self.today.get(label, 0) + 1


class Presence:
    """Which tracks are in view now and with which label, kept from the tracker's events."""

    def __init__(self) -> None:
        self.active: dict[Any, str] = {}

    def apply(self, event_type: str, track_id: Any, label: str) -> None:
        if event_type == "end":
            self.active.pop(track_id, None)
        else:
            self.active[track_id] = label

    def sync(self, tracks: Iterable[Any]) -> None:
        """Take presence from the tracker's confirmed tracks (``id``, ``label``).

        Events alone can be wrong: a person re-opened within the tracker's cooldown keeps the
        track id whose ``end`` was already sent, so only the tracker knows they are back.
        """
        self.active = {t.id: t.label for t in tracks if t.label is not None}

    def count(self, label: str | None = None) -> int:
        return sum(1 for v in self.active.values() if label is None or v == label)


class DeviceState:
    """Accumulates what the daemon sees between two state messages and renders the payload."""

    def __init__(self, device_id: str, labels: Sequence[str], alert_label: str,
                 start_wall: float, start_mono: float, alert_labels: Sequence[str] = ()):
        self.device_id = device_id
        self.labels = tuple(labels)
        self.alert_label = alert_label
        #: Labels whose presence makes ``alert_present`` true (default: ``alert_label`` alone).
        self.alert_labels = tuple(alert_labels) or (alert_label,)
        self.start_wall = start_wall
        self.start_mono = start_mono
        self.people = PeopleCounter(self.labels, start_wall)
        self.presence = Presence()
        self.latency = LatencyWindow()
        self.frames_total = 0
        self.events_total = 0
        self.faces_last = 0
        self._window_frames = 0
        self._window_start = start_mono
        self.last_frame_wall: float | None = None

    # -- inputs --------------------------------------------------------------------------------

    def on_frame(self, timings_ms: Mapping[str, float], faces: int, frame_wall: float) -> None:
        self.frames_total += 1
        self._window_frames += 1
        self.faces_last = int(faces)
        self.last_frame_wall = frame_wall
        self.latency.add(timings_ms)

    def on_event(self, event_type: str, track_id: Any, label: str, now_wall: float) -> None:
        self.events_total += 1
        self.presence.apply(event_type, track_id, label)
        if event_type == "new":
            self.people.add(label, now_wall)

    def on_events(self, events: Iterable[Any], now_wall: float) -> None:
        """TrackEvent-like objects (``type``, ``track_id``, ``label``)."""
        for e in events:
            self.on_event(e.type, e.track_id, e.label, now_wall)

    # -- output --------------------------------------------------------------------------------

    def fps(self, now_mono: float) -> float:
        elapsed = now_mono - self._window_start
        return round(self._window_frames / elapsed, 2) if elapsed > 0 else 0.0

    def payload(self, now_wall: float, now_mono: float, *, camera: Mapping[str, Any] | None = None,
                mqtt: str | None = None, monitor: Mapping[str, Any] | None = None,
                model: Mapping[str, Any] | None = None, detector: str | None = None) -> dict[str, Any]:
        """The state document; call :meth:`next_window` after publishing it."""
        self.people.roll(now_wall)
        out: dict[str, Any] = {
            "device_id": self.device_id,
            "time": iso_utc(now_wall),
            "uptime_s": round(now_mono - self.start_mono, 1),
            "no_mask_present": self.presence.count(self.alert_label) > 0,
            "alert_present": any(self.presence.count(lb) for lb in self.alert_labels),
            "alert_labels": list(self.alert_labels),
            "people_present": self.presence.count(),
        }
        for label in sorted(set(self.labels) | set(self.people.total)):
            out[f"{label}_total"] = self.people.total.get(label, 0)
            out[f"{label}_today"] = self.people.today.get(label, 0)
            out[f"{label}_present"] = self.presence.count(label)
        out.update(
            today=self.people.day.isoformat(),
            fps=self.fps(now_mono),
            frames=self.frames_total,
            events=self.events_total,
            faces=self.faces_last,
            last_frame_time=iso_utc(self.last_frame_wall) if self.last_frame_wall else None,
            latency_ms=self.latency.medians(),
            camera=dict(camera or {}),
            mqtt=mqtt,
            monitor=dict(monitor or {}),
        )
        if model is not None:
            out["model"] = dict(model)
        if detector is not None:
            out["detector"] = detector
        return out

    def next_window(self, now_mono: float) -> None:
        self.latency.reset()
        self._window_frames = 0
        self._window_start = now_mono
