"""The daemon's ``config.toml`` for the card, from flags or an existing config, and its secrets.

Secrets never go into the config: the broker and web passwords travel as separate files in
``maskwatch/secrets/`` (the FAT partition is readable by anyone holding the card, so first boot
moves them to ``/etc/maskwatch`` as root:maskwatch 0640 and deletes them from the card), and the
config names them where they will be on the Pi. The result is validated with the daemon's own
loader before anything is written, so a typo fails here, not on the Pi at the entrance.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.config import config_from_dict, read_password_file, tomllib
from train.toml_writer import to_toml

ETC = "/etc/maskwatch"
MQTT_SECRET = "mqtt-password"
WEB_SECRET = "web-password"
HEADER = ("# Written by `maskwatch provision`. First boot installs it as /etc/maskwatch/config.toml;\n"
          "# every field is explained in systemd/config.example.toml.\n")


@dataclass
class CardConfig:
    text: str  # config.toml as it goes on the card
    secrets: dict[str, str] = field(default_factory=dict)  # file name in maskwatch/secrets -> content


def _read_config(path: Path) -> dict[str, Any]:
    if tomllib is None:
        raise RuntimeError("reading --config needs Python >= 3.11 or the 'tomli' package")
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path}: invalid TOML: {exc}") from None


def _secret(path: Path, what: str) -> str:
    try:
        return read_password_file(path)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def card_config(*, config: Path | None = None, mqtt_host: str | None = None, device_id: str | None = None,
                mqtt_password_file: Path | None = None, web_password: str | None = None) -> CardConfig:
    """The card's config and secrets; flags win over ``config``'s values. ValueError naming the
    flag or field on anything the daemon would refuse."""
    data: dict[str, Any] = _read_config(config) if config else {}
    base = Path(config).resolve().parent if config else Path.cwd()
    secrets: dict[str, str] = {}
    if device_id is not None:
        data["device_id"] = device_id
    mqtt = data.setdefault("mqtt", {})
    if mqtt_host is not None:
        mqtt["host"] = mqtt_host
    if not mqtt.get("host"):
        raise ValueError("give the broker the Pi will publish to: --mqtt-host HOST (or [mqtt] host in --config)")
    if mqtt.get("password"):
        raise ValueError(f"--config {config}: [mqtt] password is written in the file; the card is readable by "
                         "anyone who holds it: put the password in a file and give --mqtt-password-file FILE")
    pw_file = mqtt_password_file or (base / mqtt["password_file"] if mqtt.get("password_file") else None)
    if pw_file is not None:
        secrets[MQTT_SECRET] = _secret(Path(pw_file), "--mqtt-password-file" if mqtt_password_file else
                                       "[mqtt] password_file")
        mqtt["password_file"] = f"{ETC}/{MQTT_SECRET}"
    web = data.get("web")
    if web_password is not None:
        if not web_password.strip():
            raise ValueError("--web-password: empty")
        secrets[WEB_SECRET] = web_password.strip()
        web = {**(web or {}), "enabled": True, "password_file": f"{ETC}/{WEB_SECRET}"}
    elif web and web.get("password_file"):
        secrets[WEB_SECRET] = _secret(base / web["password_file"], "[web] password_file")
        web = {**web, "password_file": f"{ETC}/{WEB_SECRET}"}
    if web is not None:
        data["web"] = web
    _validate(data, secrets)
    return CardConfig(HEADER + "\n" + to_toml(data), secrets)


def _validate(data: dict[str, Any], secrets: dict[str, str]) -> None:
    """The daemon's loader on ``data``, with the secrets at stand-in paths (they are not in
    /etc/maskwatch yet)."""
    probe = copy.deepcopy(data)
    with tempfile.TemporaryDirectory(prefix="maskwatch-provision-") as tmp:
        for name, value in secrets.items():
            p = Path(tmp) / name
            p.touch(mode=0o600)
            p.write_text(value + "\n", encoding="utf-8")
        if MQTT_SECRET in secrets:
            probe["mqtt"]["password_file"] = str(Path(tmp) / MQTT_SECRET)
        if WEB_SECRET in secrets and "web" in probe:
            probe["web"]["password_file"] = str(Path(tmp) / WEB_SECRET)
        try:
            config_from_dict(probe, env={}, base_dir=Path(ETC))
        except ValueError as exc:
            raise ValueError(f"the config for the card: {exc}") from None
