"""The systemd unit and the installer: required settings, consistency with each other and with
the example config, ``bash -n`` and a dry run of install.sh, and systemd's own checks when
``systemd-analyze`` is installed."""

from __future__ import annotations

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
    assert 'STATE=/var/lib/maskwatch' in script and 'MODELS="$STATE/models"' in script
    assert 'VENV="$PREFIX/venv"' in script and "PREFIX=/opt/maskwatch" in script
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
        f"/opt/maskwatch/venv/bin/pip install --no-cache-dir --upgrade --constraint /opt/maskwatch/constraints.txt "
        f"{ROOT}[device]",
        "fetch-models --dest /var/lib/maskwatch/models",
        f"install -m 0644 {ROOT}/systemd/maskwatch.service /etc/systemd/system/maskwatch.service",
        "systemctl daemon-reload",
        "systemctl enable maskwatch.service",
    ]
    positions = []
    for step in steps:
        if "venv --system-site-packages" in step and Path("/opt/maskwatch/venv/bin/python").exists():
            continue  # an existing venv is kept (idempotent)
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
