"""The systemd unit and the installer: required settings, consistency with each other and with
the example config, ``bash -n`` and a dry run of install.sh, and systemd's own checks when
``systemd-analyze`` is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "maskwatch.service"
INSTALL = ROOT / "systemd" / "install.sh"
EXAMPLE = ROOT / "systemd" / "config.example.toml"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values in order]}} (keys may repeat; a line
    ending in a backslash continues on the next)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.strip()
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines, "").strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        assert "=" in line, f"not a key=value line: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def one(unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def test_unit_parses_and_has_the_required_settings(unit):
    assert set(unit) == {"Unit", "Service", "Install"}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "StateDirectory": "maskwatch", "ConfigurationDirectory": "maskwatch",
        "ExecStart": "/opt/maskwatch/venv/bin/maskwatch-device run --config /etc/maskwatch/config.toml",
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "DevicePolicy": "closed", "CapabilityBoundingSet": "", "LockPersonality": "yes",
    }
    for key, value in expected.items():
        assert one(unit, "Service", key) == value, key
    assert int(one(unit, "Service", "RestartSec")) > 0
    assert int(one(unit, "Unit", "StartLimitIntervalSec")) > 0 and int(one(unit, "Unit", "StartLimitBurst")) > 0
    assert re.fullmatch(r"\d+[KMG]", one(unit, "Service", "MemoryMax"))
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # Either a dynamic user or a dedicated one, with the camera's group.
    assert one(unit, "Service", "User") == "maskwatch" or one(unit, "Service", "DynamicUser") == "yes"
    assert "video" in one(unit, "Service", "SupplementaryGroups").split()
    families = set(" ".join(unit["Service"]["RestrictAddressFamilies"]).split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families and "AF_PACKET" not in families
    allowed = {v.split()[0] for v in unit["Service"]["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap"} <= allowed
    assert "@system-service" in " ".join(unit["Service"]["SystemCallFilter"])
    assert "PrivateDevices" not in unit["Service"] or one(unit, "Service", "PrivateDevices") == "no"


def test_unit_installer_and_example_config_agree(unit):
    from device.config import load_config

    script = INSTALL.read_text()
    env = dict(v.split("=", 1) for v in unit["Service"].get("Environment", []))
    assert env["MASKWATCH_MODELS"] == "/var/lib/maskwatch/models"
    assert 'STATE="$ROOT_DIR/var/lib/maskwatch"' in script and 'MODELS="$STATE/models"' in script
    assert 'VENV="$PREFIX/venv"' in script and 'PREFIX="$ROOT_DIR/opt/maskwatch"' in script
    assert one(unit, "Service", "ExecStart").startswith("/opt/maskwatch/venv/bin/")
    cfg = load_config(EXAMPLE, env={})  # the file install.sh copies is a valid config
    assert str(cfg.state_dir) == "/var/lib/" + one(unit, "Service", "StateDirectory")
    assert str(cfg.classifier.model_path).startswith(env["MASKWATCH_MODELS"] + "/")
    assert "maskwatch_int8.tflite" in script and Path(cfg.classifier.model_path).name == "maskwatch_int8.tflite"


def test_install_script_syntax_and_dry_run():
    bash = shutil.which("bash")
    assert bash, "bash is needed"
    r = subprocess.run([bash, "-n", str(INSTALL)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    before = {p: p.exists() for p in (Path("/opt/maskwatch"), Path("/etc/maskwatch"),
                                       Path("/etc/systemd/system/maskwatch.service"))}
    r = subprocess.run([bash, str(INSTALL), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    steps = [
        "apt-get install -y -qq python3-picamera2 python3-numpy python3-venv",
        "python3 -m venv --system-site-packages /opt/maskwatch/venv",
        f"/opt/maskwatch/venv/bin/pip install --no-cache-dir --disable-pip-version-check "
        f"--constraint {ROOT}/systemd/constraints-device.txt --constraint /opt/maskwatch/system-numpy.txt "
        f"{ROOT}[device]",
        "runuser -u maskwatch -- env HOME=/var/lib/maskwatch PIP_NO_CACHE_DIR=1 "
        "/opt/maskwatch/venv/bin/maskwatch-device fetch-models --dest /var/lib/maskwatch/models --which both",
        f"install -m 0644 {ROOT}/systemd/maskwatch.service /etc/systemd/system/maskwatch.service",
        "systemctl daemon-reload",
        "systemctl enable maskwatch.service",
    ]
    positions = []
    installed = Path("/etc/systemd/system/maskwatch.service").exists() or Path("/opt/maskwatch/venv").exists()
    for step in steps:
        if installed and "fetch-models" not in step:
            continue  # installed here: only what changed is redone (see the staged tests below)
        if "apt-get" in step and not _missing_apt_packages():
            continue  # already installed: apt is left alone
        assert step in out, (step, out)
        positions.append(out.index(step))
    assert positions == sorted(positions)  # in this order
    if not Path("/etc/maskwatch/config.toml").exists():
        assert f"{ROOT}/systemd/config.example.toml /etc/maskwatch/config.toml" in out
    assert {p: p.exists() for p in before} == before  # a dry run changes nothing

    r = subprocess.run([bash, str(INSTALL), "--dry-run", "--model", "/nonexistent.tflite"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "/nonexistent.tflite" in r.stderr
    r = subprocess.run([bash, str(INSTALL), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "--bogus" in r.stderr


def test_install_dry_run_copies_a_given_model_and_its_card(tmp_path, tiny_classifier):
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--model", str(tiny_classifier)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{tiny_classifier} /var/lib/maskwatch/models/maskwatch_int8.tflite" in r.stdout
    assert f"{tiny_classifier.with_suffix('.json')} /var/lib/maskwatch/models/maskwatch_int8.json" in r.stdout


def test_install_dry_run_copies_a_converted_detector_and_its_card(tmp_path):
    """The Pi cannot convert YuNet (no TensorFlow): the workstation's file is copied under its own
    name, where the daemon looks for the default detector; a missing card is refused."""
    det = tmp_path / "face_detection_yunet_2023mar_640x480_int8.tflite"
    det.write_bytes(b"tflite")
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--detector-model", str(det)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"its card {det.with_suffix('.json')} is missing" in r.stderr
    det.with_suffix(".json").write_text("{}")
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--detector-model", str(det)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{det} /var/lib/maskwatch/models/{det.name}" in r.stdout
    assert f"{det.with_suffix('.json')} /var/lib/maskwatch/models/{det.stem}.json" in r.stdout


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return exe


def test_systemd_verify_and_security_exposure(systemd_analyze, tmp_path):
    # verify needs ExecStart to exist: check a copy that points at a binary that does.
    copy = tmp_path / "maskwatch.service"
    copy.write_text(UNIT.read_text().replace("/opt/maskwatch/venv/bin/maskwatch-device", shutil.which("true")))
    r = subprocess.run([systemd_analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    r = subprocess.run([systemd_analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "--offline" in r.stderr:
        pytest.skip(f"this systemd-analyze cannot analyse offline: {r.stderr.strip()}")
    m = re.search(r"Overall exposure level for maskwatch\.service: ([\d.]+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout  # "OK" band; a setting dropped by mistake shows here


def _missing_apt_packages() -> bool:
    """Whether install.sh would call apt (it asks dpkg-query; no dpkg-query means not installed)."""
    if shutil.which("dpkg-query") is None:
        return True
    for pkg in ("python3-picamera2", "python3-numpy", "python3-venv"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if r.returncode != 0 or r.stdout != "install ok installed":
            return True
    return False


# --------------------------------------------------------------------------------------------
# install.sh against a staged system (MASKWATCH_INSTALL_ROOT): idempotence, permission checks
# --------------------------------------------------------------------------------------------


def dry_run(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MASKWATCH_INSTALL_ROOT": str(root)}
    return subprocess.run(["bash", str(INSTALL), "--dry-run", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def commands(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def apply(cmd: str, root: Path) -> None:
    """Do to the staged root what a real run does to the files for one printed command (system
    commands such as apt-get, useradd or systemctl have no file to stage)."""

    def staged(path: str) -> Path:
        assert Path(path).is_relative_to(root), f"{cmd!r} would touch {path}, outside the staged root"
        return Path(path)

    words = cmd.split()
    if cmd.startswith("write "):
        path, _, content = cmd[len("write "):].partition(": ")
        staged(path).write_text(content + "\n")
    elif words[0] == "install" and "-d" in words:
        for d in [w for w in words if w.startswith("/")]:
            staged(d).mkdir(parents=True, exist_ok=True)
    elif words[0] == "install":
        src, dst = words[-2], staged(words[-1])
        shutil.copyfile(src, dst)
        dst.chmod(int(words[words.index("-m") + 1], 8))
    elif words[:3] == ["python3", "-m", "venv"]:
        venv = staged(words[-1])
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text("#!/bin/sh\n")
        (venv / "bin" / "python").chmod(0o755)
    elif words[0].endswith("/bin/pip") and words[1] == "install":
        exe = staged(words[0]).with_name("maskwatch-device")
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)


#: Commands that change files: a second run must print none of them.
CHANGING = ("write ", "pip install", "-m venv", "install -m", "daemon-reload")


def test_install_twice_changes_nothing_the_second_time(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the staged config must be root-owned like a real one (run as root)")
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 model")
    model.with_suffix(".json").write_text("{}")
    first = dry_run(root, "--model", str(model))
    assert first.returncode == 0, first.stdout + first.stderr
    for cmd in commands(first.stdout):
        apply(cmd, root)
    done = commands(first.stdout)
    for what in CHANGING:
        assert any(what in c for c in done), (what, first.stdout)  # the first run does each of them

    second = dry_run(root, "--model", str(model))
    assert second.returncode == 0, second.stdout + second.stderr
    again = commands(second.stdout)
    assert [c for c in again if any(w in c for w in CHANGING)] == [], second.stdout
    assert set(again) <= set(done)  # what is left only checks or converges (apt, user, fetch-models' checksums)
    assert "this checkout is installed" in second.stdout and "is up to date" in second.stdout
    assert dry_run(root, "--model", str(model)).stdout == second.stdout  # steady state

    # A changed model, unit or checkout is picked up again, and only that.
    model.write_bytes(b"TFL3 a newer model")
    third = commands(dry_run(root, "--model", str(model)).stdout)
    assert [c for c in third if any(w in c for w in CHANGING)] == [
        f"install -m 0640 -o maskwatch -g maskwatch {model} {root}/var/lib/maskwatch/models/maskwatch_int8.tflite"]


def test_install_dry_run_twice_prints_the_same(tmp_path):
    runs = [dry_run(tmp_path / "root") for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stderr == runs[1].stderr
    assert not (tmp_path / "root").exists()  # a dry run creates nothing


@pytest.fixture
def staged_config(tmp_path) -> Path:
    etc = tmp_path / "root" / "etc" / "maskwatch"
    etc.mkdir(parents=True)
    secret = etc / "mqtt-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o640)
    cfg = etc / "config.toml"
    cfg.write_text('[mqtt]\nhost = "broker"\npassword_file = "mqtt-password"\n')  # relative to the config
    cfg.chmod(0o640)
    return cfg


@pytest.mark.parametrize("which", ["config.toml", "mqtt-password"])
def test_install_refuses_a_world_readable_config_or_password_file(staged_config, which):
    target = staged_config.with_name(which)
    target.chmod(0o644)
    r = dry_run(staged_config.parents[2])
    assert r.returncode == 1
    assert f"{target} is mode 0644: other users on this machine can read" in r.stderr
    assert "chmod 0640" in r.stderr  # says how to fix it
    assert "1/6" not in r.stdout  # refused before doing anything
    target.chmod(0o640)
    ok = dry_run(staged_config.parents[2])
    assert "1/6" in ok.stdout and "6/6" in ok.stdout, ok.stderr


def test_install_refuses_a_config_owned_by_another_user(staged_config):
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(staged_config, 65534, -1)
    r = dry_run(staged_config.parents[2])
    assert r.returncode == 1 and f"{staged_config} is owned by" in r.stderr and "not root" in r.stderr
    os.chown(staged_config, 0, 65534)  # readable by a group that is not the service's
    r = dry_run(staged_config.parents[2])
    assert r.returncode == 1 and "members of" in r.stderr and str(staged_config) in r.stderr


def test_install_refuses_a_linked_state_folder(tmp_path):
    root = tmp_path / "root"
    (root / "var" / "lib").mkdir(parents=True)
    (root / "var" / "lib" / "maskwatch").symlink_to(tmp_path)
    r = dry_run(root)
    assert r.returncode == 1 and f"{root}/var/lib/maskwatch is a symbolic link" in r.stderr


# --------------------------------------------------------------------------------------------
# Pinned dependencies
# --------------------------------------------------------------------------------------------

PINS = ROOT / "systemd" / "constraints-device.txt"


def test_every_device_dependency_is_pinned_and_install_uses_the_pins():
    import importlib.metadata

    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in PINS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            assert str(req.specifier).startswith("==") and "*" not in str(req.specifier), line
            pins[canonicalize_name(req.name)] = str(req.specifier)[2:]
    assert "numpy" not in pins  # the system's, pinned by install.sh to what apt installed

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["device"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        if name != "numpy":
            assert name in pins and req.specifier.contains(pins[name]), (req, pins.get(name))

    # The pins' own dependencies, read from the installed packages where they are the pinned versions.
    checked = 0
    for name, version in pins.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep != "numpy":
                assert dep in pins, f"{name}=={version} needs {req}, which {PINS.name} does not pin"
                assert req.specifier.contains(pins[dep], prereleases=True), (name, req, pins[dep])
    if checked == 0:
        pytest.skip("none of the pinned versions is installed here (the Pi-like environment has them)")
    assert "--constraint \"$PINS\"" in INSTALL.read_text() and 'PINS="$SRC/systemd/constraints-device.txt"' in \
        INSTALL.read_text()
