"""`maskwatch data fetch` against a local HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from device.manifest import read_manifest
from tests.test_data_import import make_tree, visible_files
from train import cli
from train.data.fetch import cache_path, fetch


class _Files:
    """What the server serves: {path: bytes}; ``short`` paths send half the body, then hang up."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)


def _handler(state: _Files):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            state.requests.append((self.path, self.headers.get("Range")))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and self.path not in state.short:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if self.path in state.short:
                self.wfile.write(data[: len(data) // 2])  # then the connection closes (HTTP/1.0)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def server():
    state = _Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def archive(tmp_path) -> bytes:
    tree = make_tree(tmp_path / "tree")
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in visible_files(tree):
            zf.write(f, "faces/" + f.relative_to(tree).as_posix())
    return path.read_bytes()


def test_fetch_downloads_verifies_imports_and_then_uses_the_cache(server, archive, tmp_path, capsys):
    server.files["/sets/faces%20v1.zip"] = archive
    url = f"{server.base}/sets/faces%20v1.zip"
    sha = hashlib.sha256(archive).hexdigest()
    cache = tmp_path / "cache"
    args = ["data", "fetch", url, "--sha256", sha.upper(), "--out", str(tmp_path / "ds"), "--cache", str(cache)]
    assert cli.main(args) == 0
    assert "imported 6 images" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "ds")) == 6
    assert [p.name for p in cache.iterdir()] == [cache_path(url, sha, cache).name]
    assert cache_path(url, sha, cache).read_bytes() == archive

    n = len(server.requests)
    assert cli.main(args + ["--force"]) == 0  # verified cached archive: no second download
    assert len(server.requests) == n


def test_wrong_checksum_deletes_the_download_and_imports_nothing(server, archive, tmp_path, capsys):
    server.files["/set.zip"] = archive
    wrong = hashlib.sha256(b"something else").hexdigest()
    cache = tmp_path / "cache"
    code = cli.main(["data", "fetch", f"{server.base}/set.zip", "--sha256", wrong, "--out", str(tmp_path / "ds"),
                     "--cache", str(cache)])
    assert code == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and wrong in err and hashlib.sha256(archive).hexdigest() in err
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "ds").exists()


def test_broken_connection_is_a_clear_error_and_the_next_run_resumes(server, archive, tmp_path):
    server.files["/set.zip"] = archive
    server.short.add("/set.zip")
    sha = hashlib.sha256(archive).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match=rf"broke off: received {len(archive) // 2} of {len(archive)} bytes"):
        fetch(f"{server.base}/set.zip", sha, tmp_path / "ds", cache=cache)
    assert not (tmp_path / "ds").exists()
    final = cache_path(f"{server.base}/set.zip", sha, cache)
    assert not final.exists()
    part = final.with_name(final.name + ".part")
    assert part.read_bytes() == archive[: len(archive) // 2]

    server.short.clear()
    report = fetch(f"{server.base}/set.zip", sha, tmp_path / "ds", cache=cache)
    assert report.imported == 6
    assert server.requests[-1] == ("/set.zip", f"bytes={len(archive) // 2}-")  # resumed, not restarted
    assert final.read_bytes() == archive and not part.exists()


def test_errors_before_any_download(server, archive, tmp_path):
    server.files["/set.zip"] = archive
    sha = hashlib.sha256(archive).hexdigest()
    (tmp_path / "ds").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        fetch(f"{server.base}/set.zip", sha, tmp_path / "ds", cache=tmp_path / "cache")
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch(f"{server.base}/set.zip", "abc123", tmp_path / "new", cache=tmp_path / "cache")
    assert server.requests == []
    with pytest.raises(RuntimeError, match="HTTP 404"):
        fetch(f"{server.base}/missing.zip", sha, tmp_path / "new", cache=tmp_path / "cache")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match="cannot download"):
        fetch(f"http://127.0.0.1:{closed_port}/set.zip", sha, tmp_path / "new", cache=tmp_path / "cache")
    assert not (tmp_path / "new").exists()
    assert not any(Path(tmp_path / "cache").glob("*.zip"))
