"""The set-up page's server without a browser (runs in the Pi-like env too): every route needs
the password, POSTs need the CSRF token, nothing outside the shipped files is served, logins are
rate-limited, zones are saved into the config file by the loader's rules, the live feed costs
nothing while nobody watches."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from device.config import ConfigError, config_from_dict, load_config
from device.pipeline import keep_face
from device.web.page import ApplyZones, SendTestAlert, WebPage
from device.web.stream import LiveFeed, LiveFrame, TrackBox

PASSWORD = "correct horse battery staple"
MODEL = {"name": "m", "sha256": "0" * 64, "quantization": "int8", "threshold": 0.5}
CONFIG = """# the user's own comment, kept by every save
device_id = "web-test"

[camera]
source = "images"
path = "frames"  # a comment on a value

[detector]
kind = "short"
min_face = 20  # keep me

[web]
enabled = true
password_file = "web-password"
port = 8080
"""


def write_setup(tmp: Path) -> Path:
    (tmp / "frames").mkdir(exist_ok=True)
    pw = tmp / "web-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    path = tmp / "config.toml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    return path


@pytest.fixture
def page(tmp_path):
    path = write_setup(tmp_path)
    cfg = load_config(path, env={})
    cfg.web.bind, cfg.web.port = "127.0.0.1", 0  # any free port
    p = WebPage(cfg, path, model_info=MODEL, alert_label="without_mask", margin=0.2)
    p.start()
    yield p
    p.stop()


class Client:
    """http.client with a cookie jar of one server."""

    def __init__(self, page: WebPage):
        self.host, self.port = page.server.server_address[:2]
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read() if not r.getheader("Content-Type", "").startswith("multipart/") else r.read(4096)
        for c in r.msg.get_all("Set-Cookie") or []:
            name, value = c.split(";")[0].split("=", 1)
            if value:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def login(self, password: str = PASSWORD) -> int:
        status, _, body = self.request("GET", "/login")
        token = re.search(rb'name="token" value="([^"]+)"', body).group(1).decode()
        form = urllib.parse.urlencode({"password": password, "token": token})
        status, headers, _ = self.request("POST", "/login", form,
                                          {"Content-Type": "application/x-www-form-urlencoded"})
        return status

    def csrf(self) -> str:
        status, _, body = self.request("GET", "/")
        assert status == 200
        return re.search(rb'name="csrf-token" content="([^"]+)"', body).group(1).decode()


GET_ROUTES = ["/", "/stream.mjpg", "/frame.jpg", "/api/status", "/static/app.js", "/static/style.css",
              "/static/index.html"]
POST_ROUTES = ["/logout", "/api/zones", "/api/test-alert"]
TRAVERSALS = ["/static/../page.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/../../etc/passwd",
              "/static/", "/static/static/app.js", "/static//etc/passwd", "/static/app.js/../../server.py",
              "/etc/passwd", "/config.toml", "/web-password", "/static/%2E%2E%2F%2E%2E%2Fconfig.toml"]


def test_every_route_needs_the_password(page):
    c = Client(page)
    for path in GET_ROUTES:
        status, headers, _ = c.request("GET", path)
        if path == "/":
            assert status == 303 and headers["location"] == "/login", path
        else:
            assert status == 401, path
    for path in POST_ROUTES:
        assert c.request("POST", path, "{}", {"Content-Type": "application/json"})[0] == 401, path
    assert c.login("wrong") == 401
    assert c.request("GET", "/api/status")[0] == 401
    status, _, body = c.request("GET", "/login")
    assert status == 200 and b'type="password"' in body


def test_login_gives_a_session_and_logout_ends_it(page):
    c = Client(page)
    assert c.login() == 303
    for path in ["/", "/api/status", "/static/app.js", "/static/style.css"]:
        status, headers, _ = c.request("GET", path)
        assert status == 200, path
        assert headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in headers[
            "content-security-policy"]
    status, _, body = c.request("GET", "/api/status")
    assert json.loads(body)["zones"] == {"ignore_regions": [], "entrance_region": None}
    csrf = c.csrf()
    assert c.request("POST", "/logout", "{}", {"X-CSRF-Token": csrf})[0] == 200
    assert c.request("GET", "/api/status")[0] == 401


def test_login_form_needs_its_own_token(page):
    c = Client(page)
    c.request("GET", "/login")
    form = urllib.parse.urlencode({"password": PASSWORD, "token": "forged"})
    status, _, _ = c.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403 and "maskwatch_session" not in c.cookies


def test_logins_are_rate_limited(page):
    c = Client(page)
    for _ in range(5):
        assert c.login("guess") == 401
    assert c.login() == 429  # even the right password waits now
    assert "maskwatch_session" not in c.cookies


def test_post_without_or_with_a_wrong_csrf_token_is_refused(page):
    c = Client(page)
    c.login()
    csrf = c.csrf()
    zones = json.dumps({"ignore_regions": [[0, 0, 10, 10]], "entrance_region": None})
    for headers in ({}, {"X-CSRF-Token": "nope"}, {"X-CSRF-Token": ""}):
        for path in POST_ROUTES:
            assert c.request("POST", path, zones, headers)[0] == 403, (path, headers)
    assert not page.has_requests
    assert "ignore_regions" not in page.config_path.read_text()
    status, _, body = c.request("POST", "/api/test-alert", "{}", {"X-CSRF-Token": csrf})
    assert status == 202 and json.loads(body)["event"]["type"] == "test"


@pytest.mark.parametrize("logged_in", [False, True])
def test_path_traversal_is_404(page, logged_in):
    c = Client(page)
    if logged_in:
        c.login()
    for path in TRAVERSALS:
        status, _, body = c.request("GET", path)
        assert status == 404, path
        assert b"maskwatch" not in body and b"import" not in body, path


def test_saving_zones_writes_the_config_keeping_comments_and_queues_them(page):
    c = Client(page)
    c.login()
    csrf = c.csrf()
    zones = {"ignore_regions": [[10, 20, 110, 220], [300, 0, 400, 50]], "entrance_region": [0, 0, 600, 480]}
    status, _, body = c.request("POST", "/api/zones", json.dumps(zones), {"X-CSRF-Token": csrf})
    assert status == 200, body
    text = page.config_path.read_text()
    assert "# the user's own comment, kept by every save" in text and "# keep me" in text
    assert "# a comment on a value" in text
    cfg = load_config(page.config_path, env={})  # the loader reads back exactly what was drawn
    assert cfg.detector.ignore_regions == [(10, 20, 110, 220), (300, 0, 400, 50)]
    assert cfg.detector.entrance_region == (0, 0, 600, 480)
    assert cfg.detector.min_face == 20
    assert oct(os.stat(page.config_path).st_mode & 0o777) == oct(0o640)
    assert [r for r in page.take_requests()] == [ApplyZones([(10, 20, 110, 220), (300, 0, 400, 50)], (0, 0, 600, 480))]
    assert json.loads(c.request("GET", "/api/status")[2])["zones"]["entrance_region"] == [0, 0, 600, 480]
    # no entrance: the whole frame again ([] in the file)
    zones = {"ignore_regions": [], "entrance_region": None}
    assert c.request("POST", "/api/zones", json.dumps(zones), {"X-CSRF-Token": csrf})[0] == 200
    assert load_config(page.config_path, env={}).detector.entrance_region is None


@pytest.mark.parametrize("zones, field", [
    ({"ignore_regions": [[10, 20, 5, 220]], "entrance_region": None}, "detector.ignore_regions"),
    ({"ignore_regions": [[-1, 0, 5, 5]], "entrance_region": None}, "detector.ignore_regions"),
    ({"ignore_regions": [[0, 0, 5.5, 5]], "entrance_region": None}, "detector.ignore_regions"),
    ({"ignore_regions": "everything", "entrance_region": None}, "detector.ignore_regions"),
    ({"ignore_regions": [], "entrance_region": [5, 5, 1, 1]}, "detector.entrance_region"),
    ({"ignore_regions": [], "entrance_region": [1, 2, 3]}, "detector.entrance_region"),
    ({"ignore_regions": [[0, None, 1, 1]], "entrance_region": None}, "detector.ignore_regions"),
])
def test_a_bad_zone_is_refused_naming_the_field_and_the_file_is_untouched(page, zones, field):
    c = Client(page)
    c.login()
    csrf = c.csrf()
    before = page.config_path.read_bytes()
    status, _, body = c.request("POST", "/api/zones", json.dumps(zones), {"X-CSRF-Token": csrf})
    assert status == 400 and json.loads(body)["field"] == field, body
    assert page.config_path.read_bytes() == before and not page.has_requests
    assert c.request("POST", "/api/zones", "{not json", {"X-CSRF-Token": csrf})[0] == 400
    assert c.request("POST", "/api/zones", "[]", {"X-CSRF-Token": csrf})[0] == 400


def test_test_alert_is_queued_for_the_daemon_as_a_test_event(page):
    c = Client(page)
    c.login()
    status, _, body = c.request("POST", "/api/test-alert", "{}", {"X-CSRF-Token": c.csrf()})
    assert status == 202
    (item,) = page.take_requests()
    assert isinstance(item, SendTestAlert) and item.event.type == "test" and item.event.label == "without_mask"
    assert item.event.event_id == json.loads(body)["event"]["event_id"]


def frame(i: int) -> LiveFrame:
    rgb = np.full((48, 64, 3), i * 20 % 255, np.uint8)
    return LiveFrame(rgb, np.array([[10, 10, 30, 30]], np.float32), [TrackBox(3, (10, 10, 30, 30), "without_mask", 0.9)],
                     source_size=(64, 48))


def test_stream_and_frame_send_jpegs_while_the_daemon_offers_frames(page):
    c = Client(page)
    c.login()
    assert not page.feed.wanted  # nobody watches: the daemon hands nothing over
    stop = threading.Event()

    def daemon_loop():
        i = 0
        while not stop.is_set():
            if page.feed.wanted:
                page.feed.offer(frame(i))
                i += 1
            time.sleep(0.01)

    t = threading.Thread(target=daemon_loop, daemon=True)
    t.start()
    try:
        status, headers, body = c.request("GET", "/frame.jpg")
        assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        assert (headers["x-frame-width"], headers["x-frame-height"]) == ("64", "48")
        status, headers, body = c.request("GET", "/stream.mjpg")
        assert status == 200 and headers["content-type"].startswith("multipart/x-mixed-replace")
        assert b"Content-Type: image/jpeg" in body and b"\xff\xd8" in body
    finally:
        stop.set()
        t.join(2)
    wait = time.monotonic() + 5
    while page.feed.watchers and time.monotonic() < wait:
        time.sleep(0.05)
    assert page.feed.watchers == 0 and not page.feed.wanted


def test_live_feed_hands_over_at_most_max_fps_and_only_while_watched():
    now = [100.0]
    feed = LiveFeed(5.0, blur_faces=True, margin=0.2, clock=lambda: now[0])
    assert not feed.wanted
    with feed.watching():
        assert feed.wanted
        feed.offer(frame(1))
        assert not feed.wanted  # 1/5 s not yet over
        now[0] += 0.21
        assert feed.wanted
    assert not feed.wanted


def test_blur_hides_the_face_area_and_off_shows_it():
    from device.web.stream import render

    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    f = LiveFrame(rgb, np.array([[40, 30, 100, 90]], np.float32), [], source_size=(160, 120))
    blurred, plain = render(f, blur_faces=True, margin=0.0), render(f, blur_faces=False, margin=0.0)
    assert np.array_equal(plain, rgb)
    face = blurred[35:85, 45:95].astype(int)
    assert len(np.unique(face.reshape(-1, 3), axis=0)) <= 16  # a 4x4 mosaic at most


def test_config_web_section_rules(tmp_path):
    write_setup(tmp_path)
    base = {"web": {"enabled": True}}
    with pytest.raises(ConfigError, match="web.password_file: is required"):
        config_from_dict(base, env={}, base_dir=tmp_path)
    (tmp_path / "open").write_text("pw\n")
    (tmp_path / "open").chmod(0o644)
    with pytest.raises(ConfigError, match="web.password_file: .*accessible to every user"):
        config_from_dict({"web": {"enabled": True, "password_file": "open"}}, env={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="web.max_fps"):
        config_from_dict({"web": {"max_fps": 0}}, env={})
    cfg = config_from_dict({}, env={})
    assert (cfg.web.enabled, cfg.web.bind, cfg.web.port, cfg.web.password_file, cfg.web.blur_faces,
            cfg.web.max_fps) == (False, "0.0.0.0", 8080, None, True, 5.0)
    assert config_from_dict({"detector": {"entrance_region": []}}, env={}).detector.entrance_region is None


def test_entrance_region_keeps_only_faces_centred_inside():
    entrance = (100.0, 0.0, 300.0, 480.0)
    assert keep_face((120, 100, 180, 160), 16, [], entrance)
    assert not keep_face((20, 100, 80, 160), 16, [], entrance)
    assert not keep_face((120, 100, 180, 160), 16, [(100, 50, 200, 200)], entrance)
    assert keep_face((20, 100, 80, 160), 16, [], None)


# --------------------------------------------------------------------------------------------
# The page inside a running daemon (no browser: the Pi-like env runs this too)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_running_daemon_applies_saved_zones_and_sends_an_uncounted_test_alert(
    tmp_path, faces, tiny_classifier, detector_model
):
    import signal

    from device.daemon import Daemon
    from device.wiring import load_components
    from tests.daemon_helpers import daemon_config, wait_until, write_config
    from tests.test_daemon import MemorySink
    from train.broker import free_port
    from train.data.walks import Walk, render, write_frames

    # A face standing still for 20 frames, gone for 20, again and again (a poster in view).
    frames = write_frames(tmp_path / "frames", render(faces, [Walk(0, 0, 19, 230, 230, y=110, width=170)], 40))
    pw = tmp_path / "web-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    path = write_config(tmp_path / "config.toml", daemon_config(
        tmp_path, frames=frames, model=tiny_classifier, detector=detector_model, port=free_port(),
        camera={"fps": 20.0, "loop": True, "realtime": True},
        classifier={"model_path": str(tiny_classifier), "num_threads": 1, "threshold": 0.0},
        tracker={"evidence_frames": 2, "timeout_s": 0.4, "cooldown_s": 0.0}, uncertain={"enabled": False},
        web={"enabled": True, "bind": "127.0.0.1", "port": free_port(), "password_file": str(pw)}))
    cfg = load_config(path, env={})
    memory = MemorySink()
    daemon = Daemon(cfg, load_components(cfg), config_path=path, sinks=lambda home: [memory])
    found: dict = {}

    def news():
        return [e for e in memory.events if e.type == "new"]

    def drive():
        try:
            wait_until(lambda: daemon.web is not None and daemon.web.server is not None, 30, "the page")
            c = Client(daemon.web)
            assert c.login() == 303
            csrf = c.csrf()
            wait_until(lambda: len(news()) >= 2, 30, "the face's events on two loops")
            status, _, body = c.request("POST", "/api/test-alert", "{}", {"X-CSRF-Token": csrf})
            found["test_id"] = json.loads(body)["event"]["event_id"]
            wait_until(lambda: any(e.type == "test" for e in memory.events), 10, "the test event")
            zones = {"ignore_regions": [[180, 60, 450, 420]], "entrance_region": None}
            status, _, body = c.request("POST", "/api/zones", json.dumps(zones), {"X-CSRF-Token": csrf})
            assert status == 200, body
            wait_until(lambda: daemon.pipeline.ignore_regions == [(180.0, 60.0, 450.0, 420.0)], 10, "the zones")
            found["applied_at"] = time.time()
            time.sleep(4.5)  # two loops of the frames: the face came back twice
        finally:
            daemon.stop_event.set()

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    helper = threading.Thread(target=drive, daemon=True)
    helper.start()
    try:
        assert daemon.run() == 0
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    helper.join(10)
    assert "applied_at" in found, f"the page's requests did not go through: {found}"
    test_events = [e for e in memory.events if e.type == "test"]
    assert [e.event_id for e in test_events] == [found["test_id"]]
    # never counted: the state's event count moved only with the face's own events
    assert daemon.state.events_total == sum(1 for e in memory.events if e.type != "test")
    assert sum(daemon.state.people.total.values()) == len(news())
    late = [e for e in news() if e.frame_time > found["applied_at"] + 0.3]
    assert late == [], "the face in the ignore region still produced events"
    assert load_config(path, env={}).detector.ignore_regions == [(180, 60, 450, 420)]  # the file says so too


def test_unit_lets_the_service_write_only_its_config_folder_and_install_web_makes_a_password(tmp_path):
    import subprocess

    from tests.test_systemd import INSTALL, UNIT, parse_unit

    service = parse_unit(UNIT.read_text())["Service"]
    assert service["ReadWritePaths"] == ["/etc/maskwatch"]  # the config file's folder, nothing else
    assert service["ProtectSystem"] == ["strict"]
    root = tmp_path / "root"
    root.mkdir()
    env = {**os.environ, "MASKWATCH_INSTALL_ROOT": str(root)}
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--web"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"install -d -m 0770 -o root -g maskwatch {root}/etc/maskwatch" in r.stdout
    assert f"write {root}/etc/maskwatch/web-password: <a random password> (0640 root:maskwatch)" in r.stdout
    assert 'password_file = "' + f'{root}/etc/maskwatch/web-password"' in r.stdout
    r = subprocess.run(["bash", str(INSTALL), "--dry-run"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "web-password" not in r.stdout  # off unless asked for
    assert f"install -d -m 0755 -o root -g root {root}/etc/maskwatch" in r.stdout


def test_the_live_view_pixelates_ignored_faces_too():
    """A face in an ignore region (a mirror, a poster of a real person) is not reported, but the
    live view must not show it unblurred either."""
    from device.pipeline import FrameResult
    from device.web.stream import live_frame

    rgb = np.zeros((48, 64, 3), np.uint8)
    kept = np.array([[2, 2, 12, 12]], np.float32)
    every = np.array([[2, 2, 12, 12], [30, 20, 50, 40]], np.float32)  # the second one was ignored
    result = FrameResult([], 2, np.zeros((1, 2)), np.zeros(1), [], {}, rgb, kept, (1.0, 1.0), every)
    live = live_frame(result, [], [(25, 15, 60, 45)], None, (64, 48), "without_mask")
    assert np.array_equal(live.faces, every)
