"""The daemon's configuration: one TOML file, validated field by field before anything starts.

A typo in a config file on a Pi at an entrance is found at ``maskwatch-device check`` time with
an error that names the field (``camera.fps: must be a number > 0 and <= 240, got 'x'``), not
minutes later as a traceback deep inside OpenCV. Hence every section is a dataclass whose
fields carry their own rule (:func:`setting`: range, choices, path, extra check) next to their
default; the type is the annotation. Unknown keys are rejected with a "did you mean" hint, and
relative paths are resolved against the config file's folder (the daemon runs with ``/`` as
its working directory under systemd). Rules that involve two fields are each section's
``check`` method, run once after loading (and by :class:`~device.comms.mqtt.MqttPublisher` for
a config built in code).

Why no validation library: pydantic (with its compiled core) or msgspec would replace the ~80
lines of :class:`Rule` but add a dependency to the Pi, and neither gives "did you mean" hints
or our dotted field names without translating its own errors back.

Secrets do not belong in a world-readable config file: ``mqtt.password_file`` (first line,
see :func:`read_password_file`) and the environment variable ``MASKWATCH_MQTT_PASSWORD`` (wins)
are the intended ways; a password given inline is accepted with a warning.
``MASKWATCH_MQTT_HOST``, ``_PORT`` and ``_USERNAME`` override the file too (handy in a systemd
drop-in or a container). The string ``"auto"`` stands for "unset" (None) in the fields whose
default is None and that are not strings (``camera.realtime``, ``detector.score_threshold``,
``classifier.threshold``), since TOML has no null.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import logging
import math
import os
import re
import socket
import stat
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.comms import discovery
from device.comms.topics import (
    device_id_problem,
    prefix_template_problem,
    shorten,
    topic_prefix_problem,
    topic_problem,
)

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ENV_PREFIX = "MASKWATCH_MQTT_"
CAMERA_SOURCES: tuple[str, ...] = ("picamera", "opencv", "images")
try:
    from device.detectors.base import DEFAULT_MIRROR
    from device.detectors.base import KINDS as DETECTOR_KINDS
except ImportError:  # pragma: no cover - the detectors package ships with device/
    DETECTOR_KINDS = ("short", "full", "yunet")
    DEFAULT_MIRROR = True
#: Optional non-string fields where this string means None (TOML has no null).
AUTO = "auto"
#: The outbox keeps every waiting event in memory too (measured ~0.9 KB each while loading a
#: full outbox at start, ~0.5 KB on disk). 100,000 of them are ~90 MB next to the daemon's own
#: ~90 MB: under the unit's MemoryHigh=250M with room for frames, far from MemoryMax=300M.
QUEUE_MAX_CAP = 100_000
#: Host names that images ship with: an id made only from one is likely shared by another device.
STOCK_HOSTNAMES = frozenset({"raspberrypi", "raspberry", "pi", "localhost", "ubuntu", "debian", "dietpi",
                             "maskwatch"})
MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


class ConfigError(ValueError):
    """A bad config value; ``field`` is the dotted name (``camera.fps``), ``source`` the file."""

    def __init__(self, field: str, message: str, source: str | None = None):
        self.field = field
        self.message = message
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}"
        return f"{self.source}: {text}" if self.source else text


# --------------------------------------------------------------------------------------------
# One field's rule
# --------------------------------------------------------------------------------------------


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Rule:
    """What one field accepts beyond its annotated type; see :func:`setting`."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    nonempty: bool = False
    path: bool = False  # resolve a relative path against the config file's folder
    check: Callable[[str], str | None] | None = None  # a text's problem ("must ..."), or None
    convert: Callable[[str, Any], Any] | None = None  # whole custom conversion (name, value)
    note: str = ""  # why the limit is what it is, appended to the message

    def describe(self, tp: Any, optional: bool) -> str:
        """The "must be ..." part of an error, so the message says what IS allowed."""
        if self.choices is not None:
            text = "must be one of " + ", ".join(repr(c) for c in self.choices)
        elif tp is bool:
            text = "must be true or false"
        elif tp in (int, float):
            kind = "an integer" if tp is int else "a number"
            if self.ge is not None and self.le is not None and self.gt is None and self.lt is None:
                text = f"must be {kind} in {_number_text(self.ge)}..{_number_text(self.le)}"
            else:
                bounds = (("> ", self.gt), (">= ", self.ge), ("< ", self.lt), ("<= ", self.le))
                parts = [op + _number_text(v) for op, v in bounds if v is not None]
                text = f"must be {kind}" + (" " + " and ".join(parts) if parts else "")
        elif tp in (str, Path):
            text = "must be a non-empty string" if self.nonempty else "must be a string"
        else:
            text = f"must be {tp}"
        if self.note:
            text += f" ({self.note})"
        if optional and tp not in (str, Path):
            text += f" (or {AUTO!r} for the default)"
        return text

    def apply(self, name: str, value: Any, tp: Any, optional: bool, base_dir: Path | None) -> Any:
        """The validated (and converted) value of field ``name``, or ConfigError naming it."""
        if value is None and optional:
            return None
        if optional and tp not in (str, Path) and value == AUTO:
            return None
        if self.convert is not None:
            return self.convert(name, value)

        def bad() -> ConfigError:
            return ConfigError(name, f"{self.describe(tp, optional)}, got {shorten(value)}")

        if tp is bool:
            if not isinstance(value, bool):
                raise bad()
            return value
        if tp in (int, float):
            ok_type = isinstance(value, int) if tp is int else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok_type or not math.isfinite(value) or not self._in_range(value):
                raise bad()
            return tp(value)
        if tp in (str, Path):
            if not isinstance(value, (str, Path)):
                raise bad()
            text = str(value)
            if (self.nonempty and not text.strip()) or (self.choices is not None and text not in self.choices):
                raise bad()
            problem = self.check(text) if self.check is not None else None
            if problem:
                raise ConfigError(name, f"{problem}, got {shorten(value)}")
            if self.path and text:
                text = str(resolve_path(text, base_dir))
            return Path(text) if tp is Path else text
        raise ConfigError(name, f"has an unsupported type {tp!r} (a bug in device/config.py)")

    def _in_range(self, value: float) -> bool:
        return not (
            (self.gt is not None and value <= self.gt)
            or (self.ge is not None and value < self.ge)
            or (self.lt is not None and value >= self.lt)
            or (self.le is not None and value > self.le)
        )


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            repr: bool = True, **rule: Any) -> Any:
    """A dataclass field with its :class:`Rule`: ``fps: float = setting(15.0, gt=0, le=240)``."""
    return field(default=default, default_factory=default_factory, repr=repr, metadata={"rule": Rule(**rule)})


