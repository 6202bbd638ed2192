"""The README's "Training on your own data" walkthrough, run command for command on real faces.

Each line of that section's shell block runs as written, as a subprocess of the installed
``maskwatch`` / ``maskwatch-device`` scripts, in a scratch folder, with ONLY these substitutions
(the README's placeholders for things a reader has and this machine has not):

* ``~/datasets/faces-classify`` and ``~/datasets/faces-voc``: small real subsets of
  ``../shared/datasets`` (so the default training recipe finishes in about a minute);
* ``https://example.org/masks.zip --sha256 <hex>``: the same kind of archive served by a local
  HTTP server on 127.0.0.1, with its real checksum;
* ``photo.jpg``: a real photo from ``../shared/media``.

Every command must exit 0 and leave what the README says it leaves. The sections that need a
Raspberry Pi, systemd or a broker on the network are covered elsewhere (``test_systemd``,
``test_alerts_cli``) and only parsed here (``test_readme``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_readme import README, shell_lines

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Training on your own data"
#: Real faces per class in the faces-classify subset; enough that the float32 and int8 models agree
#: on the small val split (convert's default parity floor is 99 %).
PER_CLASS = 90
VOC_SCENES = 24

pytestmark = pytest.mark.slow


def section(title: str) -> str:
    """The README's text from the heading ``title`` to the next ``## `` heading."""
    return README.read_text(encoding="utf-8").split(title, 1)[1].split("\n## ", 1)[0]


def walkthrough() -> list[str]:
    return shell_lines(section(SECTION))


def test_the_walkthrough_covers_the_whole_workflow():
    steps = [" ".join(shlex.split(line)[:3]) for line in walkthrough()]
    for expected in ("maskwatch data import", "maskwatch data split", "maskwatch data fetch", "maskwatch train",
                     "maskwatch evaluate", "maskwatch convert", "maskwatch-device bench", "maskwatch predict"):
        assert any(s.startswith(expected) for s in steps), expected


def _subsets(shared: Path, home: Path) -> None:
    src = shared / "datasets" / "faces-classify"
    for label in ("with_mask", "without_mask"):
        dest = home / "datasets" / "faces-classify" / label
        dest.mkdir(parents=True)
        for f in sorted(p for p in (src / label).iterdir() if p.is_file())[:PER_CLASS]:
            shutil.copy(f, dest / f.name)
    voc = shared / "datasets" / "faces-voc"
    dest = home / "datasets" / "faces-voc"
    (dest / "images").mkdir(parents=True)
    (dest / "annotations").mkdir()
    for xml in sorted((voc / "annotations").glob("*.xml"))[:VOC_SCENES]:
        image = next(p for p in (voc / "images").iterdir() if p.stem == xml.stem)
        shutil.copy(xml, dest / "annotations" / xml.name)
        shutil.copy(image, dest / "images" / image.name)


