"""The README's commands are real: every maskwatch / maskwatch-device / make command it shows exists
and its options parse, so the README cannot drift from the code unnoticed."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from device import cli as device_cli
from device import cli_base
from train import cli as train_cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def shell_lines(text: str | None = None) -> list[str]:
    """Command lines of the ```sh blocks of ``text`` (default: the whole README), comments stripped."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def maskwatch_commands() -> list[list[str]]:
    """maskwatch / maskwatch-device command lines (``sudo -u USER`` and install paths dropped)."""
    out = []
    for line in shell_lines():
        words = shlex.split(line)
        if words[:1] == ["sudo"]:
            words = words[3:] if words[1:2] == ["-u"] else words[1:]
        if words and Path(words[0]).name in ("maskwatch", "maskwatch-device"):
            out.append([Path(words[0]).name, *words[1:]])
    return out


def test_the_readme_shows_commands_of_both_sides():
    names = {c[0] for c in maskwatch_commands()}
    assert names == {"maskwatch", "maskwatch-device"}
    assert len(maskwatch_commands()) >= 10


@pytest.mark.parametrize("command", maskwatch_commands(), ids=lambda c: " ".join(c[:3]))
def test_each_readme_command_parses(command):
    prog, argv = command[0], command[1:]
    table, description = ((train_cli.COMMANDS, "workstation") if prog == "maskwatch"
                          else (device_cli.COMMANDS, "device"))
    args = cli_base.parse(prog, description, table, argv)  # argparse exits (SystemExit) on a bad option
    assert callable(args._main)


def test_each_make_target_in_the_readme_exists():
    targets = {w for line in shell_lines() for w in shlex.split(line)[1:2] if line.startswith("make ")}
    assert {"demo", "test", "lint", "bench"} <= targets
    for target in targets:
        proc = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, f"make {target}: {proc.stderr}"
