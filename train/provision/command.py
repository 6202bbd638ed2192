"""``maskwatch provision BOOT_DIR``: the command line (see the package docstring).

What the card's ``maskwatch/`` folder gets::

    firstboot.sh          the first-boot install (also usable by hand: sudo bash .../firstboot.sh)
    systemd/              install.sh, the unit, the pins and the example config (install.sh does the work)
    config.toml           the daemon's config (no secrets in it)
    secrets/              the broker / web passwords (moved to /etc/maskwatch and deleted on first boot)
    models/               the int8 classifier as maskwatch_int8.tflite + .json, the face detector files
    wheels/               aarch64 wheels for the card's Python: maskwatch and every pinned dependency
    firstboot.log         written by the Pi: what first boot did (read it back on the workstation)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.provision import card as cards
from train.provision import cloudinit, firstrun, wheelhouse
from train.provision.config_file import card_config
from train.provision.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
FOLDER = "maskwatch"
SYSTEMD_FILES = ("install.sh", "maskwatch.service", "constraints-device.txt", "config.example.toml")
DEFAULT_MODEL = Path("demo-out/models/maskwatch_int8.tflite")  # what `make demo` trains
#: What `make setup` leaves in models/: the default detector (YuNet int8, with its card) and BlazeFace.
DEFAULT_DETECTORS = (Path("models/face_detection_yunet_2023mar_640x480_int8.tflite"),
                     Path("models/face_detection_short_range.tflite"),
                     Path("models/face_detection_full_range.tflite"))
CLASSIFIER_NAME = "maskwatch_int8"  # where the daemon's default config looks (systemd/config.example.toml)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("boot_dir", type=Path, metavar="BOOT_DIR",
                   help="the mounted boot partition of a card just written by Raspberry Pi Imager")
    p.add_argument("--mqtt-host", help="the broker the Pi publishes to")
    p.add_argument("--device-id", help="the Pi's id in MQTT topics (default: host name + machine id hash)")
    p.add_argument("--mqtt-password-file", type=Path, metavar="FILE",
                   help="a file whose first line is the broker password (moved off the card on first boot)")
    p.add_argument("--web-password", metavar="PASSWORD",
                   help="turn the web page on with this password ('-' reads it from standard input)")
    p.add_argument("--config", type=Path, metavar="FILE", help="start from this config.toml (flags win)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help="the int8 classifier, its .json card beside it (default: %(default)s, from make demo)")
    p.add_argument("--detector-model", type=Path, action="append", metavar="FILE",
                   help="a face-detector file to put on the card, its .json card too when there is one "
                        "(repeat; default: YuNet int8 640x480 and BlazeFace short/full from make setup)")
    p.add_argument("--release", choices=sorted(cards.PYTHON_OF_RELEASE),
                   help="the card's Raspberry Pi OS release when provision cannot tell")
    p.add_argument("--wheel-cache", type=Path, metavar="DIR",
                   help="where downloaded aarch64 wheels are kept (default: ~/.cache/maskwatch/wheels/<python>)")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for pip download, e.g. --pip-arg=--index-url=URL (repeat)")
    p.add_argument("--dry-run", action="store_true", help="print every change, write nothing")


def _model_pair(model: Path, flag: str, card_required: bool) -> list[Path]:
    if not model.is_file():
        hint = " (make demo trains it)" if model == DEFAULT_MODEL else \
            " (make setup makes it)" if model in DEFAULT_DETECTORS else ""
        raise FileNotFoundError(f"{flag} {model}: no such file{hint}")
    card = model.with_suffix(".json")
    if card.is_file():
        return [model, card]
    if card_required:
        raise FileNotFoundError(f"{flag} {model}: its model card {card} is missing beside it")
    return [model]


def build_plan(args: argparse.Namespace, say=print) -> Plan:
    card = cards.detect_card(args.boot_dir, args.release)
    say(f"card      : {card.boot_dir} ({card.init}, Raspberry Pi OS {card.release} from {card.release_from}, "
        f"Python {card.python}, aarch64)")
    web_password = args.web_password
    if web_password == "-":
        web_password = sys.stdin.readline().rstrip("\n")
    cfg = card_config(config=args.config, mqtt_host=args.mqtt_host, device_id=args.device_id,
                      mqtt_password_file=args.mqtt_password_file, web_password=web_password)
    classifier = _model_pair(args.model, "--model", card_required=True)
    detectors = [f for d in (args.detector_model or DEFAULT_DETECTORS)
                 for f in _model_pair(d, "--detector-model", card_required=False)]
    for f in SYSTEMD_FILES + ("firstboot.sh",):
        if not (ROOT / "systemd" / f).is_file():
            raise FileNotFoundError(f"{ROOT / 'systemd' / f} is missing: run provision from a maskwatch checkout")

    plan = Plan(card.boot_dir)
    out = card.boot_dir / FOLDER
    # The hook first in the listing: it is the one change to a file Imager wrote.
    text = card.init_file.read_text(encoding="utf-8")
    hooked = (cloudinit.merged_user_data(text, str(card.init_file)) if card.init == "cloud-init"
              else firstrun.chained_firstrun(text, str(card.init_file)))
    plan.write(card.init_file, hooked, why="runs maskwatch/firstboot.sh once on first boot")
    plan.copy(ROOT / "systemd" / "firstboot.sh", out / "firstboot.sh")
    for f in SYSTEMD_FILES:
        plan.copy(ROOT / "systemd" / f, out / "systemd" / f)
    plan.write(out / "config.toml", cfg.text)
    for name, value in sorted(cfg.secrets.items()):
        plan.write(out / "secrets" / name, value + "\n", why="moved to /etc/maskwatch on first boot")
    plan.copy(classifier[0], out / "models" / f"{CLASSIFIER_NAME}.tflite", why=f"from {classifier[0]}")
    plan.copy(classifier[1], out / "models" / f"{CLASSIFIER_NAME}.json", why=f"from {classifier[1]}")
    for f in detectors:
        plan.copy(f, out / "models" / f.name)
    plan.remove_others(out / "models", {c.path.name for c in plan.changes if c.path.parent == out / "models"},
                       why="not part of this provision")

    say(f"wheels    : aarch64 CPython {card.python}, versions from systemd/constraints-device.txt")
    pins = wheelhouse.read_pins(ROOT / "systemd" / "constraints-device.txt")
    cache = args.wheel_cache or wheelhouse.default_cache(card.python)
    wheels_dir = out / "wheels"
    keep = set()
    own_name, own_bytes = wheelhouse.build_own_wheel(ROOT, cache)
    plan.write(wheels_dir / own_name, own_bytes, why="this checkout")
    keep.add(own_name)
    if args.dry_run:
        for pin in pins:
            hit = wheelhouse.find_cached(cache, pin, card.python)
            if hit is None:
                plan.changes.append(plan_change_to_download(wheels_dir, pin))
            else:
                plan.copy(hit, wheels_dir / hit.name)
                keep.add(hit.name)
    else:
        for w in wheelhouse.fetch_wheels(pins, card.python, cache, args.pip_arg, say=say):
            plan.copy(w, wheels_dir / w.name)
            keep.add(w.name)
    plan.remove_others(wheels_dir, keep | {c.path.name for c in plan.changes if c.path.parent == wheels_dir},
                       why="not pinned for this release")
    return plan


def plan_change_to_download(wheels_dir: Path, pin: wheelhouse.Pin):
    from train.provision.plan import Change

    return Change(wheels_dir / f"{wheelhouse.normalize(pin.name)}-{pin.version}-*.whl", "create",
                  content=b"", why="to download into the wheel cache")


def main(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    print("dry run: nothing is written" if args.dry_run else "changes:")
    for line in plan.lines():
        print("  " + line)
    if args.dry_run:
        print(f"{len(plan.pending)} change(s) would be made")
        return 0
    plan.apply()
    print(f"{len(plan.pending)} change(s) made" if plan.pending else "nothing to change: the card is provisioned")
    print(f"next: eject the card, boot the Pi, then: mosquitto_sub -h {args.mqtt_host or '<broker>'} "
          "-t 'maskwatch/+/availability' -v   (first boot log: maskwatch/firstboot.log on the card)")
    return 0
