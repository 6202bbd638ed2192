"""Writing files into a folder another user may own, without being tricked into writing elsewhere.

``fetch-models`` runs as root from ``install.sh`` and writes into ``/var/lib/maskwatch/models``,
which belongs to the service user; the daemon writes face crops into its state folder, where a
person may have put things by hand. Writing ``<name>.part`` with a plain ``open()`` follows a
symbolic link planted under that name, so whoever owns the folder could make root overwrite
any file with model bytes. Every file the device writes goes through :func:`write_file`:

* the folder is opened once and everything happens relative to it (a folder swapped for a
  symbolic link half way through is not followed);
* a symbolic link as the folder's last component is followed only when it belongs to us or to
  root (a checkout's ``models -> ../elsewhere/models`` works, one planted by another user does not);
* the data goes to a fresh temporary file created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (it
  cannot be anything that existed before), its mode set with ``fchmod`` (no umask involved),
  fsynced, then renamed over the destination (readers see the old file or the new one, never
  half of one; a power cut leaves at most a ``.part`` file that :func:`is_leftover` recognises);
* a destination that is a symbolic link is refused with an error naming it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

#: Temporary files are ``.<name>.<random>.part``: hidden, and never ``*.jpg``/``*.tflite``, so an
#: importer or a loader never sees half a file.
PART_SUFFIX = ".part"


class UnsafePathError(PermissionError):
    """A destination that could redirect the write (a symbolic link, a folder planted by another
    user). A PermissionError, so callers that survive OSErrors (the daemon) keep running and the
    command line prints it as one line."""


def _refuse_foreign_link(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) and st.st_uid not in (0, os.geteuid()):
        raise UnsafePathError(
            f"{path} is a symbolic link (to {os.readlink(path)}) owned by uid {st.st_uid}, not by us or root; "
            f"refusing to write through it: replace it with a real folder"
        )


def open_folder(folder: Path) -> int:
    """A file descriptor of ``folder`` for ``dir_fd`` calls (see the module doc for the symlink rule)."""
    folder = Path(folder)
    _refuse_foreign_link(folder)
    real = os.path.realpath(folder)
    # O_NOFOLLOW: if the last component was swapped for a link since realpath, fail (ELOOP).
    return os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def write_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with exactly ``mode``; see the module doc."""
    path = Path(path)
    name = path.name
    dfd = open_folder(path.parent)
    tmp: str | None = None
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(
                f"{path} is a symbolic link (to {os.readlink(name, dir_fd=dfd)}); refusing to write through it: "
                f"remove it and try again"
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(100):
            candidate = f".{name}.{secrets.token_hex(6)}{PART_SUFFIX}"
            try:
                fd = os.open(candidate, flags, 0o600, dir_fd=dfd)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise FileExistsError(f"{path.parent}: cannot create a temporary file for {name}")
        with os.fdopen(fd, "wb") as f:  # a file object: write() loops over short writes
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = None
        os.fsync(dfd)  # the rename itself survives a power cut
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):  # the error that got us here is the one to report
                os.unlink(tmp, dir_fd=dfd)
        os.close(dfd)


def make_private_dir(path: Path, mode: int = 0o700) -> Path:
    """``mkdir -p`` and set ``mode`` on the last folder whatever the umask (when it is ours to change)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _refuse_foreign_link(path)
    st = os.stat(path)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
    return path


def is_leftover(name: str) -> bool:
    """A temporary file of :func:`write_file` (or of older versions: ``<name>.part``) left by a crash."""
    return name.endswith(PART_SUFFIX)
