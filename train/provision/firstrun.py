"""The first-boot hook on a Bookworm card: a block chained into Imager's ``firstrun.sh``.

``cmdline.txt`` runs ``firstrun.sh`` once (``systemd.run=``), early in the first boot, and the Pi
reboots after it; the script ends by deleting itself and its ``cmdline.txt`` entry. Our block goes
right before that clean-up (so it runs even though the script ends with ``exit 0``), runs the
first-boot install with ``--no-start`` (the service starts on the reboot that follows: this early
there is no network yet and ``multi-user.target`` is not reached), and never fails the script, so
Imager's own settings are applied whatever happens to ours. Idempotent: a script that holds the
block is returned unchanged.
"""

from __future__ import annotations

import re

BEGIN = "# >>> maskwatch: first-boot install from the card (added by `maskwatch provision`)"
END = "# <<< maskwatch"
BLOCK = f"""{BEGIN}
for MASKWATCH_BOOT in /boot/firmware /boot; do
    if [ -f "$MASKWATCH_BOOT/maskwatch/firstboot.sh" ]; then
        bash "$MASKWATCH_BOOT/maskwatch/firstboot.sh" --boot-dir "$MASKWATCH_BOOT" --no-start || true
        break
    fi
done
{END}
"""
#: Imager's last lines: delete the script, drop it from cmdline.txt, exit.
_CLEANUP = re.compile(r"^rm -f /boot/(firmware/)?firstrun\.sh\s*$|^exit 0\s*$", re.M)


class FirstrunError(ValueError):
    pass


def chained_firstrun(text: str, name: str = "firstrun.sh") -> str:
    """``text`` with our block before Imager's clean-up; ``text`` itself when the block is there."""
    if BEGIN in text:
        if END not in text:
            raise FirstrunError(f"{name}: holds the start of the maskwatch block but not its end ({END!r}); "
                                "restore the file Imager wrote, then run provision again")
        return text
    if not text.startswith("#!"):
        raise FirstrunError(f"{name}: not a shell script (no #! line); write the card again with Imager")
    m = _CLEANUP.search(text)
    if m is None:  # no clean-up: nothing can skip a block at the end
        return text + ("" if text.endswith("\n") else "\n") + BLOCK
    return text[: m.start()] + BLOCK + text[m.start():]