def resolve_path(text: str, base_dir: Path | None) -> Path:
    p = Path(text).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def _regions(name: str, value: Any) -> list[tuple[int, int, int, int]]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(name, f"must be a list of [x0, y0, x1, y1] pixel boxes, got {shorten(value)}")
    return [_box(name, box, f"entry {i} must be") for i, box in enumerate(value)]


def _box(name: str, box: Any, what: str) -> tuple[int, int, int, int]:
    """One [x0, y0, x1, y1] pixel box (ignore regions, the entrance region), or ConfigError."""
    ok = (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)
        and box[0] < box[2]
        and box[1] < box[3]
    )
    if not ok:
        raise ConfigError(name, f"{what} [x0, y0, x1, y1] integers >= 0 with x0 < x1 and y0 < y1, got {box!r}")
    return tuple(box)


def _optional_region(name: str, value: Any) -> tuple[int, int, int, int] | None:
    """The entrance region: one pixel box, or ``[]`` (TOML has no null) for the whole frame."""
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return None
    return _box(name, value, "must be [] (the whole frame) or")


# --------------------------------------------------------------------------------------------
# The sections
# --------------------------------------------------------------------------------------------


@dataclass
class CameraConfig:
    source: str = setting("picamera", choices=CAMERA_SOURCES)
    device: str = setting("0", nonempty=True)  # picamera: camera number; opencv: index, URL or video file
    path: str = setting("", path=True)  # images: a folder or a glob
    width: int = setting(640, ge=16, le=8192)
    height: int = setting(480, ge=16, le=8192)
    fps: float = setting(15.0, gt=0, le=240)
    loop: bool = False  # file/images sources: start again at the end, or end
    realtime: bool | None = None  # None = True for live cameras, False for files/images
    reopen_min_s: float = setting(0.5, gt=0, le=3600)
    reopen_max_s: float = setting(30.0, gt=0, le=3600)
    stall_timeout_s: float = setting(5.0, gt=0, le=3600)
    open_timeout_s: float = setting(20.0, gt=0, le=3600)
    swap_rb: bool = False  # exchange red and blue (drivers that report the wrong order)

    def check(self, base_dir: Path | None) -> None:
        if self.reopen_max_s < self.reopen_min_s:
            raise ConfigError("camera.reopen_max_s",
                              f"must be >= camera.reopen_min_s ({self.reopen_min_s}), got {self.reopen_max_s}")
        if self.source == "images" and not self.path:
            raise ConfigError("camera.path", "is required when camera.source = 'images' (a folder or a glob)")
        is_index = self.device.strip().isdigit()
        if self.source == "picamera" and not is_index:
            raise ConfigError("camera.device",
                              f"must be a camera number like '0' when camera.source = 'picamera', got {self.device!r}")
        if self.source == "opencv" and not is_index and "://" not in self.device:
            # A video file (or device node): resolve like every other path in the file.
            self.device = str(resolve_path(self.device, base_dir))