def _serve(folder: Path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _masks_zip(shared: Path, folder: Path) -> Path:
    """A folder-per-class archive like the ones published online, made of real faces."""
    folder.mkdir()
    path = folder / "masks.zip"
    src = shared / "datasets" / "faces-classify"
    with zipfile.ZipFile(path, "w") as zf:
        for label in ("with_mask", "without_mask"):
            for f in sorted(p for p in (src / label).iterdir() if p.is_file())[-12:]:
                zf.write(f, f"masks/{label}/{f.name}")
    return path


def test_readme_walkthrough_runs_as_written(shared, detector_model, tmp_path):
    pytest.importorskip("tensorflow")
    keras_home = shared / "keras-home"
    if not keras_home.is_dir():
        pytest.skip(f"{keras_home} (the offline ImageNet weights) is absent")
    home = tmp_path / "home"
    _subsets(shared, home)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(shared / "media" / "pic1.jpeg", work / "photo.jpg")
    archive = _masks_zip(shared, tmp_path / "www")
    httpd = _serve(archive.parent)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/masks.zip"
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HOME": str(home), "KERAS_HOME": str(keras_home), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    outputs = {}
    try:
        for line in walkthrough():
            line = line.replace("https://example.org/masks.zip", url).replace("<hex>", sha)
            words = [os.path.expanduser(w).replace(os.path.expanduser("~"), str(home)) for w in shlex.split(line)]
            assert shutil.which(words[0], path=env["PATH"]), f"{words[0]} is not installed"
            proc = subprocess.run(words, cwd=work, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"`{line}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            outputs[" ".join(words[:3])] = proc.stdout + proc.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()

    # What the README says each step leaves behind.
    assert (work / "data/faces/manifest.csv").is_file()
    assert list((work / "data/faces").glob("**/*.png")), "data report writes PNGs"
    from device.manifest import read_manifest

    fetched = {r.label for r in read_manifest(work / "data/web")}
    assert fetched == {"with_mask", "without_mask"}, "fetch keeps the archive's classes apart"
    assert list((work / "data/synthetic-masks").glob("**/*.jpg")), "add-masks writes masked faces"
    run = work / "runs/default"
    for name in ("model.keras", "model.json", "curves.png", "history.csv", "config.json"):
        assert (run / name).is_file(), name
    card = json.loads((run / "model.json").read_text())
    # Masks drawn worn wrong on the train faces make the default 3 labels, alerting on two.
    made = read_manifest(work / "data/worn-wrong")
    assert made and {r.split for r in made} == {"train"} and {r.label for r in made} == {"incorrect_mask"}
    assert card["input_size"] == 128 and card["labels"] == ["with_mask", "without_mask", "incorrect_mask"]
    assert card["alert_labels"] == ["without_mask", "incorrect_mask"]
    evaluated = next(v for k, v in outputs.items() if k.startswith("maskwatch evaluate"))
    written = re.search(r"threshold (\d\.\d+) written to (\S+)", evaluated)
    assert written and Path(written.group(2)) == Path("runs/default/model.json"), evaluated[-2000:]
    assert card["threshold"] == pytest.approx(float(written.group(1)), abs=1e-4)  # what convert then used
    assert 0 < card["threshold"] < 1
    assert json.loads((work / "models/default_int8.json").read_text())["threshold"] == pytest.approx(card["threshold"])
    for kind in ("int8", "float32"):
        assert (work / f"models/default_{kind}.tflite").is_file()
        assert (work / f"models/default_{kind}.json").is_file()
    assert list((work / "out").glob("*.jpg")), "predict --annotate writes the annotated photo"
    bench = next(v for k, v in outputs.items() if k.startswith("maskwatch-device bench"))
    assert "int8" in bench and "float32" in bench


def test_readme_subscribe_commands_print_the_readme_event(broker):
    """The two "subscribe without writing code" lines, pointed at a local broker, receive the
    README's own example event (which must be valid against the schema)."""
    import jsonschema
    import paho.mqtt.client as mqtt

    mqtt_section = section("## MQTT: topics and payloads")
    event = json.loads(re.search(r"```json\n(.*?)```", mqtt_section, flags=re.S).group(1))
    schema = json.loads((ROOT / "device/schemas/event.schema.json").read_text())
    jsonschema.validate(event, schema)
    lines = shell_lines(mqtt_section)
    assert [ln.split()[0] for ln in lines] == ["maskwatch-device", "mosquitto_sub"]
    if shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    procs = []
    for line in lines:
        words = [broker.host if w == "broker.local" else w for w in shlex.split(line)]
        if words[0] == "mosquitto_sub":
            words += ["-p", str(broker.port), "-C", "1", "-W", "30"]
        else:
            words += ["--port", str(broker.port), "--count", "1", "--timeout", "30"]
        procs.append(subprocess.Popen(words, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        import time

        deadline = time.monotonic() + 30
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            pub.publish(f"maskwatch/{event['device_id']}/events", json.dumps(event), qos=1).wait_for_publish(5)
            time.sleep(0.5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    outs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    alerts, raw = outs[0][0], outs[1][0]
    assert "without_mask" in alerts and "entrance" in alerts
    topic, payload = raw.strip().split(" ", 1)
    assert topic == "maskwatch/entrance/events" and json.loads(payload) == event


def test_readme_detector_figures_are_what_detect_prints(shared, detector_model):
    """"Measured results" says how many faces the default detector finds in each shared photo."""
    text = section("## Measured results")
    command = re.search(r"\(`(maskwatch-device detect \.\./shared/media/\*)`\)", text).group(1)
    claimed = {k: int(v) for k, v in re.findall(r"(pic1|pic2|pic3|demo2): (\d+)", text)}
    assert len(claimed) == 4
    words = shlex.split(command)
    files = sorted((shared / "media").iterdir())
    exe = Path(sys.executable).parent / words[0]
    proc = subprocess.run([str(exe), *words[1:-1], "--json", *map(str, files)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = {Path(r["image"]).stem: len(r["faces"]) for r in map(json.loads, proc.stdout.splitlines())}
    assert found == claimed
