"""``make test-arm64``: a provisioned card's first boot and the daemon, for real, on emulated arm64.

Not part of ``make test`` (it takes minutes): the Makefile runs this file on its own. For each
supported Raspberry Pi OS release (Bookworm, and Trixie when the Debian mirror serves it) it
  1. builds (once; cached in .cache/arm64/roots) a Debian arm64 root with debootstrap, run under
     qemu-user through binfmt_misc: the Python, numpy and systemd Raspberry Pi OS has;
  2. lays out a boot partition as Raspberry Pi Imager leaves it (tests/imager_cards: firstrun.sh
     on Bookworm, cloud-init on Trixie) and runs ``maskwatch provision`` on it;
  3. boots it as far as a chroot can: the card is mounted at /boot/firmware, a stand-in
     picamera2 sits where the Raspberry Pi archive would put python3-picamera2, and Imager's own
     firstrun.sh (or our cloud-init runcmd entry) runs the first-boot install with no index;
  4. checks the installed versions against systemd/constraints-device.txt, runs
     ``maskwatch-device check`` and then the installed daemon, as the service user, on the sample
     video: its events must reach a Mosquitto on the host's loopback (the chroot shares the
     network) complete and in order, the same as the same config gives on this machine.
It skips only where qemu/binfmt cannot be set up (tests/arm64_setup.sh tries), and CI refuses
that skip (tests/skip_policy.py). Model and video: ``make demo``'s, or MASKWATCH_ARM64_MODEL /
MASKWATCH_ARM64_VIDEO.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.imager_card import make_card
from train.provision.wheelhouse import normalize

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "arm64"
PACKAGES = "python3,python3-venv,python3-numpy,systemd"
RELEASES = {"bookworm": "firstrun", "trixie": "cloudinit"}  # release -> the card style Imager uses for it
PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
MODEL = Path(os.environ.get("MASKWATCH_ARM64_MODEL", ROOT / "demo-out/models/maskwatch_int8.tflite"))
VIDEO = Path(os.environ.get("MASKWATCH_ARM64_VIDEO", ROOT / "demo-out/sample.avi"))
TIMES: dict[str, float] = {}


def say(msg: str) -> None:
    print(f"[arm64] {msg}", flush=True)


def timed(name: str):
    @contextlib.contextmanager
    def cm():
        t0 = time.monotonic()
        yield
        TIMES[name] = time.monotonic() - t0
        say(f"{name}: {TIMES[name]:.1f} s")
    return cm()


def binfmt_problem() -> str | None:
    """Why arm64 binaries cannot run here, or None."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists():
        return ("binfmt_misc has no qemu-aarch64 entry (tests/arm64_setup.sh installs qemu-user-static and "
                "binfmt-support and enables it; it needs root and a kernel with binfmt_misc)")
    if "enabled" not in entry.read_text():
        return "the qemu-aarch64 binfmt entry is disabled (update-binfmts --enable qemu-aarch64)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (apt-get install debootstrap)"
    if os.geteuid() != 0:
        return "chroot and debootstrap need root"
    return None


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            texts.append(p.read_text())
    for text in texts:
        for m in re.finditer(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            url = m.group(1)
            if "debian" in url and "security" not in url:
                return url
    return "http://deb.debian.org/debian"


def arm64_root(release: str) -> Path:
    """The cached debootstrapped root of ``release`` (built when missing)."""
    root = CACHE / "roots" / release
    stamp = root / ".maskwatch-packages"
    if stamp.is_file() and stamp.read_text().strip() == PACKAGES:
        say(f"{release}: reusing the arm64 root in {root}")
        return root
    tmp = root.with_name(release + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    mirror = debian_mirror()
    say(f"{release}: debootstrap --arch=arm64 from {mirror} (a few minutes under emulation)")
    with timed(f"debootstrap {release}"):
        r = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}",
                            release, str(tmp), mirror], capture_output=True, text=True)
    if r.returncode != 0:
        log = (tmp / "debootstrap" / "debootstrap.log")
        tail = log.read_text()[-1500:] if log.is_file() else r.stderr[-1500:]
        if re.search(r"Failed getting release file|Release file.*not found|404", r.stdout + r.stderr + tail):
            pytest.skip(f"the Debian mirror {mirror} does not serve {release}")
        raise AssertionError(f"debootstrap {release} failed:\n{tail}")
    (tmp / ".maskwatch-packages").write_text(PACKAGES + "\n")
    tmp.rename(root)
    return root


