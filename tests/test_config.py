"""The daemon's TOML config: every field validated, errors name the field, secrets kept out of files."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from device.config import (
    QUEUE_MAX_CAP,
    AlertsConfig,
    CameraConfig,
    ClassifierConfig,
    ConfigError,
    DaemonConfig,
    DetectorConfig,
    MqttConfig,
    SnapshotConfig,
    TrackerConfig,
    UncertainConfig,
    WebConfig,
    config_from_dict,
    config_to_dict,
    default_device_id,
    device_id_warning,
    load_config,
    read_machine_id,
    read_password_file,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "systemd" / "config.example.toml"

SECTIONS = {
    "camera": CameraConfig,
    "detector": DetectorConfig,
    "classifier": ClassifierConfig,
    "tracker": TrackerConfig,
    "mqtt": MqttConfig,
    "snapshot": SnapshotConfig,
    "uncertain": UncertainConfig,
    "web": WebConfig,
    "alerts": AlertsConfig,
}
TOP_LEVEL = ["device_id", "device_name", "state_dir", "state_interval_s"]


def all_fields() -> list[str]:
    names = list(TOP_LEVEL)
    for section, cls in SECTIONS.items():
        names += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return names


# Wrong types and out-of-range values for EVERY field. A new field without a case here fails
# test_every_field_has_bad_value_cases: add its cases.
BAD: dict[str, list] = {
    "device_id": ["has space", "a/b", "x#", "", 5, "pi\n"],
    "device_name": ["", 3],
    "state_dir": [3, ""],
    "state_interval_s": [0, -1, "5", True],
    "camera.source": ["usb", 1],
    "camera.device": ["", 3],
    "camera.path": [3, ["a"]],
    "camera.width": [0, 15, 9000, 640.0, "640", True],
    "camera.height": [0, 8193, "480"],
    "camera.fps": [0, -1, 241, "x", True, float("nan")],
    "camera.loop": ["yes", 1],
    "camera.realtime": ["yes", 1, "Auto"],
    "camera.reopen_min_s": [0, -0.5, "1"],
    "camera.reopen_max_s": [0, 4000],
    "camera.stall_timeout_s": [0, "5"],
    "camera.open_timeout_s": [0, "x"],
    "camera.swap_rb": ["no", 0],
    "detector.kind": ["long", 1],
    "detector.model_path": [3, ""],
    "detector.score_threshold": [1.5, -0.1, "x", True],
    "detector.min_face": [-1, 2.5, "24"],
    "detector.max_faces": [0, 257, 2.5, "16"],
    "detector.mirror": ["yes", 1],
    "detector.ignore_regions": ["x", [[0, 0, 10]], [[10, 0, 5, 10]], [[0, 0, 1.5, 2]], [[-1, 0, 5, 5]], [5]],
    "detector.entrance_region": ["x", [0, 0, 10], [10, 0, 5, 10], [0, 0, 1.5, 2], [-1, 0, 5, 5], [[0, 0, 5, 5]], 5],
    "detector.num_threads": [0, 1.5, 65],
    "classifier.model_path": [3, ""],
    "classifier.num_threads": [0, "2"],
    "classifier.threshold": [2, -1, "high"],
    "tracker.iou_threshold": [0, 1.5, "0.3"],
    "tracker.evidence_frames": [0, 2.5],
    "tracker.smoothing": [0, 1.1],
    "tracker.hysteresis": [0.5, -0.1],
    "tracker.cooldown_s": [-1, "10"],
    "tracker.timeout_s": [0, -1],
    "tracker.max_tracks": [0, 3.0],
    "mqtt.host": ["", 1],
    "mqtt.port": [0, 70000, "1883", 1883.0],
    "mqtt.client_id": [5, ""],
    "mqtt.username": [5, ""],
    "mqtt.password": [5, True],
    "mqtt.password_file": [5, "no-such-password-file"],
    "mqtt.keepalive": [0, "30"],
    "mqtt.tls": ["true", 1],
    "mqtt.ca_file": [5, "no-such-ca.crt"],
    "mqtt.cert_file": [5, "no-such-client.crt"],
    "mqtt.key_file": [5, "no-such-client.key"],
    "mqtt.tls_insecure": [1, True],  # true without tls = true
    "mqtt.topic_prefix": ["a/#", "site/+/x", "", "a//b", 5, "$SYS/{device_id}", "$share/{device_id}",
                          "a/\x1b[2J/{device_id}", "a/\x00/{device_id}", "a/\x7f{device_id}", "site/door",
                          "a/../{device_id}", "./{device_id}", "/maskwatch/{device_id}", "maskwatch/{device_id}/",
                          "x" * 70_000 + "/{device_id}", "a/\ufffe/{device_id}"],
    "mqtt.discovery": ["yes"],
    "mqtt.discovery_prefix": ["ha/+", "", 3, "/", "$SYS", "ha\x1b", "ha/..", "ha/", "#", "h" * 65_536],
    "mqtt.queue_max": [0, 1.5, QUEUE_MAX_CAP + 1, 10_000_000],
    "mqtt.reconnect_min_s": [0, "1"],
    "mqtt.reconnect_max_s": [0, -1],
    "mqtt.outbox_sync_s": [-1, "1"],
    "mqtt.max_inflight": [0, 2.5],
    "snapshot.enabled": [1],
    "snapshot.blur_faces": ["x"],
    "snapshot.jpeg_quality": [0, 101, 80.0],
    "uncertain.enabled": ["x"],
    "uncertain.low": [-0.1, 1.1],
    "uncertain.high": [1.5, "0.7"],
    "uncertain.max_files": [-1, 1.5],
    "uncertain.min_interval_s": [-1],
    "uncertain.max_age_days": [0, -1, 3651, "14"],
    "web.enabled": ["yes", 1],  # true without a password_file: tests/test_web.py
    "web.bind": ["", 3],
    "web.port": [0, 70000, "8080"],
    "web.password_file": [5, "", "no-such-password-file"],
    "web.blur_faces": ["no", 0],
    "web.max_fps": [0, -1, 31, "5"],
    "alerts.labels": [[], "without_mask", ["no_mask"], ["without_mask", "without_mask"], [1]],
}


def nest(name: str, value) -> dict:
    if "." not in name:
        return {name: value}
    section, key = name.split(".", 1)
    return {section: {key: value}}


def test_every_field_has_bad_value_cases():
    assert sorted(BAD) == sorted(all_fields())


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in BAD.items() for v in vs],
                         ids=lambda x: repr(x)[:30])
def test_a_wrong_value_is_an_error_naming_its_field(name, value, tmp_path):
    with pytest.raises(ConfigError) as info:
        config_from_dict(nest(name, value), env={}, base_dir=tmp_path)
    assert info.value.field == name
    assert str(info.value).startswith(f"{name}: ")


@pytest.mark.parametrize("name", [n for n in all_fields() if n != "mqtt.password_file"])
def test_a_wrong_value_in_a_file_names_the_file_and_the_field(name, tmp_path):
    value = BAD[name][0]
    section, _, key = name.rpartition(".")
    text = f"[{section}]\n" if section else ""
    text += f"{key} = {toml_value(value)}\n"
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.field == name
    assert str(path) in str(info.value) and f"{name}: " in str(info.value)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def test_messages_say_what_is_allowed():
    with pytest.raises(ConfigError, match=re.escape("camera.fps: must be a number > 0 and <= 240, got 'x'")):
        config_from_dict({"camera": {"fps": "x"}}, env={})
    with pytest.raises(ConfigError, match="'picamera', 'opencv', 'images'"):
        config_from_dict({"camera": {"source": "usb"}}, env={})
    with pytest.raises(ConfigError, match=r"integer in 1\.\.65535"):
        config_from_dict({"mqtt": {"port": True}}, env={})


def test_the_example_config_is_valid_and_documents_every_field():
    cfg = load_config(EXAMPLE, env={})
    assert cfg == dataclasses.replace(config_from_dict({}, env={}), device_id=cfg.device_id)  # the defaults
    text = EXAMPLE.read_text()
    for name in all_fields():
        key = name.rpartition(".")[2]
        assert re.search(rf"^#? ?{key} = ", text, re.M), f"{name} is not in {EXAMPLE.name}"
        # ... in a paragraph (lines without a blank one between) that has a prose comment
        before = text[: re.search(rf"^#? ?{key} = ", text, re.M).start()].rstrip("\n")
        paragraph = before.split("\n\n")[-1].split("\n")
        prose = [line.startswith("# ") and not re.match(r"# ?\w+ = ", line) for line in paragraph]
        assert any(prose), f"{name} lacks a comment"


def test_defaults_match_the_contract():
    cfg = config_from_dict({}, env={})
    assert isinstance(cfg, DaemonConfig)
    assert (cfg.camera.source, cfg.camera.width, cfg.camera.height, cfg.camera.fps) == ("picamera", 640, 480, 15.0)
    assert cfg.camera.realtime is None and cfg.detector.ignore_regions == []
    assert cfg.mqtt == MqttConfig()
    assert cfg.tracker == TrackerConfig() and cfg.uncertain == UncertainConfig()
    assert cfg.state_dir == Path("/var/lib/maskwatch")
    assert re.fullmatch(r"[a-z0-9_-]{1,64}", cfg.device_id)


def test_values_are_converted_and_auto_means_unset():
    cfg = config_from_dict({
        "camera": {"fps": 10, "realtime": "auto", "source": "images", "path": "/x/*.jpg"},
        "detector": {"score_threshold": "auto", "ignore_regions": [[0, 0, 10, 20]]},
        "classifier": {"threshold": 0.4},
    }, env={})
    assert cfg.camera.fps == 10.0 and isinstance(cfg.camera.fps, float)  # int accepted for float
    assert cfg.camera.realtime is None and cfg.detector.score_threshold is None
    assert cfg.detector.ignore_regions == [(0, 0, 10, 20)]
    assert cfg.classifier.threshold == 0.4


def test_unknown_keys_get_a_did_you_mean_hint():
    with pytest.raises(ConfigError, match="did you mean 'fps'") as info:
        config_from_dict({"camera": {"fsp": 10}}, env={})
    assert info.value.field == "camera.fsp"
    with pytest.raises(ConfigError, match="did you mean 'camera'") as info:
        config_from_dict({"camra": {"fps": 10}}, env={})
    assert info.value.field == "camra"
    with pytest.raises(ConfigError, match=r"belongs in the \[camera\] section"):
        config_from_dict({"fps": 10}, env={})
    with pytest.raises(ConfigError, match="must be a table"):
        config_from_dict({"camera": 5}, env={})


@pytest.mark.parametrize(("data", "field"), [
    ({"camera": {"reopen_min_s": 10, "reopen_max_s": 5}}, "camera.reopen_max_s"),
    ({"camera": {"source": "images"}}, "camera.path"),
    ({"camera": {"source": "picamera", "device": "rtsp://x"}}, "camera.device"),
    ({"uncertain": {"low": 0.6, "high": 0.6}}, "uncertain.high"),
    ({"mqtt": {"reconnect_min_s": 10, "reconnect_max_s": 5}}, "mqtt.reconnect_max_s"),
    ({"mqtt": {"topic_prefix": "site//{device_id}"}}, "mqtt.topic_prefix"),
])
def test_fields_that_depend_on_each_other(data, field):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, env={})
    assert info.value.field == field


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "ca.crt").write_text("x")
    (folder / "config.toml").write_text(
        'state_dir = "state"\n'
        '[camera]\nsource = "opencv"\ndevice = "clips/door.mp4"\n'
        '[detector]\nmodel_path = "models/det.tflite"\n'
        '[classifier]\nmodel_path = "models/cls.tflite"\n'
        '[mqtt]\nca_file = "ca.crt"\ntls = true\n'
    )
    cfg = load_config(folder / "config.toml", env={})
    assert cfg.state_dir == folder / "state"
    assert cfg.camera.device == str(folder / "clips" / "door.mp4")
    assert cfg.detector.model_path == str(folder / "models" / "det.tflite")
    assert cfg.classifier.model_path == str(folder / "models" / "cls.tflite")
    assert cfg.mqtt.ca_file == str(folder / "ca.crt")
    # camera indices and URLs are not paths
    for device in ("0", "rtsp://cam/stream"):
        assert config_from_dict({"camera": {"source": "opencv", "device": device}}, env={},
                                base_dir=folder).camera.device == device
    images = config_from_dict({"camera": {"source": "images", "path": "replay/*.jpg"}}, env={}, base_dir=folder)
    assert images.camera.path == str(folder / "replay" / "*.jpg")


def test_password_file_env_and_inline_password(tmp_path, caplog):
    secret = tmp_path / "mqtt-password"
    secret.write_text("  s3cret \n")
    secret.chmod(0o640)
    base = {"mqtt": {"username": "door", "password_file": "mqtt-password"}}
    assert config_from_dict(base, env={}, base_dir=tmp_path).mqtt.password == "s3cret"
    env = {"MASKWATCH_MQTT_PASSWORD": "from-env"}
    assert config_from_dict(base, env=env, base_dir=tmp_path).mqtt.password == "from-env"  # env wins
    with caplog.at_level(logging.WARNING, logger="device.config"):
        cfg = config_from_dict({"mqtt": {"password": "inline"}}, env={})
    assert cfg.mqtt.password == "inline"
    assert any("plain text" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="not both") as info:
        config_from_dict({"mqtt": {"password": "x", "password_file": str(secret)}}, env={})
    assert info.value.field == "mqtt.password"
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "empty").chmod(0o600)
    with pytest.raises(ConfigError, match="is empty") as info:
        config_from_dict({"mqtt": {"password_file": str(tmp_path / "empty")}}, env={})
    assert info.value.field == "mqtt.password_file"
    assert config_to_dict(cfg)["mqtt"]["password"] == "***"
    assert "inline" not in repr(config_to_dict(cfg))


def test_environment_overrides_host_port_username():
    env = {"MASKWATCH_MQTT_HOST": "broker.lan", "MASKWATCH_MQTT_PORT": "8883", "MASKWATCH_MQTT_USERNAME": "u"}
    m = config_from_dict({"mqtt": {"host": "localhost", "port": 1883}}, env=env).mqtt
    assert (m.host, m.port, m.username) == ("broker.lan", 8883, "u")
    assert config_from_dict({}, env={"MASKWATCH_MQTT_HOST": ""}).mqtt.host == "localhost"  # empty = unset
    with pytest.raises(ConfigError, match=r"MASKWATCH_MQTT_PORT.*got 'http'") as info:
        config_from_dict({}, env={"MASKWATCH_MQTT_PORT": "http"})
    assert info.value.field == "mqtt.port"


def test_file_level_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\nfps = 3\n")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(bad, env={})
    assert str(bad) in str(info.value)


# --------------------------------------------------------------------------------------------
# Hardening (issue 12): each of these failed on the code before it
# --------------------------------------------------------------------------------------------


def test_queue_max_is_capped_to_what_fits_the_units_memory_limit():
    assert config_from_dict({"mqtt": {"queue_max": QUEUE_MAX_CAP}}, env={}).mqtt.queue_max == QUEUE_MAX_CAP
    with pytest.raises(ConfigError, match=r"integer in 1\.\.100000 \(the cap 100,000 .*MemoryMax=300M") as info:
        config_from_dict({"mqtt": {"queue_max": 10_000_000}}, env={})
    assert info.value.field == "mqtt.queue_max"
    # The cap fits the unit: ~0.9 KB per waiting event in memory (measured while loading a full
    # outbox) next to the daemon's own ~90 MB stays under MemoryHigh.
    unit = (ROOT / "systemd" / "maskwatch.service").read_text()
    high_mb = int(re.search(r"^MemoryHigh=(\d+)M$", unit, re.M).group(1))
    assert high_mb > 90 + QUEUE_MAX_CAP * 0.9e3 / 1e6
    paragraph = EXAMPLE.read_text().split("queue_max = ")[0].rsplit("\n\n", 1)[1]
    assert "100000" in paragraph and "MemoryMax=300M" in paragraph


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file", "tls_insecure"])
def test_tls_settings_without_tls_are_an_error_naming_the_field(key, tmp_path):
    (tmp_path / "x.pem").write_text("x")
    value = True if key == "tls_insecure" else "x.pem"
    with pytest.raises(ConfigError, match="mqtt.tls is false") as info:
        config_from_dict({"mqtt": {key: value}}, env={}, base_dir=tmp_path)
    assert info.value.field == f"mqtt.{key}"
    mqtt = {key: value, "tls": True, **({"cert_file": "x.pem"} if key == "key_file" else {})}
    assert getattr(config_from_dict({"mqtt": mqtt}, env={}, base_dir=tmp_path).mqtt, key)


def test_default_device_id_is_unique_per_machine_and_stable(tmp_path):
    one, two = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    a = default_device_id("raspberrypi", one)
    assert re.fullmatch(r"raspberrypi-[0-9a-f]{8}", a)
    assert a == default_device_id("raspberrypi", one)  # the same after a reboot
    assert a != default_device_id("raspberrypi", two)  # another Pi at the stock host name
    assert one not in a and one[:8] not in a  # the machine id itself is not published
    assert len(default_device_id("x" * 80, one)) == 64
    assert default_device_id("raspberrypi", None) == "raspberrypi"  # no machine id: the host name
    files = tmp_path / "etc-machine-id", tmp_path / "dbus-machine-id"
    assert read_machine_id(files) is None  # absent
    files[1].write_text(two.upper() + "\n")
    assert read_machine_id(files) == two
    files[0].write_text("uninitialized\n")  # systemd's first-boot placeholder
    assert read_machine_id(files) == two
    files[0].write_text(one + "\n")
    assert read_machine_id(files) == one
    cfg = config_from_dict({}, env={})
    machine_id = read_machine_id()
    if machine_id is not None:
        assert cfg.device_id == default_device_id(None, machine_id) != default_device_id(None, None)


@pytest.mark.parametrize(("device_id", "warns"), [
    ("raspberrypi", True), ("RaspberryPi", True), ("localhost", True), ("maskwatch", True),
    ("raspberrypi-1f3a9c0e", False), ("entrance-1", False),
])
def test_a_stock_looking_device_id_gets_a_warning(device_id, warns):
    warning = device_id_warning(device_id)
    assert (warning is not None) == warns
    if warns:
        assert repr(device_id) in warning and "set device_id" in warning


def test_check_warns_about_a_stock_device_id(tmp_path, tiny_classifier, detector_model):
    import subprocess
    import sys

    from train.toml_writer import to_toml

    cfg = {"device_id": "raspberrypi", "state_dir": str(tmp_path / "state"),
           "camera": {"source": "images", "path": str(tmp_path)},
           "detector": {"kind": "short", "model_path": str(detector_model)},
           "classifier": {"model_path": str(tiny_classifier)}}
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    r = subprocess.run([sys.executable, "-m", "device.cli", "check", "--config", str(tmp_path / "config.toml"),
                        "--no-camera"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^device_id +WARNING device_id 'raspberrypi' is a stock name", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666, 0o602])
def test_a_password_file_others_can_read_is_refused_naming_file_and_mode(mode, tmp_path):
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(mode)
    with pytest.raises(ConfigError) as info:
        config_from_dict({"mqtt": {"password_file": str(secret)}}, env={})
    assert info.value.field == "mqtt.password_file"
    assert str(secret) in info.value.message and f"mode {mode:04o}" in info.value.message
    assert "0640" in info.value.message and "root:maskwatch" in info.value.message
    assert "s3cret" not in str(info.value)


def test_the_password_file_rule_first_line_stripped_private(tmp_path):
    secret = tmp_path / "pw"
    for text, expected in [("s3cret\n", "s3cret"), ("  s3cret \r\nsecond line\n", "s3cret"), ("s3cret", "s3cret")]:
        secret.write_text(text)
        for mode in (0o600, 0o640, 0o400):
            secret.chmod(mode)
            assert read_password_file(secret) == expected
    for text in ("", "\n", "   \nsecond\n"):
        secret.write_text(text)
        with pytest.raises(ValueError, match=f"{re.escape(str(secret))} is empty"):
            read_password_file(secret)
    secret.write_bytes(b"\xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_password_file(secret)
    with pytest.raises(ValueError, match="cannot read .*missing"):
        read_password_file(tmp_path / "missing")


def test_the_alerts_cli_reads_the_password_file_by_the_same_rule(tmp_path):
    import subprocess
    import sys

    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "device.cli", "alerts", "--host", "127.0.0.1", "--port", "1",
                        "--username", "u", "--password-file", str(secret), "--timeout", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"--password-file: {secret} is accessible to every user (mode 0644)" in r.stderr
    assert "s3cret" not in r.stdout + r.stderr


def test_the_example_config_and_readme_agree_on_the_password_files_owner_and_mode():
    example = EXAMPLE.read_text()
    readme = (ROOT / "README.md").read_text()
    assert "chmod 600" not in example
    for text in (example, readme):
        assert re.search(r"0640.{0,40}root:maskwatch|root:maskwatch.{0,40}0640", text, re.S)
    assert "systemctl show" in example


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"mqtt": {"topic_prefix": "x" * 65_520 + "/{device_id}"}}, "mqtt.topic_prefix", "makes a topic that is 65,5"),
    ({"mqtt": {"topic_prefix": "é" * 32_760 + "/{device_id}"}}, "mqtt.topic_prefix", "bytes of UTF-8"),
    ({"mqtt": {"discovery_prefix": "h" * 65_500}}, "mqtt.discovery_prefix", "makes a discovery topic that"),
])
def test_the_longest_resulting_topic_fits_mqtts_limit(data, field, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict({"device_id": "pi", **data}, env={})
    assert info.value.field == field
    assert len(str(info.value)) < 400  # the value is shortened in the message


def test_topics_follow_the_same_rules_for_a_config_built_in_code(tmp_path):
    from device.comms.topics import Topics

    assert Topics.build("site/{device_id}", "door-1").events == "site/door-1/events"
    for template, device_id in [("$SYS/{device_id}", "pi"), ("site/door", "pi"), ("a/{device_id}", "a/b"),
                                ("a/\x1b/{device_id}", "pi"), ("a/../{device_id}", "pi")]:
        with pytest.raises(ValueError):
            Topics.build(template, device_id)


@pytest.mark.parametrize(("hostname", "expected"), [
    ("raspberrypi", "raspberrypi"),
    ("Pi Entrance.local", "pi-entrance"),
    ("door#1+2", "door-1-2"),
    ("", "maskwatch"),
    ("x" * 80, "x" * 64),
])
def test_default_device_id_is_topic_safe(hostname, expected):
    assert default_device_id(hostname) == expected


def test_alert_labels_default_to_both_and_must_be_the_models():
    cfg = config_from_dict({}, env={})
    assert cfg.alerts.labels == ["without_mask", "incorrect_mask"]
    # The default fits a 2-label model (without_mask only) and a 3-label one (both).
    assert cfg.alerts.for_model(["with_mask", "without_mask"]) == ("without_mask",)
    assert cfg.alerts.for_model(["with_mask", "without_mask", "incorrect_mask"]) == ("without_mask", "incorrect_mask")
    chosen = config_from_dict({"alerts": {"labels": ["incorrect_mask"]}}, env={})
    assert chosen.alerts.for_model(["with_mask", "without_mask", "incorrect_mask"]) == ("incorrect_mask",)
    with pytest.raises(ConfigError, match=r"^alerts\.labels: \['incorrect_mask'\] not among the model's labels"):
        chosen.alerts.for_model(["with_mask", "without_mask"])
    everything = config_from_dict({"alerts": {"labels": ["with_mask", "without_mask"]}}, env={})
    with pytest.raises(ConfigError, match="alerts.labels: every label"):
        everything.alerts.for_model(["with_mask", "without_mask"])