@dataclass
class DetectorConfig:
    kind: str = setting("yunet", choices=tuple(DETECTOR_KINDS))  # base.DEFAULT_KIND; "short" for kiosks
    model_path: str | None = setting(None, path=True, nonempty=True)
    score_threshold: float | None = setting(None, ge=0, le=1)
    min_face: int = setting(16, ge=0, le=8192)  # the import's smallest face: smaller ones were never trained on
    ignore_regions: list[tuple[int, int, int, int]] = setting(default_factory=list, convert=_regions)  # px boxes
    #: Only faces whose centre lies in this box count (None or ``[]``: the whole frame); the web page draws it.
    entrance_region: tuple[int, int, int, int] | None = setting(None, convert=_optional_region)
    num_threads: int = setting(2, ge=1, le=64)
    #: Faces per frame passed on to the classifier, the largest first (a bound on work per frame:
    #: ~0.5 ms a face here). 16 lost a third of the faces in the crowd photos of faces-voc.
    max_faces: int = setting(64, ge=1, le=256)
    #: Also detect on the mirror image (device/detectors/mirror.py): more masked faces found,
    #: twice the detection time.
    mirror: bool = DEFAULT_MIRROR


@dataclass
class ClassifierConfig:
    model_path: str = setting("/var/lib/maskwatch/models/maskwatch_int8.tflite", path=True, nonempty=True)
    num_threads: int = setting(2, ge=1, le=64)
    threshold: float | None = setting(None, ge=0, le=1)  # None = the model card's threshold


@dataclass
class TrackerConfig:
    iou_threshold: float = setting(0.3, gt=0, le=1)
    evidence_frames: int = setting(3, ge=1, le=1000)
    smoothing: float = setting(0.5, gt=0, le=1)  # EMA weight of the newest score
    hysteresis: float = setting(0.1, ge=0, lt=0.5)
    cooldown_s: float = setting(10.0, ge=0, le=86400)
    timeout_s: float = setting(1.5, gt=0, le=3600)
    max_tracks: int = setting(32, ge=1, le=10000)


@dataclass
class SnapshotConfig:
    enabled: bool = False
    blur_faces: bool = True
    jpeg_quality: int = setting(80, ge=1, le=100)


@dataclass
class UncertainConfig:
    enabled: bool = False  # unblurred face photos: opt-in only (README, "Security and privacy")
    low: float = setting(0.3, ge=0, le=1)
    high: float = setting(0.7, ge=0, le=1)
    max_files: int = setting(1000, ge=0, le=10_000_000)
    min_interval_s: float = setting(2.0, ge=0, le=86400)
    max_age_days: float = setting(14.0, gt=0, le=3650)

    def check(self) -> None:
        if self.low >= self.high:
            raise ConfigError("uncertain.high", f"must be greater than uncertain.low ({self.low}), got {self.high}")


_TLS_ONLY = ("ca_file", "cert_file", "key_file", "tls_insecure")


