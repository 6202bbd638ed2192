"""The offline aarch64 wheelhouse: every pinned device dependency, for the card's Python.

The Pi installs with ``pip --no-index --find-links`` from the card, so the card must carry a wheel
for every package ``pip install maskwatch[device]`` needs there, built for aarch64 and the OS
release's CPython. The versions are exactly ``systemd/constraints-device.txt`` (what
``install.sh`` pins on a Pi with internet); numpy is not among them: the venv uses the system's
(picamera2 is built against it). Each pin is fetched on its own with ``pip download --no-deps``
(a line of progress per package) into a cache on the workstation; a pin whose wheel is already
cached is not fetched again, so a second card needs no network at all. Our own package goes in as
a wheel built from this checkout (reproducibly: fixed file times, so an unchanged checkout gives
the same bytes and a second provision changes nothing).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: aarch64 wheel tags a Raspberry Pi OS (glibc 2.36 on Bookworm, 2.41 on Trixie) accepts that
#: the pinned packages publish; pip download takes only the platforms it is given.
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64",
             "manylinux_2_17_aarch64", "any")
#: A fixed time for the files of our own wheel (zip cannot hold times before 1980).
SOURCE_DATE_EPOCH = "315532800"

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


def normalize(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427/503: runs of -_. become _)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def read_pins(constraints: Path) -> list[Pin]:
    """The ``name==version`` lines of a constraints file (comments and blank lines skipped)."""
    pins = []
    for n, raw in enumerate(Path(constraints).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!-]+)", line)
        if m is None:
            raise ValueError(f"{constraints}:{n}: expected name==version, got {raw.strip()!r}")
        pins.append(Pin(m.group(1), m.group(2)))
    return pins


def python_tag(python: str) -> str:
    return "cp" + python.replace(".", "")


def wheel_fits(filename: str, pin: Pin, python: str) -> bool:
    """Whether ``filename`` is a wheel of ``pin`` that installs on aarch64 CPython ``python``."""
    if not filename.endswith(".whl"):
        return False
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6) or normalize(parts[0]) != normalize(pin.name) or parts[1] != pin.version:
        return False
    pyt, abi, plat = parts[-3], parts[-2], parts[-1]
    cp = python_tag(python)
    py_ok = any(t in (cp, "py3", "py2.py3") or (t.startswith("cp3") and abi == "abi3" and int(t[3:]) <= int(cp[3:]))
                for t in pyt.split("."))
    abi_ok = any(a in (cp, "abi3", "none") for a in abi.split("."))
    plat_ok = any(p in PLATFORMS for p in plat.split("."))
    return py_ok and abi_ok and plat_ok


def find_cached(cache: Path, pin: Pin, python: str) -> Path | None:
    if not cache.is_dir():
        return None
    hits = sorted(p for p in cache.iterdir() if wheel_fits(p.name, pin, python))
    return hits[0] if hits else None


def download_command(pin: Pin, python: str, dest: Path, pip_args: Sequence[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--implementation", "cp", "--python-version", python, "-d", str(dest)]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    return [*cmd, *pip_args, pin.spec]


def fetch_wheels(pins: Sequence[Pin], python: str, cache: Path, pip_args: Sequence[str] = (),
                 runner: Runner = subprocess.run, say: Callable[[str], None] = print) -> list[Path]:
    """One wheel per pin for aarch64 CPython ``python``, from ``cache`` or downloaded into it."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for i, pin in enumerate(pins, 1):
        hit = find_cached(cache, pin, python)
        if hit is None:
            say(f"  [{i}/{len(pins)}] {pin.spec}: downloading (aarch64, Python {python})")
            r = runner(download_command(pin, python, cache, pip_args), capture_output=True, text=True)
            if r.returncode != 0:
                tail = "\n".join((r.stderr or r.stdout or "").strip().splitlines()[-5:])
                raise RuntimeError(f"pip download {pin.spec} for aarch64 Python {python} failed:\n{tail}")
            hit = find_cached(cache, pin, python)
            if hit is None:
                raise RuntimeError(f"pip download {pin.spec} saved no aarch64 wheel for Python {python} in {cache}")
        else:
            say(f"  [{i}/{len(pins)}] {pin.spec}: cached ({hit.name})")
        out.append(hit)
    return out


#: pyproject.toml's build requirement (PEP 639 license field).
SETUPTOOLS = "setuptools>=77"


def _setuptools_ok() -> bool:
    try:
        from importlib.metadata import version

        return int(version("setuptools").split(".")[0]) >= 77
    except Exception:
        return False


def build_own_wheel(src: Path, cache: Path, runner: Runner = subprocess.run) -> tuple[str, bytes]:
    """(file name, bytes) of this checkout's wheel, built reproducibly (fixed file times).

    With setuptools >= 77 installed (``make setup``) the build needs nothing else; otherwise pip
    builds in an isolated env whose setuptools wheel is kept in ``cache/build`` (downloaded once).
    """
    with tempfile.TemporaryDirectory(prefix="maskwatch-wheel-") as tmp:
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "-q", "-w", tmp]
        if _setuptools_ok():
            cmd.append("--no-build-isolation")
        else:
            build = cache / "build"
            if not any(build.glob("setuptools-*.whl")):
                r = runner([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                            "--only-binary=:all:", "--no-deps", "-d", str(build), SETUPTOOLS],
                           capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"pip download {SETUPTOOLS} (to build the maskwatch wheel) failed:\n"
                                       f"{(r.stderr or r.stdout)[-1500:]}")
            env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(build))
        r = runner([*cmd, str(src)], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"building the maskwatch wheel from {src} failed:\n{(r.stderr or r.stdout)[-2000:]}")
        wheels = list(Path(tmp).glob("maskwatch-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"building the maskwatch wheel from {src} gave {len(wheels)} wheels")
        return wheels[0].name, wheels[0].read_bytes()


def default_cache(python: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "maskwatch" / "wheels" / f"{python_tag(python)}-aarch64"