@contextlib.contextmanager
def mounted(root: Path, boot: Path):
    """/proc, /dev and the card (at /boot/firmware) inside ``root``, unmounted whatever happens."""
    points = []
    try:
        # No /sys: the host's sysfs describes x86 CPUs, and XNNPACK's cpuinfo under qemu crashes
        # parsing it (measured: SIGSEGV); without it cpuinfo logs an error and falls back.
        for src, dst, opts in (("proc", root / "proc", ["-t", "proc"]), ("/dev", root / "dev", ["--bind"]),
                               (str(boot), root / "boot/firmware", ["--bind"])):
            dst.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *opts, src, str(dst)], check=True)
            points.append(dst)
        yield
    finally:
        for dst in reversed(points):
            subprocess.run(["umount", "-l", str(dst)], check=False)


def chroot(root: Path, *cmd: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": "/root"}
    r = subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed in the arm64 root ({r.returncode}):\n{r.stdout[-4000:]}\n"
                             f"{r.stderr[-4000:]}")
    return r


def card_base_config(port: int, workdir: Path) -> Path:
    """What the person would pass to provision: the broker, a user name, the video as the camera."""
    cfg = workdir / "base.toml"
    cfg.write_text(f"""device_id = "entrance"
state_interval_s = 2.0

[camera]
source = "opencv"
device = "/srv/maskwatch/sample.avi"
fps = 12.0
loop = false

[detector]
kind = "short"

[mqtt]
host = "127.0.0.1"
port = {port}
username = "entrance"
password_file = "mqtt-password"
""")
    pw = workdir / "mqtt-password"
    pw.write_text("not-a-real-password\n")
    pw.chmod(0o600)
    return cfg


