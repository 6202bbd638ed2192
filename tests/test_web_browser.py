"""The set-up page in a real headless browser (Debian's chromium + chromedriver through Selenium),
against a real ``maskwatch-device run`` process and a real Mosquitto.

The camera is ``source = "opencv"`` on a looping video file: one real face (a public-domain
portrait of ``maskwatch data synth``) stands still for two seconds, is gone for two, and comes
back: a poster-like face that produces a ``new`` event every loop. The tests log in, watch the
stream change, compare the status with the retained ``state`` message, press the test-alert
button and receive the ``test`` event on the broker, then draw an ignore region over the face
with the mouse and see its events stop.

Selenium drives the system's chromium through ``Service("/usr/bin/chromedriver")``, so Selenium
Manager never downloads a browser or driver. The Pi-like environment has no browser by design
(no selenium there): the skip is allow-listed in tests/skip_policy.py for that reason only; with
selenium present and chromium absent the skip is not allow-listed, so CI fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import (
    Recorder,
    daemon_config,
    daemon_env,
    finish,
    start_daemon,
    wait_until,
    write_config,
)
from tests.skip_policy import NO_BROWSER
from train.broker import free_port
from train.data.walks import Walk, render

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PASSWORD = "open sesame at the door"
ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = Path(os.environ.get("MASKWATCH_TEST_ARTEFACTS", ROOT / ".cache" / "test-artefacts"))
#: The face of the video: its top-left corner and width on the 640x480 frame (frames 0-19 of 40).
FACE_X, FACE_Y, FACE_W = 230, 110, 170
FPS = 10.0

try:
    import selenium  # noqa: F401
except ImportError:
    pytest.skip(f"{NO_BROWSER}: selenium is not installed here (pip install -e '.[dev]' has it)",
                allow_module_level=True)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, were it ever asked, must not download
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(f"{', '.join(missing)} absent: apt-get install -y chromium chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    return opts, Service(str(CHROMEDRIVER))


@pytest.fixture(scope="module")
def video(faces, tmp_path_factory) -> Path:
    import cv2

    frames = render(faces, [Walk(face=0, first=0, last=19, x0=FACE_X, x1=FACE_X, y=FACE_Y, width=FACE_W)], 40)
    path = tmp_path_factory.mktemp("web-video") / "poster.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 480))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def setup(tmp_path, video, tiny_classifier, detector_model, broker):
    from selenium import webdriver

    opts, service = browser()
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    pw = tmp_path / "web-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    port = free_port()
    cfg = daemon_config(
        tmp_path, frames=tmp_path, model=tiny_classifier, detector=detector_model, port=broker.port,
        camera={"source": "opencv", "device": str(video), "fps": FPS, "loop": True, "realtime": True},
        classifier={"model_path": str(tiny_classifier), "num_threads": 1, "threshold": 0.0},
        tracker={"evidence_frames": 2, "timeout_s": 0.8, "cooldown_s": 0.0},
        uncertain={"enabled": False},
        web={"enabled": True, "bind": "127.0.0.1", "port": port, "password_file": str(pw), "max_fps": 5.0},
        state_interval_s=1.0,
    )
    config = write_config(tmp_path / "config.toml", cfg)
    config.write_text("# written by hand: this comment must survive the page's save\n" + config.read_text())
    rec = Recorder("127.0.0.1", broker.port).start()
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log=log, env=daemon_env())
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(30)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url) or proc.poll() is not None, 60, "the web page to answer")
        assert proc.poll() is None, log.read_text()
        yield {"driver": driver, "url": url, "rec": rec, "config": config, "log": log, "proc": proc}
    finally:
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTEFACTS / "web-page-last.png"))
        driver.quit()
        proc.terminate()
        finish(proc, log)
        rec.stop()


def _up(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url + "/login", timeout=1).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


def login(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    assert driver.current_url.endswith("/login"), "the page did not redirect to the login form"
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "submit").click()
    wait_until(lambda: driver.current_url.rstrip("/") == url, 10, "the page after login")


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_login_stream_status_and_test_alert(setup):
    from selenium.webdriver.common.by import By

    driver, url, rec = setup["driver"], setup["url"], setup["rec"]
    login(driver, url)
    live = driver.find_element(By.ID, "live")
    wait_until(lambda: driver.execute_script("return arguments[0].naturalWidth", live) == 640, 20,
               "the live view's first frame")
    first = live.screenshot_as_png
    time.sleep(1.5)
    second = live.screenshot_as_png
    assert first != second, "the live view did not change in 1.5 s"

    # The status shows the very numbers of the retained state message.
    def same_state():
        msg = rec.last("/state")
        return msg is not None and text_of(driver, "state-time") == msg.json()["time"] and msg.json()
    state = wait_until(same_state, 20, "the page to show the state message the broker holds")
    assert float(text_of(driver, "fps")) == state["fps"] > 0
    assert int(text_of(driver, "people-present")) == state["people_present"]
    today = [k for k in state if k.endswith("_today")]
    assert today and any(state[k] for k in today)  # the face has been counted
    for key in today:
        assert int(text_of(driver, f"count-{key}")) == state[key], key
    assert float(text_of(driver, "threshold")) == state["model"]["threshold"]
    for stage, ms in state["latency_ms"].items():
        if ms is not None:
            assert f"{stage} " in text_of(driver, "latency"), stage
    assert state["model"]["sha256"][:12] in text_of(driver, "model")
    assert text_of(driver, "camera").startswith(state["camera"]["status"])
    assert text_of(driver, "mqtt").startswith("connected")

    driver.find_element(By.ID, "test-alert").click()
    test = rec.wait(lambda r: [e for e in r.events() if e["type"] == "test"], 10, "the test event on the broker")
    assert len(test) == 1 and test[0]["device_id"] == "test-pi" and test[0]["label"] == "without_mask"
    wait_until(lambda: "test alert" in text_of(driver, "events"), 10, "the test alert in the page's event list")
    # The artefact (and the README's picture) with the face in view, boxed.
    wait_until(lambda: text_of(driver, "people-present") == "1", 15, "the face back in view")
    time.sleep(0.6)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / "web-page.png"))


def test_an_ignore_region_drawn_over_a_face_stops_its_events(setup):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, url, rec = setup["driver"], setup["url"], setup["rec"]
    rec.wait(lambda r: [e for e in r.events() if e["type"] == "new"], 30, "the face's first event")
    login(driver, url)
    driver.find_element(By.ID, "tab-zones").click()
    canvas = driver.find_element(By.ID, "zones-canvas")
    wait_until(lambda: driver.execute_script("return arguments[0].width", canvas) == 640, 10, "the still frame")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];",
                                 canvas)
    sx, sy = rect[0] / 640, rect[1] / 480

    def offset(x, y):  # frame pixels -> offset from the canvas centre, as Selenium 4 takes it
        return int(x * sx - rect[0] / 2), int(y * sy - rect[1] / 2)

    face_h = FACE_W * 1.25
    corner0, corner1 = offset(FACE_X - 40, FACE_Y - 40), offset(FACE_X + FACE_W + 40, FACE_Y + face_h + 40)
    (ActionChains(driver).move_to_element_with_offset(canvas, *corner0).click_and_hold()
     .move_to_element_with_offset(canvas, *corner1).release().perform())
    assert "ignore 1" in text_of(driver, "zones-list")
    driver.find_element(By.ID, "zones-save").click()
    wait_until(lambda: text_of(driver, "zones-message").startswith("Saved"), 10, "the zones to be saved")
    saved_at = time.time()
    text = setup["config"].read_text()
    assert "this comment must survive" in text and "ignore_regions" in text
    from device.config import load_config

    (region,) = load_config(setup["config"], env={}).detector.ignore_regions
    cx, cy = FACE_X + FACE_W / 2, FACE_Y + face_h / 2
    assert region[0] < cx < region[2] and region[1] < cy < region[3], region
    wait_until(lambda: "zones applied" in setup["log"].read_text(), 10, "the daemon to apply the zones")
    time.sleep(9.0)  # two loops of the video: the face came back twice
    late = [e for e in rec.events() if e["type"] == "new" and e["frame_time"] > saved_at + 0.5]
    assert late == [], f"the ignored face still produced events: {late}"
    assert setup["proc"].poll() is None  # applied without a restart
    driver.find_element(By.ID, "tab-live").click()
    time.sleep(1.0)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / "web-page-zones.png"))
