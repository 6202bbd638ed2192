"""``maskwatch-device``: the Raspberry Pi side. Never imports TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence

from device import cli_base

COMMANDS: cli_base.Commands = {
    "run": ("device.daemon", "run the camera -> faces -> classifier -> MQTT daemon"),
    "check": ("device.check", "validate config, model, detector and camera, then exit"),
    "alerts": ("device.comms.alerts", "subscribe to a maskwatch broker and print events"),
    "bench": ("device.bench", "benchmark .tflite models: size, latency, accuracy"),
    "detect": ("device.detectors.cli", "find faces in image files and print the boxes"),
    "fetch-models": ("device.detectors.model_files", "fetch the face-detector models (checksummed)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return cli_base.run("maskwatch-device", "maskwatch on the Raspberry Pi", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
