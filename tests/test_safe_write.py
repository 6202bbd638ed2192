"""The one way the device writes a file: private temp file, fsync, rename; never through a link."""

from __future__ import annotations

import os
import stat

import pytest

from device.safe_write import UnsafePathError, is_leftover, make_private_dir, write_file


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_replaces_whole_with_the_asked_mode_whatever_the_umask(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    old = os.umask(0)
    try:
        write_file(target, b"new" * 1000, mode=0o600)
        write_file(tmp_path / "public.tflite", b"model", mode=0o644)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" * 1000 and mode(target) == 0o600
    assert mode(tmp_path / "public.tflite") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "public.tflite"]  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("{}")
    with pytest.raises(TypeError):
        write_file(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_links_are_refused_where_they_could_redirect_the_write(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x").symlink_to(victim)
    with pytest.raises(UnsafePathError, match=f"{folder / 'x'} is a symbolic link"):
        write_file(folder / "x", b"evil")
    (folder / "dangling").symlink_to(tmp_path / "nowhere")  # a dangling link would create the file
    with pytest.raises(UnsafePathError):
        write_file(folder / "dangling", b"evil")
    assert victim.read_text() == "keep" and not (tmp_path / "nowhere").exists()
    own = tmp_path / "own-link"
    own.symlink_to(folder)  # a link we made ourselves to a folder is fine
    write_file(own / "y", b"ok")
    assert (folder / "y").read_bytes() == b"ok"


def test_private_dir_and_leftover_names(tmp_path):
    old = os.umask(0)
    try:
        d = make_private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert mode(d) == 0o700
    os.chmod(d, 0o755)
    assert mode(make_private_dir(d)) == 0o700
    assert is_leftover(".x.jpg.0a1b2c.part") and is_leftover("x.jpg.part") and not is_leftover("x.jpg")