@dataclass
class MqttConfig:
    host: str = setting("localhost", nonempty=True)
    port: int = setting(1883, ge=1, le=65535)
    client_id: str | None = setting(None, nonempty=True)  # None = "maskwatch-<device_id>"
    username: str | None = setting(None, nonempty=True)
    password: str | None = setting(None, repr=False)  # resolved by the loader (file, environment)
    password_file: str | None = setting(None, path=True, nonempty=True)  # see read_password_file
    keepalive: int = setting(30, ge=1, le=65535)
    tls: bool = False
    ca_file: str | None = setting(None, path=True, nonempty=True)
    cert_file: str | None = setting(None, path=True, nonempty=True)
    key_file: str | None = setting(None, path=True, nonempty=True)
    tls_insecure: bool = False
    topic_prefix: str = setting("maskwatch/{device_id}", check=prefix_template_problem)
    discovery: bool = True
    discovery_prefix: str = setting("homeassistant", check=topic_problem)
    #: Bounded outbox; the oldest event is dropped (and counted) when full.
    queue_max: int = setting(10000, ge=1, le=QUEUE_MAX_CAP,
                             note=f"the cap {QUEUE_MAX_CAP:,} keeps the outbox within the unit's MemoryMax=300M")
    reconnect_min_s: float = setting(1.0, gt=0, le=3600)
    reconnect_max_s: float = setting(60.0, gt=0, le=3600)
    #: fsync the outbox at most this often (0 = on every event); see device/comms/outbox.py.
    outbox_sync_s: float = setting(1.0, ge=0, le=3600)
    #: Events handed to the broker before their PUBACKs come back.
    max_inflight: int = setting(100, ge=1, le=65535)

    def check(self, device_id: str) -> None:
        """The rules between fields (and with ``device_id``); ConfigError naming the field."""
        for key in _TLS_ONLY:
            if getattr(self, key) and not self.tls:
                raise ConfigError(f"mqtt.{key}", "is set but mqtt.tls is false: the connection would be plain "
                                                 "text, password included; set tls = true (or remove it)")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("mqtt.reconnect_max_s",
                              f"must be >= mqtt.reconnect_min_s ({self.reconnect_min_s}), got {self.reconnect_max_s}")
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, key)
            if value and not Path(value).is_file():
                raise ConfigError(f"mqtt.{key}", f"file not found: {value}")
        if self.key_file and not self.cert_file:
            # A cert_file alone is fine (a PEM may hold the key too); a key without its certificate is not.
            raise ConfigError("mqtt.key_file", "needs mqtt.cert_file (the client certificate) as well")
        problem = device_id_problem(device_id)
        if problem:
            raise ConfigError("device_id", f"{problem}, got {shorten(device_id)}")
        problem = topic_prefix_problem(self.topic_prefix, device_id)
        if problem:
            raise ConfigError("mqtt.topic_prefix", f"{problem}, got {shorten(self.topic_prefix)}")
        topics = [discovery.status_topic(self.discovery_prefix)] + [topic for topic, _ in discovery.discovery_messages(
            device_id=device_id, device_name="", availability_topic="", state_topic="", events_topic="",
            discovery_prefix=self.discovery_prefix)]
        longest = max(topics, key=lambda t: len(t.encode("utf-8")))
        problem = topic_problem(longest)
        if problem:
            raise ConfigError("mqtt.discovery_prefix", f"makes a discovery topic that {problem}, "
                                                       f"got {shorten(self.discovery_prefix)}")


@dataclass
class WebConfig:
    """The set-up page (``device/web/``): off by default, and never on without a password."""

    enabled: bool = False
    bind: str = setting("0.0.0.0", nonempty=True)  # all interfaces of the LAN; "127.0.0.1" for local only
    port: int = setting(8080, ge=1, le=65535)
    password_file: str | None = setting(None, path=True, nonempty=True)  # see read_password_file
    blur_faces: bool = True  # pixelate faces in the live view (switch off while aiming the camera)
    max_fps: float = setting(5.0, gt=0, le=30)

    def check(self) -> None:
        if self.enabled and not self.password_file:
            raise ConfigError("web.password_file", "is required when web.enabled = true: the page is off until "
                                                   "a password is configured (systemd/install.sh --web makes one)")
        if self.password_file:  # read at start by the page; checked here so `check` finds a bad one
            try:
                read_password_file(self.password_file)
            except ValueError as exc:
                raise ConfigError("web.password_file", str(exc)) from None


# --------------------------------------------------------------------------------------------
# The device id
# --------------------------------------------------------------------------------------------


def read_machine_id(paths: tuple[Path, ...] = MACHINE_ID_FILES) -> str | None:
    """This machine's systemd/D-Bus machine id (32 hex digits, stable across reboots), or None."""
    for path in paths:
        try:
            text = path.read_text(encoding="ascii").strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if re.fullmatch(r"[0-9a-f]{32}", text) and text != "0" * 32:
            return text
    return None