class Subscriber:
    """Every message on ``topic`` at the host's broker, in arrival order."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: (c.subscribe(topic, qos=1), self.ready.set())
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10), "no connection to the test broker"

    def events(self) -> list[dict]:
        return [json.loads(p) for t, p in self.messages if t.endswith("/events")]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def reference_events(card_config: Path, workdir: Path, port: int) -> list[dict]:
    """The same installed config run by this machine's device package (x86): the events to expect."""
    text = card_config.read_text()
    models = workdir / "x86-models"
    text = (text.replace("/srv/maskwatch/sample.avi", str(VIDEO))
            .replace('"/etc/maskwatch/mqtt-password"', f'"{workdir / "mqtt-password"}"'))
    text = f'state_dir = "{workdir / "x86-state"}"\n' + text  # top-level keys come before any section
    text = text.replace('device_id = "entrance"', 'device_id = "x86-reference"')
    text += f'\n[classifier]\nmodel_path = "{models / "maskwatch_int8.tflite"}"\n'
    cfg = workdir / "x86.toml"
    cfg.write_text(text)
    sub = Subscriber(port, "maskwatch/x86-reference/events")
    try:
        env = {**os.environ, "MASKWATCH_MODELS": str(models)}
        r = subprocess.run([sys.executable, "-m", "device.cli", "run", "--config", str(cfg), "--exit-on-end"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        time.sleep(1.0)
    finally:
        sub.stop()
    return sub.events()


def summary(events: list[dict]) -> list[tuple]:
    return [(e["type"], e["track_id"], e["label"]) for e in events]


#: MASKWATCH_ARM64_RELEASES=bookworm runs one release (a quicker local run; CI runs both).
CHOSEN = [r for r in os.environ.get("MASKWATCH_ARM64_RELEASES", ",".join(RELEASES)).split(",") if r]


@pytest.mark.parametrize("release", CHOSEN)
def test_provisioned_card_boots_and_reports_on_arm64(release, tmp_path):
    assert release in RELEASES, f"MASKWATCH_ARM64_RELEASES: {release!r} is not one of {', '.join(RELEASES)}"
    problem = binfmt_problem()
    if problem:
        pytest.skip(f"cannot run arm64 binaries here: {problem}")
    for f, how in ((MODEL, "make demo trains it"), (MODEL.with_suffix(".json"), "make demo"),
                   (VIDEO, "make demo makes it")):
        assert f.is_file(), f"{f} is missing ({how}; or set MASKWATCH_ARM64_MODEL / MASKWATCH_ARM64_VIDEO)"
    from train.broker import Broker, free_port

    t_all = time.monotonic()
    cached = arm64_root(release)
    work = tmp_path / "root"
    with timed(f"copy the {release} root"):
        subprocess.run(["cp", "-a", "--reflink=auto", str(cached), str(work)], check=True)
    boot = make_card(tmp_path / "boot", RELEASES[release])
    port = free_port()
    base = card_base_config(port, tmp_path)

    # 2. provision, exactly as a person would on the workstation
    with timed(f"provision {release} (wheelhouse)"):
        r = subprocess.run([sys.executable, "-m", "train.cli", "provision", str(boot), "--config", str(base),
                            "--model", str(MODEL), "--wheel-cache", str(CACHE / "wheels")],
                           cwd=ROOT, capture_output=True, text=True, timeout=1200)
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"Python {PYTHON[release]}, aarch64" in r.stdout
    again = subprocess.run([sys.executable, "-m", "train.cli", "provision", str(boot), "--config", str(base),
                            "--model", str(MODEL), "--wheel-cache", str(CACHE / "wheels")],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout[-3000:] + again.stderr

    # 3. first boot, in the arm64 root
    fake = work / "usr/lib/python3/dist-packages/picamera2"  # what apt's python3-picamera2 provides
    shutil.copytree(ROOT / "tests/fake_picamera2/picamera2", fake)
    (work / "srv/maskwatch").mkdir(parents=True)
    shutil.copy(VIDEO, work / "srv/maskwatch/sample.avi")
    with Broker(tmp_path / "broker", port=port) as _broker, mounted(work, boot):
        with timed(f"first boot {release} (emulated)"):
            if RELEASES[release] == "firstrun":
                out = chroot(work, "sh", "/boot/firmware/firstrun.sh")  # Imager's script, our block chained in
            else:
                import yaml

                runcmd = yaml.safe_load((boot / "user-data").read_text())["runcmd"]
                ours = [c for c in runcmd if "maskwatch" in " ".join(map(str, c))]
                assert len(ours) == 1, runcmd
                out = chroot(work, *map(str, ours[0]))  # what cloud-init's runcmd runs
        log = (boot / "maskwatch/firstboot.log").read_text()
        print(log)
        assert "first boot done" in log, out.stdout[-3000:] + out.stderr[-3000:]
        assert "systemd is not running" in log  # a chroot: enabled, not started, and it says so
        assert not (boot / "maskwatch/secrets").exists(), "the secrets are still on the card"
        assert (work / "etc/systemd/system/multi-user.target.wants/maskwatch.service").is_symlink()
        pw = work / "etc/maskwatch/mqtt-password"
        assert pw.read_text() == "not-a-real-password\n" and oct(pw.stat().st_mode & 0o777) == "0o640"

        # 4. versions installed == the pins; check; the daemon on the video
        pins = dict(line.split("==") for line in (ROOT / "systemd/constraints-device.txt").read_text().splitlines()
                    if "==" in line and not line.startswith("#"))
        listed = json.loads(chroot(work, "/opt/maskwatch/venv/bin/pip", "list", "--format=json").stdout)
        installed = {normalize(p["name"]): p["version"] for p in listed}
        for name, version in pins.items():
            assert installed.get(normalize(name)) == version, (name, version, installed)
        numpy_version = chroot(work, "python3", "-c", "import numpy; print(numpy.__version__)").stdout.strip()
        assert installed.get("numpy") == numpy_version, "the venv must use the system numpy"

        svc = ("runuser", "-u", "maskwatch", "--", "env", "MASKWATCH_MODELS=/var/lib/maskwatch/models",
               "/opt/maskwatch/venv/bin/maskwatch-device")
        out = chroot(work, *svc, "check", "--config", "/etc/maskwatch/config.toml", timeout=600)
        print(out.stdout)
        assert "check passed" in out.stdout

        sub = Subscriber(port, "maskwatch/entrance/#")
        try:
            with timed(f"daemon {release} on the sample video (emulated)"):
                out = chroot(work, *svc, "run", "--config", "/etc/maskwatch/config.toml", "--exit-on-end",
                             timeout=1200)
            time.sleep(1.0)
        finally:
            sub.stop()
        events = sub.events()
        say(f"events received on the host from the arm64 daemon ({release}):")
        for e in events:
            say(f"  {e['type']:<6} track {e['track_id']:>2} {e['label']:<13} score {e['score']:.3f} "
                f"frame_time {e['frame_time']:.3f}")
        availability = [p.decode() for t, p in sub.messages if t.endswith("/availability")]
        assert "online" in availability, availability

        # Same config on this machine: the arm64 events must be the same, in the same order.
        shutil.copytree(work / "var/lib/maskwatch/models", tmp_path / "x86-models")
        expected = reference_events(work / "etc/maskwatch/config.toml", tmp_path, port)
    assert events, "no event arrived from the arm64 daemon"
    assert summary(events) == summary(expected), (summary(events), summary(expected))
    for track in {e["track_id"] for e in events}:
        kinds = [e["type"] for e in events if e["track_id"] == track]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("end") == 1, (track, kinds)
    assert len({e["event_id"] for e in events}) == len(events)
    TIMES[f"total {release}"] = time.monotonic() - t_all
    say("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))
