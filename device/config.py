"""The daemon's configuration: one TOML file, validated field by field before anything starts.

A typo in a config file on a Pi at an entrance is found at ``maskwatch-device check`` time with
an error that names the field (``camera.fps: must be a number > 0, got 'x'``), not minutes later
as a traceback deep inside OpenCV. Hence: every field has a type and a range, unknown keys are
rejected with a "did you mean" hint, and relative paths are resolved against the config file's
folder (the daemon runs with ``/`` as its working directory under systemd).

Secrets do not belong in a world-readable config file: ``mqtt.password_file`` (read, stripped)
and the environment variable ``MASKWATCH_MQTT_PASSWORD`` (wins) are the intended ways; a
password given inline is accepted with a warning. ``MASKWATCH_MQTT_HOST``, ``_PORT`` and
``_USERNAME`` override the file too (handy in a systemd drop-in or a container).

Additions to the shared API: ``camera.open_timeout_s`` (an ``open()`` that hangs, e.g. an
unreachable RTSP host, counts as a failure after this long), ``camera.swap_rb`` (exchange red
and blue after capture, for camera drivers that report the wrong channel order),
:func:`config_to_dict` (the effective config with secrets redacted, for ``check``) and
:func:`default_device_id`. The string ``"auto"`` stands for "unset" (None) in the fields whose
default is None and that are not strings (``camera.realtime``, ``detector.score_threshold``,
``classifier.threshold``), since TOML has no null.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # device.comms.mqtt is imported lazily: it pulls in paho
    from device.comms.mqtt import MqttConfig

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

ENV_PREFIX = "MASKWATCH_MQTT_"
#: Characters allowed in a device id: it becomes an MQTT topic level and a Home Assistant
#: discovery node id, which allow exactly these.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CAMERA_SOURCES: tuple[str, ...] = ("picamera", "opencv", "images")
try:
    from device.detectors.base import KINDS as DETECTOR_KINDS
except ImportError:  # pragma: no cover - the detectors package ships with device/
    DETECTOR_KINDS = ("short", "full", "yunet")


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
# The dataclasses
# --------------------------------------------------------------------------------------------


@dataclass
class CameraConfig:
    source: str = "picamera"  # "picamera" | "opencv" | "images"
    device: str = "0"  # picamera: camera number; opencv: index ("0"), RTSP/HTTP URL or video file
    path: str = ""  # images: a folder or a glob
    width: int = 640
    height: int = 480
    fps: float = 15.0
    loop: bool = False  # file/images sources: start again at the end, or end
    realtime: bool | None = None  # None = True for live cameras, False for files/images
    reopen_min_s: float = 0.5
    reopen_max_s: float = 30.0
    stall_timeout_s: float = 5.0
    open_timeout_s: float = 20.0
    swap_rb: bool = False


@dataclass
class DetectorConfig:
    kind: str = "short"
    model_path: str | None = None
    score_threshold: float | None = None
    min_face: int = 24
    ignore_regions: list[tuple[int, int, int, int]] = field(default_factory=list)  # x0,y0,x1,y1 px
    num_threads: int = 2
    max_faces: int = 16  # faces classified per frame at most, the largest first


@dataclass
class ClassifierConfig:
    model_path: str = "/var/lib/maskwatch/models/maskwatch_int8.tflite"
    num_threads: int = 2
    threshold: float | None = None  # None = the model card's threshold


@dataclass
class TrackerConfig:
    iou_threshold: float = 0.3
    evidence_frames: int = 3
    smoothing: float = 0.5  # EMA weight of the newest score
    hysteresis: float = 0.1
    cooldown_s: float = 10.0
    timeout_s: float = 1.5
    max_tracks: int = 32


@dataclass
class SnapshotConfig:
    enabled: bool = False
    blur_faces: bool = True
    jpeg_quality: int = 80


@dataclass
class UncertainConfig:
    enabled: bool = True
    low: float = 0.3
    high: float = 0.7
    max_files: int = 1000
    min_interval_s: float = 2.0


def default_device_id(hostname: str | None = None) -> str:
    """The host name made safe for an MQTT topic level (lower case, ``[a-z0-9_-]``)."""
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-")[:64]
    return name or "maskwatch"


def _default_mqtt() -> MqttConfig:
    from device.comms.mqtt import MqttConfig

    return MqttConfig()


@dataclass
class DaemonConfig:
    device_id: str = field(default_factory=default_device_id)
    device_name: str = "maskwatch"
    state_dir: Path = Path("/var/lib/maskwatch")
    state_interval_s: float = 5.0
    camera: CameraConfig = field(default_factory=CameraConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    mqtt: MqttConfig = field(default_factory=_default_mqtt)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    uncertain: UncertainConfig = field(default_factory=UncertainConfig)


# --------------------------------------------------------------------------------------------
# Validation rules: the type comes from the dataclass annotation, the rest from here
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    choices: tuple[str, ...] | None = None
    path: bool = False  # resolve a relative path against the config file's folder
    nonempty: bool = False
    pattern: re.Pattern | None = None
    pattern_text: str = ""


_TOPIC_SAFE = re.compile(r"^[^#+\x00]+$")
_RULES: dict[str, _Rule] = {
    "device_id": _Rule(pattern=DEVICE_ID_PATTERN, pattern_text="1-64 letters, digits, '_' or '-'"),
    "device_name": _Rule(nonempty=True),
    "state_dir": _Rule(path=True, nonempty=True),
    "state_interval_s": _Rule(lo=0, lo_open=True),
    "camera.source": _Rule(choices=CAMERA_SOURCES),
    "camera.device": _Rule(nonempty=True),
    "camera.path": _Rule(path=True),
    "camera.width": _Rule(lo=16, hi=8192),
    "camera.height": _Rule(lo=16, hi=8192),
    "camera.fps": _Rule(lo=0, lo_open=True, hi=240),
    "camera.reopen_min_s": _Rule(lo=0, lo_open=True, hi=3600),
    "camera.reopen_max_s": _Rule(lo=0, lo_open=True, hi=3600),
    "camera.stall_timeout_s": _Rule(lo=0, lo_open=True, hi=3600),
    "camera.open_timeout_s": _Rule(lo=0, lo_open=True, hi=3600),
    "detector.kind": _Rule(choices=tuple(DETECTOR_KINDS)),
    "detector.model_path": _Rule(path=True, nonempty=True),
    "detector.score_threshold": _Rule(lo=0, hi=1),
    "detector.min_face": _Rule(lo=0, hi=8192),
    "detector.num_threads": _Rule(lo=1, hi=64),
    "detector.max_faces": _Rule(lo=1, hi=256),
    "classifier.model_path": _Rule(path=True, nonempty=True),
    "classifier.num_threads": _Rule(lo=1, hi=64),
    "classifier.threshold": _Rule(lo=0, hi=1),
    "tracker.iou_threshold": _Rule(lo=0, lo_open=True, hi=1),
    "tracker.evidence_frames": _Rule(lo=1, hi=1000),
    "tracker.smoothing": _Rule(lo=0, lo_open=True, hi=1),
    "tracker.hysteresis": _Rule(lo=0, hi=0.5, hi_open=True),
    "tracker.cooldown_s": _Rule(lo=0, hi=86400),
    "tracker.timeout_s": _Rule(lo=0, lo_open=True, hi=3600),
    "tracker.max_tracks": _Rule(lo=1, hi=10000),
    "snapshot.jpeg_quality": _Rule(lo=1, hi=100),
    "uncertain.low": _Rule(lo=0, hi=1),
    "uncertain.high": _Rule(lo=0, hi=1),
    "uncertain.max_files": _Rule(lo=0, hi=10_000_000),
    "uncertain.min_interval_s": _Rule(lo=0, hi=86400),
    "mqtt.host": _Rule(nonempty=True),
    "mqtt.port": _Rule(lo=1, hi=65535),
    "mqtt.client_id": _Rule(nonempty=True),
    "mqtt.username": _Rule(nonempty=True),
    "mqtt.keepalive": _Rule(lo=1, hi=65535),
    "mqtt.ca_file": _Rule(path=True, nonempty=True),
    "mqtt.cert_file": _Rule(path=True, nonempty=True),
    "mqtt.key_file": _Rule(path=True, nonempty=True),
    "mqtt.password_file": _Rule(path=True, nonempty=True),
    "mqtt.topic_prefix": _Rule(nonempty=True, pattern=_TOPIC_SAFE, pattern_text="no MQTT wildcards '+' or '#'"),
    "mqtt.discovery_prefix": _Rule(
        nonempty=True, pattern=_TOPIC_SAFE, pattern_text="no MQTT wildcards '+' or '#'"
    ),
    "mqtt.queue_max": _Rule(lo=1, hi=10_000_000),
    "mqtt.reconnect_min_s": _Rule(lo=0, lo_open=True, hi=3600),
    "mqtt.reconnect_max_s": _Rule(lo=0, lo_open=True, hi=3600),
    "mqtt.outbox_sync_s": _Rule(lo=0, hi=3600),
    "mqtt.max_inflight": _Rule(lo=1, hi=65535),
}
#: Types of the TOP-level keys (DaemonConfig's own annotations name the lazily imported MqttConfig).
_TOP_TYPES: dict[str, Any] = {"device_id": str, "device_name": str, "state_dir": Path, "state_interval_s": float}
#: Keys accepted in [mqtt] that are not MqttConfig fields.
_MQTT_EXTRA: dict[str, Any] = {"password_file": str | None}
#: Optional non-string fields where the string "auto" means None.
_AUTO_MEANS_NONE = "auto"


def _sections() -> dict[str, type]:
    from device.comms.mqtt import MqttConfig

    return {
        "camera": CameraConfig,
        "detector": DetectorConfig,
        "classifier": ClassifierConfig,
        "tracker": TrackerConfig,
        "mqtt": MqttConfig,
        "snapshot": SnapshotConfig,
        "uncertain": UncertainConfig,
    }


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _describe(tp: Any, rule: _Rule, optional: bool) -> str:
    """The "must be ..." part of an error, so the message says what IS allowed."""
    if rule.choices is not None:
        text = "must be one of " + ", ".join(repr(c) for c in rule.choices)
    elif tp is bool:
        text = "must be true or false"
    elif tp in (int, float):
        kind = "an integer" if tp is int else "a number"
        lo, hi = rule.lo, rule.hi
        if lo is not None and hi is not None and not rule.lo_open and not rule.hi_open:
            text = f"must be {kind} in {_number_text(lo)}..{_number_text(hi)}"
        else:
            parts = []
            if lo is not None:
                parts.append(f"{'>' if rule.lo_open else '>='} {_number_text(lo)}")
            if hi is not None:
                parts.append(f"{'<' if rule.hi_open else '<='} {_number_text(hi)}")
            text = f"must be {kind}" + (" " + " and ".join(parts) if parts else "")
    elif tp in (str, Path):
        text = "must be a non-empty string" if rule.nonempty else "must be a string"
        if rule.pattern_text:
            text += f" ({rule.pattern_text})"
    else:
        text = f"must be {tp}"
    if optional and tp is not str and tp is not Path:
        text += f" (or {_AUTO_MEANS_NONE!r} for the default)"
    return text


def _check_value(name: str, value: Any, tp: Any, rule: _Rule, base_dir: Path | None) -> Any:
    """Return the validated (and converted) value of one field or raise ConfigError naming it."""
    inner, optional = _split_optional(tp)
    if value is None and optional:
        return None
    if optional and inner not in (str, Path) and value == _AUTO_MEANS_NONE:
        return None
    if typing.get_origin(inner) is list:
        return _check_regions(name, value)

    def bad() -> ConfigError:
        return ConfigError(name, f"{_describe(inner, rule, optional)}, got {value!r}")

    if inner is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        _check_range(value, rule, bad)
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad()
        _check_range(value, rule, bad)
        return float(value)
    if inner in (str, Path):
        if not isinstance(value, (str, Path)):
            raise bad()
        text = str(value)
        if rule.nonempty and not text.strip():
            raise bad()
        if rule.choices is not None and text not in rule.choices:
            raise bad()
        if rule.pattern is not None and not rule.pattern.match(text):
            raise bad()
        if rule.path and text:
            text = str(_resolve(text, base_dir))
        return Path(text) if inner is Path else text
    raise ConfigError(name, f"has an unsupported type {inner!r} (a bug in device/config.py)")


def _check_range(value: float, rule: _Rule, bad) -> None:
    if rule.lo is not None and (value < rule.lo or (rule.lo_open and value == rule.lo)):
        raise bad()
    if rule.hi is not None and (value > rule.hi or (rule.hi_open and value == rule.hi)):
        raise bad()


def _check_regions(name: str, value: Any) -> list[tuple[int, int, int, int]]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(name, f"must be a list of [x0, y0, x1, y1] pixel boxes, got {value!r}")
    regions = []
    for i, box in enumerate(value):
        ok = (
            isinstance(box, (list, tuple))
            and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)
            and box[0] < box[2]
            and box[1] < box[3]
        )
        if not ok:
            raise ConfigError(
                name, f"entry {i} must be [x0, y0, x1, y1] integers >= 0 with x0 < x1 and y0 < y1, got {box!r}"
            )
        regions.append(tuple(box))
    return regions


def _resolve(text: str, base_dir: Path | None) -> Path:
    p = Path(text).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return p


def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def _check_section(
    section: str, raw: Any, cls: type, base_dir: Path | None, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(section, f"must be a table ([{section}] section), got {raw!r}")
    types_ = _field_types(cls)
    types_.update(extra or {})
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{section}.{key}"
        if key not in types_:
            raise ConfigError(name, "unknown key" + _did_you_mean(key, list(types_)))
        out[key] = _check_value(name, value, types_[key], _RULES.get(name, _Rule()), base_dir)
    return out


def _is_camera_index(device: str) -> bool:
    return device.strip().isdigit()


def _is_url(device: str) -> bool:
    return "://" in device


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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
    sections = _sections()
    top: dict[str, Any] = {}
    parsed: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in sections:
            parsed[key] = dict(value) if isinstance(value, Mapping) else value
        elif key in _TOP_TYPES:
            top[key] = _check_value(key, value, _TOP_TYPES[key], _RULES.get(key, _Rule()), base_dir)
        else:
            owners = [s for s, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
            hint = (
                f"; it belongs in the [{owners[0]}] section"
                if owners
                else _did_you_mean(key, list(_TOP_TYPES) + list(sections))
            )
            raise ConfigError(key, "unknown top-level key or section" + hint)

    mqtt_raw = parsed.setdefault("mqtt", {})
    if not isinstance(mqtt_raw, Mapping):
        raise ConfigError("mqtt", f"must be a table ([mqtt] section), got {mqtt_raw!r}")
    mqtt_fields = {f.name for f in dataclasses.fields(sections["mqtt"])}
    extra = {k: v for k, v in _MQTT_EXTRA.items() if k not in mqtt_fields}
    values: dict[str, dict[str, Any]] = {
        name: _check_section(name, parsed.get(name, {}), cls, base_dir, extra if name == "mqtt" else None)
        for name, cls in sections.items()
    }
    _apply_mqtt_env(values["mqtt"], env)
    _apply_password(values["mqtt"], bool(mqtt_raw.get("password")), env, mqtt_fields)

    cfg = DaemonConfig(
        **top,
        **{name: cls(**values[name]) for name, cls in sections.items()},
    )
    _check_cross_fields(cfg, base_dir)
    return cfg


def _apply_mqtt_env(mqtt: dict[str, Any], env: Mapping[str, str]) -> None:
    for key in ("host", "port", "username"):
        var = ENV_PREFIX + key.upper()
        text = env.get(var, "")
        if not text.strip():
            continue
        name = f"mqtt.{key}"
        value: Any = text.strip()
        if key == "port":
            try:
                value = int(value)
            except ValueError:
                value = text
        try:
            mqtt[key] = _check_value(name, value, int if key == "port" else str, _RULES.get(name, _Rule()), None)
        except ConfigError as exc:
            raise ConfigError(name, f"(from ${var}) {exc.message}") from None


def _apply_password(mqtt: dict[str, Any], inline: bool, env: Mapping[str, str], mqtt_fields: set[str]) -> None:
    password_file = mqtt.get("password_file")
    if "password_file" not in mqtt_fields:
        mqtt.pop("password_file", None)
    if inline and password_file:
        raise ConfigError("mqtt.password", "give either mqtt.password or mqtt.password_file, not both")
    if inline:
        log.warning(
            "mqtt.password is written in plain text in the config file; prefer mqtt.password_file "
            "(mode 0600) or the MASKWATCH_MQTT_PASSWORD environment variable"
        )
    if password_file:
        path = Path(password_file)
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("mqtt.password_file", f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError("mqtt.password_file", f"{path} is not UTF-8 text") from None
        if not secret:
            raise ConfigError("mqtt.password_file", f"{path} is empty")
        mqtt["password"] = secret
    from_env = env.get(ENV_PREFIX + "PASSWORD", "")
    if from_env:
        mqtt["password"] = from_env


def _check_cross_fields(cfg: DaemonConfig, base_dir: Path | None) -> None:
    cam = cfg.camera
    if cam.reopen_max_s < cam.reopen_min_s:
        raise ConfigError(
            "camera.reopen_max_s", f"must be >= camera.reopen_min_s ({cam.reopen_min_s}), got {cam.reopen_max_s}"
        )
    if cam.source == "images" and not cam.path:
        raise ConfigError("camera.path", "is required when camera.source = 'images' (a folder or a glob)")
    if cam.source == "picamera" and not _is_camera_index(cam.device):
        raise ConfigError(
            "camera.device", f"must be a camera number like '0' when camera.source = 'picamera', got {cam.device!r}"
        )
    if cam.source == "opencv" and not _is_camera_index(cam.device) and not _is_url(cam.device):
        # A video file (or device node): resolve like every other path in the file.
        cam.device = str(_resolve(cam.device, base_dir))
    un = cfg.uncertain
    if un.low >= un.high:
        raise ConfigError("uncertain.high", f"must be greater than uncertain.low ({un.low}), got {un.high}")
    m = cfg.mqtt
    if getattr(m, "reconnect_max_s", math.inf) < getattr(m, "reconnect_min_s", 0):
        raise ConfigError(
            "mqtt.reconnect_max_s",
            f"must be >= mqtt.reconnect_min_s ({m.reconnect_min_s}), got {m.reconnect_max_s}",
        )
    prefix = getattr(m, "topic_prefix", None)
    if prefix is not None:
        # The same substitution device.comms.mqtt.Topics does.
        topic = prefix.replace("{device_id}", cfg.device_id).strip("/")
        if not topic or "//" in topic:
            raise ConfigError("mqtt.topic_prefix", f"must be a topic without empty levels, got {prefix!r}")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(m, key, None)
        if value and not Path(value).is_file():
            raise ConfigError(f"mqtt.{key}", f"file not found: {value}")
    if getattr(m, "key_file", None) and not getattr(m, "cert_file", None):
        # A cert_file alone is fine (a PEM may hold the key too); a key without its certificate is not.
        raise ConfigError("mqtt.key_file", "needs mqtt.cert_file (the client certificate) as well")


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
            section = {}
            for sf in dataclasses.fields(value):
                v = getattr(value, sf.name)
                section[sf.name] = "***" if redact and sf.name in _SECRET_KEYS and v else plain(v)
            out[f.name] = section
        else:
            out[f.name] = plain(value)
    return out