def default_device_id(hostname: str | None = None, machine_id: str | None = None) -> str:
    """The host name made safe for an MQTT topic level (lower case, ``[a-z0-9_-]``), plus, given a
    machine id, ``-`` and 8 hex digits of a hash of it: ``raspberrypi-1f3a9c0e``.

    The hash keeps two Pis left at the stock host name apart (same client id = the broker keeps
    kicking one off) and does not publish the machine id itself, which systemd asks to keep private.
    """
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-") or "maskwatch"
    if machine_id is None:
        return name[:64]
    digest = hashlib.sha256(f"maskwatch:{machine_id}".encode()).hexdigest()[:8]
    return f"{name[:55]}-{digest}"


def this_device_id() -> str:
    """The default ``device_id`` on this machine (host name + machine id hash, else the host name)."""
    return default_device_id(socket.gethostname(), read_machine_id())


def device_id_warning(device_id: str) -> str | None:
    """Why ``device_id`` is likely shared with another device (``check`` prints it), or None."""
    if device_id.lower() not in STOCK_HOSTNAMES:
        return None
    return (f"device_id {device_id!r} is a stock name that other devices likely share: two devices with one id "
            "share MQTT topics and client id and knock each other off the broker; set device_id in the config")


def _alert_labels(name: str, value: Any) -> list[str]:
    from device.contract import THREE_CLASS_LABELS

    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(name, "must be a non-empty list of label names, e.g. [\"without_mask\", \"incorrect_mask\"], "
                                f"got {shorten(value)}")
    for v in value:
        if v not in THREE_CLASS_LABELS:
            raise ConfigError(name, f"{v!r} is not a label; labels are {', '.join(THREE_CLASS_LABELS)}")
    if len(set(value)) != len(value):
        raise ConfigError(name, f"lists a label twice: {list(value)}")
    return list(value)


def _default_alert_labels() -> list[str]:
    from device.contract import DEFAULT_ALERT_LABELS

    return list(DEFAULT_ALERT_LABELS)


