"""The first-boot hook on a cloud-init card: one ``runcmd`` entry merged into Imager's ``user-data``.

Imager writes ``user-data`` with the user, SSH keys, host name and locale the person chose (and
``network-config`` beside it, which we never touch). We parse it (PyYAML), append our command to
``runcmd`` (Imager's own entries, e.g. enabling ssh, stay first and unchanged), leave every other
key as it was, and write it back with the ``#cloud-config`` header cloud-init requires. ``runcmd``
runs once per instance, late in the first boot (after users, keys and network are set up), as
root. The merge is idempotent: a user-data that already holds our entry is returned unchanged.
"""

from __future__ import annotations

from typing import Any

import yaml

HEADER = "#cloud-config"
#: Where Raspberry Pi OS (Bookworm and later) mounts the FAT boot partition.
BOOT_MOUNT = "/boot/firmware"
FIRSTBOOT_CMD = ["bash", f"{BOOT_MOUNT}/maskwatch/firstboot.sh", "--boot-dir", BOOT_MOUNT]


class UserDataError(ValueError):
    pass


def load_user_data(text: str, name: str = "user-data") -> dict[str, Any]:
    """The cloud-config mapping of ``text``; UserDataError naming ``name`` when it is not one."""
    if not text.lstrip().startswith(HEADER):
        raise UserDataError(f"{name}: not a cloud-config file (the first line must be {HEADER})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserDataError(f"{name}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserDataError(f"{name}: must be a mapping of cloud-config keys, got a {type(data).__name__}")
    return data


def with_firstboot(data: dict[str, Any], name: str = "user-data") -> dict[str, Any]:
    """A copy of ``data`` whose ``runcmd`` ends with the maskwatch first-boot command (once)."""
    runcmd = data.get("runcmd", [])
    if runcmd is None:
        runcmd = []
    if not isinstance(runcmd, list):
        raise UserDataError(f"{name}: runcmd must be a list, got {type(runcmd).__name__}")
    if FIRSTBOOT_CMD in runcmd:
        return dict(data)
    return {**data, "runcmd": [*runcmd, list(FIRSTBOOT_CMD)]}


def merged_user_data(text: str, name: str = "user-data") -> str:
    """``text`` with the first-boot command merged in; ``text`` itself when it is already there."""
    data = load_user_data(text, name)
    merged = with_firstboot(data, name)
    if merged == data:
        return text
    body = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return f"{HEADER}\n{body}"
