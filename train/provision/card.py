"""Which card is this? Raspberry Pi OS as Raspberry Pi Imager leaves its FAT boot partition.

Imager customises a card in one of two ways (rpi-imager ``doc/os_customisation_formats.md``):
Bookworm images (and the first Trixie release) get a ``firstrun.sh`` that ``cmdline.txt`` runs
once (``systemd.run=/boot/firstrun.sh``); newer Trixie images get cloud-init's NoCloud files
``user-data``, ``meta-data`` and ``network-config``. The release decides the Python the wheels
must be built for (Bookworm 3.11, Trixie 3.13). The FAT partition does not name the release, but
pi-gen writes the image's build date to ``issue.txt`` ("Raspberry Pi reference 2025-10-01"):
Trixie images start on 2025-10-01, and every cloud-init image is Trixie.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

#: Debian release -> the CPython its python3 is (the wheels' --python-version).
PYTHON_OF_RELEASE = {"bookworm": "3.11", "trixie": "3.13"}
#: The first Raspberry Pi OS image built on Trixie (pi-gen's issue.txt date).
FIRST_TRIXIE_IMAGE = dt.date(2025, 10, 1)
FIRSTRUN = "firstrun.sh"
USER_DATA = "user-data"


class CardError(ValueError):
    """This folder is not a card provision knows how to set up; the message says why and what to do."""


@dataclass(frozen=True)
class Card:
    boot_dir: Path
    init: str  # "cloud-init" | "firstrun"
    release: str  # "bookworm" | "trixie"
    release_from: str  # how the release was found (printed, so a wrong guess is visible)

    @property
    def python(self) -> str:
        return PYTHON_OF_RELEASE[self.release]

    @property
    def init_file(self) -> Path:
        return self.boot_dir / (USER_DATA if self.init == "cloud-init" else FIRSTRUN)


def image_date(boot_dir: Path) -> dt.date | None:
    """The build date pi-gen wrote to ``issue.txt``, or None."""
    try:
        text = (boot_dir / "issue.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.search(r"Raspberry Pi reference (\d{4})-(\d{2})-(\d{2})", text)
    return dt.date(*map(int, m.groups())) if m else None


def detect_card(boot_dir: Path, release: str | None = None) -> Card:
    """The card in ``boot_dir`` (its mounted FAT boot partition); CardError when it is not one
    provision recognises. ``release`` overrides the guess from the image date."""
    boot_dir = Path(boot_dir)
    if not boot_dir.is_dir():
        raise CardError(f"{boot_dir}: no such folder (give the mounted boot partition of the card, "
                        "e.g. /media/$USER/bootfs)")
    missing = [n for n in ("cmdline.txt", "config.txt") if not (boot_dir / n).is_file()]
    if missing:
        raise CardError(f"{boot_dir} is not a Raspberry Pi OS boot partition (no {' or '.join(missing)}): "
                        "give the mounted FAT partition of a card flashed with Raspberry Pi OS Lite 64-bit")
    config_txt = (boot_dir / "config.txt").read_text(encoding="utf-8", errors="replace")
    if re.search(r"^\s*arm_64bit\s*=\s*0\s*$", config_txt, re.M):
        raise CardError(f"{boot_dir / 'config.txt'} sets arm_64bit=0: LiteRT has no 32-bit ARM wheels; "
                        "flash Raspberry Pi OS Lite (64-bit)")
    if release is not None and release not in PYTHON_OF_RELEASE:
        raise CardError(f"--release must be one of {', '.join(PYTHON_OF_RELEASE)}, got {release!r}")

    user_data, firstrun = boot_dir / USER_DATA, boot_dir / FIRSTRUN
    if user_data.is_file():
        head = user_data.read_text(encoding="utf-8", errors="replace").lstrip()[:64]
        if not head.startswith("#cloud-config"):
            raise CardError(f"{user_data} is not a #cloud-config file (it starts {head[:20]!r}); "
                            "write the card again with Raspberry Pi Imager and its OS customisation")
        return Card(boot_dir, "cloud-init", release or "trixie",
                    "--release" if release else "cloud-init (only Trixie images use it)")
    if firstrun.is_file():
        cmdline = (boot_dir / "cmdline.txt").read_text(encoding="utf-8", errors="replace")
        if "systemd.run=/boot/firstrun.sh" not in cmdline and "systemd.run=/boot/firmware/firstrun.sh" not in cmdline:
            raise CardError(f"{firstrun} exists but {boot_dir / 'cmdline.txt'} does not run it "
                            "(no systemd.run=/boot/firstrun.sh): it would never run; write the card again with Imager")
        if release:
            return Card(boot_dir, "firstrun", release, "--release")
        date = image_date(boot_dir)
        if date is None:
            raise CardError(f"cannot tell the Raspberry Pi OS release of {boot_dir} (no date in issue.txt): "
                            "give --release bookworm or --release trixie")
        guess = "trixie" if date >= FIRST_TRIXIE_IMAGE else "bookworm"
        return Card(boot_dir, "firstrun", guess, f"image date {date} in issue.txt")
    if (boot_dir / "rpi-preseed.toml").is_file():
        raise CardError(f"{boot_dir} was customised with rpi-preseed.toml, which provision does not support yet; "
                        "in Imager choose an OS image that uses cloud-init, or set up the Pi with systemd/install.sh")
    raise CardError(f"{boot_dir}: Imager did not customise this card (no {USER_DATA} and no {FIRSTRUN}): "
                    "write it again with Raspberry Pi Imager and set host name, Wi-Fi and SSH in its OS customisation")