@dataclass
class AlertsConfig:
    """Which labels raise an alert (events say the label either way).

    A label set here must be one of the model card's labels (checked when the model is loaded);
    the default list leaves out what a 2-label model does not have, so such a model alerts on
    ``without_mask`` as before.
    """

    labels: list[str] = setting(default_factory=_default_alert_labels, convert=_alert_labels)

    @property
    def is_default(self) -> bool:
        return self.labels == _default_alert_labels()

    def for_model(self, model_labels: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """The alert labels of a model with ``model_labels``; ConfigError naming the field otherwise."""
        from device.contract import alert_labels_for

        try:
            return alert_labels_for(model_labels, None if self.is_default else self.labels, "alerts.labels")
        except ValueError as exc:
            raise ConfigError("alerts.labels", str(exc).removeprefix("alerts.labels: ")) from None


@dataclass
class DaemonConfig:
    device_id: str = setting(default_factory=this_device_id, check=device_id_problem)
    device_name: str = setting("maskwatch", nonempty=True)
    state_dir: Path = setting(Path("/var/lib/maskwatch"), path=True, nonempty=True)
    state_interval_s: float = setting(5.0, gt=0)
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    uncertain: UncertainConfig = field(default_factory=UncertainConfig)
    web: WebConfig = field(default_factory=WebConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def check(self, base_dir: Path | None = None) -> None:
        """Every rule between fields, once (each lives in its section's ``check``)."""
        self.camera.check(base_dir)
        self.uncertain.check()
        self.mqtt.check(self.device_id)
        self.web.check()


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def read_password_file(path: Path | str) -> str:
    """The password kept in ``path``: its first line, stripped.

    ValueError naming the file when it cannot be read, is empty, or is readable or writable by
    every user (a secret any local account can read is not one; 0640 root:maskwatch lets the
    service read it, 0600 suits a file of your own).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            data = fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o006:
        raise ValueError(f"{path} is accessible to every user (mode {mode:04o}); it holds a password: "
                         f"chmod 0640 and chown root:maskwatch (the service's group), or chmod 0600")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ValueError(f"{path} is empty (the password is its first line)")
    return secret


def _apply_password(mqtt: dict[str, Any], env: Mapping[str, str]) -> None:
    inline, password_file = mqtt.get("password"), mqtt.get("password_file")
    if inline and password_file:
        raise ConfigError("mqtt.password", "give either mqtt.password or mqtt.password_file, not both")
    if inline:
        log.warning(
            "mqtt.password is written in plain text in the config file; prefer mqtt.password_file "
            "(mode 0640, owner root:maskwatch) or the MASKWATCH_MQTT_PASSWORD environment variable"
        )
    if password_file:
        try:
            mqtt["password"] = read_password_file(password_file)
        except ValueError as exc:
            raise ConfigError("mqtt.password_file", str(exc)) from None
    from_env = env.get(ENV_PREFIX + "PASSWORD", "")
    if from_env:
        mqtt["password"] = from_env


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    tp: Any  # the type without "| None"
    optional: bool
    rule: Rule

    def apply(self, name: str, value: Any, base_dir: Path | None) -> Any:
        return self.rule.apply(name, value, self.tp, self.optional, base_dir)


@functools.cache
def _fields(cls: type) -> dict[str, _Field]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp, optional = hints[f.name], False
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            tp, optional = (rest[0] if len(rest) == 1 else tp), True
        out[f.name] = _Field(tp, optional, f.metadata.get("rule", Rule()))
    return out


def _sections() -> dict[str, type]:
    return {name: f.tp for name, f in _fields(DaemonConfig).items() if dataclasses.is_dataclass(f.tp)}


def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _load_section(section: str, raw: Any, cls: type, base_dir: Path | None) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(section, f"must be a table ([{section}] section), got {shorten(raw)}")
    fields = _fields(cls)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(name, "unknown key" + _did_you_mean(key, list(fields)))
        out[key] = fields[key].apply(name, value, base_dir)
    return out


def _apply_mqtt_env(mqtt: dict[str, Any], env: Mapping[str, str]) -> None:
    fields = _fields(MqttConfig)
    for key in ("host", "port", "username"):
        var = ENV_PREFIX + key.upper()
        text = env.get(var, "").strip()
        if not text:
            continue
        value: Any = int(text) if key == "port" and re.fullmatch(r"[0-9]+", text) else text
        try:
            mqtt[key] = fields[key].apply(f"mqtt.{key}", value, None)
        except ConfigError as exc:
            raise ConfigError(exc.field, f"(from ${var}) {exc.message}") from None


def config_from_dict(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> DaemonConfig:
    """Validate a parsed TOML document (or any dict of the same shape) into a DaemonConfig.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the environment. ``base_dir`` is
    the folder relative paths are resolved against (None leaves them relative).
    """
    env = os.environ if env is None else env
    if not isinstance(data, Mapping):
        raise ConfigError("<config>", f"must be a table of sections, got {type(data).__name__}")
    top, sections = _fields(DaemonConfig), _sections()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections:
            continue
        if key not in top:
            owners = [s for s, cls in sections.items() if key in _fields(cls)]
            hint = (f"; it belongs in the [{owners[0]}] section" if owners
                    else _did_you_mean(key, [k for k in top if k not in sections] + list(sections)))
            raise ConfigError(key, "unknown top-level key or section" + hint)
        values[key] = top[key].apply(key, value, base_dir)
    for name, cls in sections.items():
        section = _load_section(name, data.get(name, {}), cls, base_dir)
        if cls is MqttConfig:
            _apply_mqtt_env(section, env)
            _apply_password(section, env)
        values[name] = cls(**section)
    cfg = DaemonConfig(**values)
    cfg.check(base_dir)
    return cfg


def load_config(path: Path, env: Mapping[str, str] | None = None) -> DaemonConfig:
    """Read and validate a TOML config file; errors name the file and the field."""
    path = Path(path)
    if tomllib is None:
        raise RuntimeError("reading TOML needs Python >= 3.11 or the 'tomli' package (pip install tomli)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except OSError as exc:
        raise RuntimeError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("<file>", "is not UTF-8 text", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<file>", f"invalid TOML: {exc}", source=str(path)) from None
    try:
        return config_from_dict(data, env=env, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.message, source=str(path)) from None


_SECRET_KEYS = {"password"}


def config_to_dict(cfg: DaemonConfig, redact: bool = True) -> dict[str, Any]:
    """The effective config as plain data (paths as strings), passwords replaced by ``"***"``."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = {
                sf.name: "***" if redact and sf.name in _SECRET_KEYS and getattr(value, sf.name)
                else plain(getattr(value, sf.name))
                for sf in dataclasses.fields(value)
            }
        else:
            out[f.name] = plain(value)
    return out
