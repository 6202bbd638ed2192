"""``maskwatch``: the workstation side. TensorFlow is imported only by the commands that need it."""

from __future__ import annotations

from collections.abc import Sequence

from device import cli_base

DATA_COMMANDS: cli_base.Commands = {
    "import": ("train.data.importer", "import folder-per-class / PASCAL VOC sets (or archives) into a clean dataset"),
    "split": ("train.data.split", "stratified, seeded, leak-free train/val/test split"),
    "report": ("train.data.report", "counts, duplicates, skips, contact sheets and histograms"),
    "fetch": ("train.data.fetch", "download a dataset archive (checksummed), then import it"),
    "add-masks": ("train.data.masks", "draw synthetic masks on unmasked faces"),
    "synth": ("train.data.synth", "build the built-in sample dataset and demo video (no download)"),
}

COMMANDS: cli_base.Commands = {
    "data": ("dataset tools", DATA_COMMANDS),
    "train": ("train.fit", "fine-tune a pretrained CNN for mask / no-mask"),
    "evaluate": ("train.evaluate", "evaluate a .keras or .tflite model on a dataset split"),
    "evaluate-scenes": ("train.scenes.command",
                        "faces found and flagged on annotated scene photos, per detector (VOC folders)"),
    "predict": ("train.predict", "find faces in photos and classify each"),
    "convert": ("convert.tflite", "quantize a Keras model to int8 (and float32) TFLite"),
    "convert-detector": ("convert.detector", "YuNet face detector ONNX -> TFLite at a fixed input size, for the Pi"),
    "bench": ("device.bench", "benchmark .tflite models: size, latency, accuracy"),
    "fetch-models": ("device.detectors.model_files", "fetch the face-detector models (checksummed)"),
    "provision": ("train.provision.command",
                  "set up a freshly flashed Raspberry Pi OS card to install maskwatch offline on first boot"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return cli_base.run("maskwatch", "maskwatch on the workstation", COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
