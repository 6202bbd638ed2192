"""The card's first boot: systemd/firstboot.sh and install.sh's offline mode (dry run here; the
real run is ``make test-arm64`` in an emulated arm64 root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "systemd" / "install.sh"
FIRSTBOOT = ROOT / "systemd" / "firstboot.sh"


def test_firstboot_script_parses_and_explains_itself():
    assert subprocess.run(["bash", "-n", str(FIRSTBOOT)]).returncode == 0
    r = subprocess.run(["bash", str(FIRSTBOOT), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "no internet" in r.stdout and "firstboot.log" in r.stdout
    r = subprocess.run(["bash", str(FIRSTBOOT), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "--bogus" in r.stderr


def test_install_offline_dry_run_uses_only_the_card(tmp_path):
    wheels, models = tmp_path / "wheels", tmp_path / "models"
    wheels.mkdir()
    models.mkdir()
    (wheels / "maskwatch-0.1.0-py3-none-any.whl").write_bytes(b"w")
    (models / "maskwatch_int8.tflite").write_bytes(b"m")
    cfg, secret = tmp_path / "config.toml", tmp_path / "mqtt-password"
    cfg.write_text('[mqtt]\nhost = "b"\n')
    secret.write_text("pw\n")
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--wheelhouse", str(wheels), "--config", str(cfg),
                        "--secret", str(secret), "--models-dir", str(models), "--no-start"],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MASKWATCH_INSTALL_ROOT": str(tmp_path / "sys")})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert f"pip install --no-index --find-links {wheels} " in out and "maskwatch[device]" in out
    assert "--force-reinstall" in out  # a rebuilt wheel of the same version replaces the installed one
    assert "+ apt-get" not in out and "fetch-models" not in out  # nothing from the network
    assert f"install -m 0640 -o root -g maskwatch {cfg} {tmp_path}/sys/etc/maskwatch/config.toml" in out
    assert f"install -m 0640 -o root -g maskwatch {secret} {tmp_path}/sys/etc/maskwatch/mqtt-password" in out
    assert f"{models}/maskwatch_int8.tflite {tmp_path}/sys/var/lib/maskwatch/models/maskwatch_int8.tflite" in out
    r = subprocess.run(["bash", str(INSTALL), "--dry-run", "--wheelhouse", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no maskwatch-*.whl" in r.stderr
