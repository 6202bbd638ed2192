"""``maskwatch data fetch``: download a dataset archive, verify its sha256, then import it.

The checksum is required: a dataset that silently changed upstream would otherwise change every
model trained on it. Downloads go to ``CACHE/<sha256 prefix>-<name>.part`` and are renamed only
once complete and verified, so the cache never holds a half or wrong archive under its real name.
A broken connection leaves the ``.part`` behind and the next run resumes it with an HTTP Range
request (or starts over if the server ignores ranges); a checksum mismatch deletes it. Nothing is
imported unless the archive verified, and the import itself writes its output atomically.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from device.contract import sha256_file
from train.data.importer import ImportReport, add_import_options, import_sources

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT = 60.0


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maskwatch" / "downloads"


def _check_sha(sha256: str) -> str:
    sha = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    return sha


def cache_path(url: str, sha256: str, cache: Path) -> Path:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return Path(cache) / f"{sha256[:16]}-{name}"


def download(url: str, sha256: str, cache: Path, timeout: float = TIMEOUT, progress: bool | None = None) -> Path:
    """The verified archive in ``cache``, downloaded (or resumed) when it is not there yet."""
    sha256 = _check_sha(sha256)
    final = cache_path(url, sha256, cache)
    if final.exists():
        if sha256_file(final) == sha256:
            log.info("using cached %s", final)
            return final
        final.unlink()  # someone changed the cached file: fetch it again
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for attempt in (1, 2):
        try:
            _fetch_to(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists() and attempt == 1:
                part.unlink()  # our .part is not a prefix the server can continue: start over
                continue
            raise RuntimeError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    digest = sha256_file(part)
    if digest != sha256:
        part.unlink()
        raise ValueError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; "
                         "the download was deleted and nothing was imported")
    part.replace(final)
    return final


def _fetch_to(url: str, part: Path, timeout: float, progress: bool | None) -> None:
    from tqdm import tqdm

    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "maskwatch-data-fetch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"cannot download {url}: {reason}") from None
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        resumed = bool(start) and status == 206 and _range_start(resp.headers.get("Content-Range")) == start
        if not resumed:
            start = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        got = 0
        bar = tqdm(total=None if expected is None else start + expected, initial=start, unit="B", unit_scale=True,
                   desc=part.name.removesuffix(".part"), disable=None if progress is None else not progress)
        try:
            with open(part, "ab" if resumed else "wb") as f, bar:
                while block := resp.read(CHUNK):
                    f.write(block)
                    got += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise RuntimeError(f"download of {url} broke off after {start + got} bytes ({exc}); "
                               f"run again to resume from {part}") from None
    if expected is not None and got < expected:
        raise RuntimeError(f"download of {url} broke off: received {start + got} of {start + expected} bytes; "
                           f"the partial file {part} is kept, run again to resume")
    log.info("downloaded %s (%d bytes%s)", url, start + got, f", resumed at {start}" if resumed else "")


def _range_start(content_range: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-", content_range or "")
    return int(m.group(1)) if m else None


def fetch(url: str, sha256: str, out: Path, cache: Path | None = None, force: bool = False,
          **import_options) -> ImportReport:
    """Download (verified) and import; the output folder is checked before anything is downloaded."""
    sha256 = _check_sha(sha256)
    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"--out {out} already exists; pass --force to replace it")
    archive = download(url, sha256, Path(cache) if cache is not None else default_cache())
    return import_sources([archive], out, force=force, **import_options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="http(s) URL of a .zip / .tar.gz dataset archive")
    parser.add_argument("--sha256", required=True, help="expected sha256 of the archive (64 hex digits)")
    parser.add_argument("--cache", type=Path, default=None,
                        help=f"download cache (default {default_cache()})")
    add_import_options(parser)


def main(args: argparse.Namespace) -> int:
    report = fetch(args.url, args.sha256, args.out, cache=args.cache, force=args.force, margin=args.margin,
                   min_face=args.min_face, near_threshold=args.near_threshold, jobs=args.jobs)
    print(report.summary())
    return 0
