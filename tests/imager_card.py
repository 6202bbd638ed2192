"""Lay out a card's boot partition as Raspberry Pi Imager leaves it (fixtures in tests/imager_cards/).

Used by the provision tests and by ``make test-arm64`` (tests/arm64_emulated.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

CARDS = Path(__file__).resolve().parent / "imager_cards"
STYLES = ("cloudinit", "firstrun")


def make_card(boot: Path, style: str) -> Path:
    """A boot folder at ``boot`` as Imager leaves a card of ``style`` (cloudinit: Trixie; firstrun: Bookworm)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    boot.mkdir(parents=True, exist_ok=True)
    shutil.copy(CARDS / "config.txt", boot / "config.txt")
    for f in (CARDS / style).iterdir():
        shutil.copy(f, boot / f.name)
    for name in ("start4.elf", "kernel8.img", "bcm2712-rpi-5-b.dtb"):  # firmware, for the look of it
        (boot / name).write_bytes(b"\0" * 16)
    return boot
