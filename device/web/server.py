"""What each URL of the page answers, and who may ask (standard library ``http.server``).

Routes (everything but ``/login`` needs a session: pages redirect to ``/login``, the rest
answers 401):

=====================  ======  =====================================================
``/``                  GET     the page (live view, status, zones, test alert)
``/login``             GET     the login form;  POST: log in (form + login token)
``/logout``            POST    log out
``/stream.mjpg``       GET     the annotated live view, MJPEG, at most ``web.max_fps``
``/frame.jpg``         GET     one fresh annotated frame (the zone editor's picture)
``/api/status``        GET     the latest ``state`` document, the last events, the zones
``/api/zones``         POST    save zones (JSON) into the config file; applied without restart
``/api/test-alert``    POST    publish a ``test`` event to every sink
``/static/<name>``     GET     only the files shipped in ``device/web/static/``
=====================  ======  =====================================================

Every POST but the login needs the session's CSRF token in ``X-CSRF-Token``. Anything else is
404, including every path that is not exactly one of the shipped files' names (no path is ever
joined to a folder, so ``..`` has nothing to climb).
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import time
import urllib.parse
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from device.web.auth import (
    CSRF_HEADER,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    LoginLimiter,
    Session,
    Sessions,
    new_token,
    same_secret,
)

log = logging.getLogger("maskwatch.web")

#: Largest request body accepted (the zones are a few hundred bytes).
MAX_BODY = 64 * 1024
#: Connections served at once (each is a thread; the unit allows 64 tasks in all).
MAX_CONNECTIONS = 16
STREAM_BOUNDARY = "maskwatchframe"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGES = {"/": "index.html"}
GET_ROUTES = {"/", "/login", "/stream.mjpg", "/frame.jpg", "/api/status"}
POST_ROUTES = {"/login", "/logout", "/api/zones", "/api/test-alert"}


def static_files() -> dict[str, tuple[bytes, str]]:
    """Name -> (bytes, content type) of every file shipped in ``device/web/static``."""
    out = {}
    for entry in resources.files("device.web").joinpath("static").iterdir():
        if entry.is_file():
            ctype = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/javascript", "text/javascript"):
                ctype += "; charset=utf-8"
            out[entry.name] = (entry.read_bytes(), ctype)
    return out


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], page: Any, password: str):
        self.page = page
        self.password = password
        self.sessions = Sessions()
        self.limiter = LoginLimiter()
        self.files = static_files()
        self.active = 0
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.active >= MAX_CONNECTIONS:  # refuse instead of growing threads without bound
            self.shutdown_request(request)
            return
        self.active += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.active -= 1


def make_server(page: Any, password: str) -> WebServer:
    return WebServer((page.web.bind, page.web.port), page, password)


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "maskwatch"
    sys_version = ""
    timeout = 30  # a client that stops sending mid-request is dropped

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.client_address[0], format % args)

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        static = path.startswith("/static/")
        if static and path[len("/static/"):] not in self.server.files:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        if not static and path not in GET_ROUTES | POST_ROUTES:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        if path == "/login":
            return self._login_form() if method == "GET" else self._login()
        session = self.server.sessions.get(self._cookie(SESSION_COOKIE), time.monotonic())
        if session is None:
            if method == "GET" and (path in PAGES):
                return self._redirect("/login")
            return self._error(HTTPStatus.UNAUTHORIZED, "log in first")
        if method == "POST":
            if path not in POST_ROUTES:
                return self._error(HTTPStatus.METHOD_NOT_ALLOWED, "GET only")
            if not same_secret(self.headers.get(CSRF_HEADER, ""), session.csrf):
                return self._error(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token")
            return {"/logout": self._logout, "/api/zones": self._zones,
                    "/api/test-alert": self._test_alert}[path](session)
        if static:
            data, ctype = self.server.files[path[len("/static/"):]]
            return self._send(HTTPStatus.OK, data, ctype)
        if path not in GET_ROUTES:
            return self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST only")
        return {"/": self._index, "/stream.mjpg": self._stream, "/frame.jpg": self._frame,
                "/api/status": self._status}[path](session)

    # -- responses -----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str, **extra: Any) -> None:
        self._json(status, {"error": message, **extra})

    def _redirect(self, where: str, cookies: list[str] = ()) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        for c in cookies:
            self.send_header("Set-Cookie", c)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cookie(self, name: str) -> str | None:
        try:
            jar = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None

    def _template(self, name: str, **values: str) -> bytes:
        text = self.server.files[name][0].decode("utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
        return text.encode("utf-8")

    def _body(self) -> bytes | None:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be at most {MAX_BODY} bytes")
            return None
        return self.rfile.read(n)

    # -- login ---------------------------------------------------------------------------------

    def _login_form(self, message: str = "", status: int = HTTPStatus.OK) -> None:
        token = new_token()
        body = self._template("login.html", token=token, message=message)
        cookie = f"{LOGIN_CSRF_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict"
        self._send(status, body, "text/html; charset=utf-8", {"Set-Cookie": cookie})

    def _login(self) -> None:
        client, now = self.client_address[0], time.monotonic()
        body = self._body()
        if body is None:
            return
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        cookie = self._cookie(LOGIN_CSRF_COOKIE) or ""
        if not cookie or not same_secret(token, cookie):
            return self._login_form("The form expired; please try again.", HTTPStatus.FORBIDDEN)
        wait = self.server.limiter.retry_after(client, now)
        if wait > 0:
            log.warning("web: login from %s refused: too many failed attempts", client)
            self.send_response(HTTPStatus.TOO_MANY_REQUESTS)
            self.send_header("Retry-After", str(int(wait) + 1))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not same_secret((form.get("password") or [""])[0], self.server.password):
            self.server.limiter.failed(client, now)
            log.warning("web: failed login from %s", client)
            return self._login_form("Wrong password.", HTTPStatus.UNAUTHORIZED)
        self.server.limiter.succeeded(client)
        session = self.server.sessions.create(now)
        log.info("web: login from %s", client)
        self._redirect("/", [f"{SESSION_COOKIE}={session.sid}; Path=/; HttpOnly; SameSite=Strict",
                             f"{LOGIN_CSRF_COOKIE}=; Path=/login; Max-Age=0"])

    def _logout(self, session: Session) -> None:
        self.server.sessions.end(session.sid)
        self._json(HTTPStatus.OK, {"ok": True})

    # -- the page ------------------------------------------------------------------------------

    def _index(self, session: Session) -> None:
        self._send(HTTPStatus.OK, self._template("index.html", csrf=session.csrf), "text/html; charset=utf-8")

    def _status(self, session: Session) -> None:
        from device.web.zones import zones_of

        page = self.server.page
        latest = page.feed.latest()
        self._json(HTTPStatus.OK, {
            "state": page.state, "events": page.last_events(), "zones": zones_of(page.cfg),
            "frame_size": list(latest.source_size) if latest is not None else None,
            "blur_faces": page.web.blur_faces, "max_fps": page.web.max_fps,
        })

    def _frame(self, session: Session) -> None:
        feed = self.server.page.feed
        with feed.watching():
            got = feed.wait_frame(feed.seq, timeout=3.0)
        if got is None:
            latest = feed.latest()
            if latest is None:
                return self._error(HTTPStatus.SERVICE_UNAVAILABLE, "no frame from the camera yet")
            got = (feed.seq, latest)
        size = got[1].source_size
        self._send(HTTPStatus.OK, feed.jpeg(*got), "image/jpeg",
                   {"X-Frame-Width": str(size[0]), "X-Frame-Height": str(size[1])})

    def _stream(self, session: Session) -> None:
        feed = self.server.page.feed
        self.send_response(HTTPStatus.OK)
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={STREAM_BOUNDARY}")
        self.end_headers()
        seq = 0
        with feed.watching():
            try:
                while self.server.page.server is not None:
                    got = feed.wait_frame(seq, timeout=1.0)
                    if got is None:  # no new frame (camera quiet): send the last one again, which
                        latest = feed.latest()  # also finds out when the viewer has gone
                        if latest is None:
                            continue
                        got = (feed.seq, latest)
                    seq, frame = got
                    data = feed.jpeg(seq, frame)
                    self.wfile.write(f"--{STREAM_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                     f"Content-Length: {len(data)}\r\n\r\n".encode("ascii") + data + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the viewer left

    # -- changes -------------------------------------------------------------------------------

    def _zones(self, session: Session) -> None:
        from device.config import ConfigError
        from device.web.page import ApplyZones
        from device.web.zones import save_zones, zones_of

        body = self._body()
        if body is None:
            return
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "the body must be JSON")
        if not isinstance(data, dict) or set(data) != {"ignore_regions", "entrance_region"}:
            return self._error(HTTPStatus.BAD_REQUEST, "the body must be {\"ignore_regions\": [...], "
                                                       "\"entrance_region\": [...] or null}")
        page = self.server.page
        try:
            cfg = save_zones(page.config_path, data["ignore_regions"], data["entrance_region"])
        except ConfigError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, exc.message, field=exc.field)
        except OSError as exc:
            log.error("web: cannot save zones into %s: %s", page.config_path, exc)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot write {page.config_path}: "
                                                                 f"{exc.strerror or exc}")
        page.cfg.detector.ignore_regions = cfg.detector.ignore_regions
        page.cfg.detector.entrance_region = cfg.detector.entrance_region
        page.request(ApplyZones(list(cfg.detector.ignore_regions), cfg.detector.entrance_region))
        log.info("web: zones saved into %s: %s", page.config_path, zones_of(cfg))
        self._json(HTTPStatus.OK, {"saved": str(page.config_path), "zones": zones_of(cfg)})

    def _test_alert(self, session: Session) -> None:
        event = self.server.page.test_alert()
        self._json(HTTPStatus.ACCEPTED, {"event": event.to_dict()})
