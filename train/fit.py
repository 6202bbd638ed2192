"""``maskwatch train``: fine-tune a pretrained CNN on a dataset folder, in two phases.

1. Head phase: the backbone is frozen, so its pooled features are computed ONCE (a clean copy
   of the train split plus ``--head-copies - 1`` augmented copies, and the clean val split) and
   the softmax head is trained on those cached features: seconds instead of re-running the frozen
   network every epoch. Default 2 copies (clean + one augmented): each further copy costs one
   more forward pass over the train split (about a minute for 5k faces at 128 px on 2 cores),
   and fine-tuning, which sees fresh augmentations every epoch, follows anyway.
2. Fine-tune phase: the top ``--finetune-layers`` backbone layers are unfrozen (BatchNorm stays
   frozen and in inference mode) and trained end to end, with augmentation, at a lower LR.

Both phases use class-weighted categorical cross-entropy and stop early on val loss keeping the
best weights; if fine-tuning never beats the head phase, the head-phase weights are kept.
Every check that can fail (options, weights, dataset, images) runs before training starts.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.contract import (
    ALERT_LABEL,
    BINARY_LABELS,
    THREE_CLASS_LABELS,
    ModelCard,
    alert_labels_for,
    card_path,
)

if TYPE_CHECKING:
    from train.augment import AugmentConfig
    from train.dataset import Split

log = logging.getLogger(__name__)

RUN_FILES = ("model.keras", "model.json", "config.json", "history.csv", "curves.png")


@dataclass
class TrainConfig:
    data: str
    out: str
    backbone: str = "mobilenet_v2"
    alpha: float = 1.0
    input_size: int = 128
    weights: str = "imagenet"
    epochs_head: int = 30
    epochs_finetune: int = 10
    #: Of MobileNetV2's 154 layers, the top 100 (blocks 5-16) adapt to small, blurred faces: on
    #: the shared data 100 beat 70 (without_mask F1 0.982 vs 0.979, README "Measured results").
    finetune_layers: int = 100
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    optimizer: str = "adam"
    batch_size: int = 32
    #: 2 (with / without mask), 3 (plus incorrect_mask) or 0: 3 when the train data (with
    #: ``extra_train``) holds incorrectly worn masks, else 2. On the shared data's test split, 3
    #: labels with synthetic masks worn wrong flag 0.80 of the real incorrect masks, 2 labels 0.25
    #: (README, "Masks worn wrong: three labels").
    classes: int = 0
    seed: int = 0
    patience: int = 3
    #: Feature copies of the train split for the head phase: 1 clean + (n - 1) augmented.
    head_copies: int = 2
    augment: bool = True
    blur: bool = False
    dropout: float = 0.2
    label_smoothing: float = 0.0
    #: A dataset of synthetic faces for the train split only (``maskwatch data add-masks DATA
    #: --split train --out DIR``): made from this dataset's train faces, so val and test stay real.
    extra_train: str = ""
    name: str = ""
    overwrite: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        return BINARY_LABELS if self.classes == 2 else THREE_CLASS_LABELS

    def validate(self) -> None:
        if self.classes not in (0, 2, 3):
            raise ValueError(f"--classes must be 2 or 3 (0: by the data), got {self.classes}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        for name in ("epochs_head", "epochs_finetune", "finetune_layers", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.epochs_head + self.epochs_finetune == 0:
            raise ValueError("--epochs-head and --epochs-finetune are both 0: nothing to train")
        for name in ("lr_head", "lr_finetune"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.head_copies < 1:
            raise ValueError(f"--head-copies must be >= 1, got {self.head_copies}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be within [0, 1), got {self.dropout}")

    @property
    def alert_labels(self) -> list[str]:
        """What the card's threshold covers: the alert labels this model has."""
        return list(alert_labels_for(self.labels)) if self.classes > 2 else []


@dataclass
class TrainResult:
    out: Path
    model_path: Path
    card: ModelCard
    history: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)


def _optimizer(name: str, lr: float):
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(learning_rate=lr)


def _verbose() -> int:
    """Progress bars on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def _prepare_out(out: Path, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    existing = [f for f in RUN_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise ValueError(f"{out} already holds a run ({', '.join(existing)}); choose another --out or pass --overwrite")


def _history_rows(phase: str, hist: dict[str, list[float]], seconds: float) -> list[dict[str, Any]]:
    n = len(next(iter(hist.values()), []))
    return [{"phase": phase, "epoch": i + 1, **{k: float(v[i]) for k, v in hist.items()},
             "seconds": round(seconds / max(1, n), 2)} for i in range(n)]


def write_history(rows: list[dict[str, Any]], path: Path) -> Path:
    cols = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    extra = sorted({k for r in rows for k in r} - set(cols))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols + extra, restval="")
        w.writeheader()
        w.writerows(rows)
    return path


def _feature_models(model, augmented: bool):
    """Raw pixels -> pooled features: clean, and (if asked) with the augmentation layers in training mode."""
    import keras

    from train.model import feature_model, parts

    clean = feature_model(model)
    if not augmented:
        return clean, None
    inp = keras.Input(clean.input_shape[1:])
    return clean, keras.Model(inp, clean(parts(model).augment(inp, training=True)))


def _features(fm, x: np.ndarray, desc: str, batch_size: int = 64) -> np.ndarray:
    log.info("features: %s (%d images)", desc, len(x))
    return fm.predict(x.astype(np.float32), batch_size=batch_size, verbose=_verbose())


def train(cfg: TrainConfig) -> TrainResult:
    """Run both phases and write the run folder. Raises ValueError & co. before training on bad input."""
    from train.dataset import class_weights

    t_start = time.monotonic()
    counts = check_before_training(cfg)
    seconds: dict[str, float] = {}
    train_ds, val_ds = load_images(cfg, seconds)
    weights = class_weights(train_ds.y, len(cfg.labels))
    config = write_run_config(cfg, counts, weights)
    model, fit = build(cfg, train_ds, val_ds, weights)
    history: list[dict[str, Any]] = []
    head_best = train_head(model, cfg, fit, seconds, history)
    fine_tune(model, cfg, fit, head_best, seconds, history)
    return save_run(model, cfg, config, val_ds, history, seconds, t_start)


@dataclass
class FitData:
    """What both phases fit on: the splits, their one-hot labels, per-sample class weights, the loss."""

    train: Split
    val: Split
    y_train: np.ndarray
    y_val: np.ndarray
    w_train: np.ndarray
    loss: Any


def check_before_training(cfg: TrainConfig) -> dict[str, dict[str, int]]:
    """Every check that can fail before an image is decoded; returns the counts per split and label."""
    from train.dataset import check_training_data
    from train.model import check_options, imagenet_weights_path

    cfg.validate()
    data, out = Path(cfg.data), Path(cfg.out)
    if cfg.extra_train:
        check_extra_provenance(Path(cfg.extra_train), data)
    if cfg.classes == 0:
        cfg.classes = classes_in(data, Path(cfg.extra_train) if cfg.extra_train else None)
        log.info("--classes: %d (%s)", cfg.classes, "the train data holds incorrect_mask faces" if cfg.classes == 3
                 else "no incorrect_mask faces in the train data")
    check_options(cfg.backbone, cfg.input_size, cfg.alpha, cfg.weights)
    counts = check_training_data(data, cfg.labels)
    if cfg.extra_train:
        counts["extra_train"] = check_extra_train(Path(cfg.extra_train), data, cfg.labels)
    if cfg.weights == "imagenet":
        imagenet_weights_path(cfg.backbone, cfg.alpha)  # fail now, not after loading images
    _prepare_out(out, cfg.overwrite)
    log.info("dataset %s: %s", data, json.dumps(counts))
    return counts


def classes_in(data: Path, extra: Path | None) -> int:
    """3 when the train split of ``data`` (or ``extra``) holds incorrect_mask faces, else 2."""
    from train.dataset import dataset_rows

    for root in (data, extra):
        if root is not None and any(r.split == "train" for r in dataset_rows(root, THREE_CLASS_LABELS)
                                    if r.label == THREE_CLASS_LABELS[2]):
            return 3
    return 2


def check_extra_provenance(extra: Path, data: Path) -> None:
    """An error unless the ``--extra-train`` dataset was made from the train split of ``data`` as it
    is now (a re-split could have moved its originals into val or test)."""
    from device.manifest import manifest_path, manifest_sha256

    if not manifest_path(data).exists():
        return  # check_training_data says what is wrong with --data
    report = extra / "add_masks_report.json"
    try:
        made_from = (json.loads(report.read_text(encoding="utf-8")).get("dataset") or {})
    except (OSError, ValueError):
        raise ValueError(f"--extra-train {extra}: {report.name} missing or unreadable; make it with "
                         f"`maskwatch data add-masks {data} --split train --out {extra}`") from None
    if made_from.get("split") != "train" or made_from.get("manifest_sha256") != manifest_sha256(data):
        raise ValueError(f"--extra-train {extra} was not made from the train split of {data} as it is now "
                         f"(made from {made_from.get('path')!r} split {made_from.get('split')!r}); make it again with "
                         f"`maskwatch data add-masks {data} --split train --out {extra}`")


def check_extra_train(extra: Path, data: Path, labels: tuple[str, ...]) -> dict[str, int]:
    """The ``--extra-train`` dataset's train counts (after :func:`check_extra_provenance`)."""
    from train.dataset import dataset_rows

    rows = [r for r in dataset_rows(extra, labels) if r.split == "train"]
    return {lab: sum(r.label == lab for r in rows) for lab in labels}


def load_images(cfg: TrainConfig, seconds: dict[str, float]) -> tuple[Split, Split]:
    """The train and val splits, resized to the model's input (train with ``extra_train`` added)."""
    from train.dataset import Split, load_split_data

    t = time.monotonic()
    train_ds = load_split_data(Path(cfg.data), "train", cfg.input_size, cfg.labels)
    if cfg.extra_train:
        extra = load_split_data(Path(cfg.extra_train), "train", cfg.input_size, cfg.labels)
        train_ds = Split(x=np.concatenate([train_ds.x, extra.x]), y=np.concatenate([train_ds.y, extra.y]),
                         paths=train_ds.paths + [f"{cfg.extra_train}/{p}" for p in extra.paths],
                         labels=train_ds.labels)
    val_ds = load_split_data(Path(cfg.data), "val", cfg.input_size, cfg.labels)
    seconds["load_images"] = time.monotonic() - t
    log.info("loaded %d train + %d val images in %.1f s", len(train_ds), len(val_ds), seconds["load_images"])
    return train_ds, val_ds


def write_run_config(cfg: TrainConfig, counts: dict, weights: dict[int, float]) -> dict[str, Any]:
    """config.json: the options, the data it saw (manifest hash, counts, margin) and the versions."""
    from device.manifest import manifest_sha256
    from train.dataset import dataset_margin

    data, labels = Path(cfg.data), cfg.labels
    extra = {"extra_train_manifest_sha256": manifest_sha256(Path(cfg.extra_train))} if cfg.extra_train else {}
    config = {**asdict(cfg), **extra, "data_resolved": str(data.resolve()), "labels": list(labels),
              "augment_config": _augment_config(cfg).to_dict(), "margin": dataset_margin(data),
              "dataset_manifest_sha256": manifest_sha256(data), "counts": counts,
              "class_weights": {labels[i]: w for i, w in weights.items()}, "versions": _versions()}
    (Path(cfg.out) / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def _augment_config(cfg: TrainConfig) -> AugmentConfig:
    from train.augment import AugmentConfig

    return AugmentConfig(blur=0.5 if cfg.blur else 0.0)


def build(cfg: TrainConfig, train_ds: Split, val_ds: Split, weights: dict[int, float]) -> tuple[Any, FitData]:
    """The model (seeded) and what it is fitted on."""
    import keras

    from train.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    n = len(cfg.labels)
    model = build_model(cfg.backbone, cfg.input_size, n, cfg.alpha, cfg.weights, augment=cfg.augment,
                        dropout=cfg.dropout, augment_config=_augment_config(cfg), seed=cfg.seed)
    fit = FitData(train=train_ds, val=val_ds,
                  y_train=keras.utils.to_categorical(train_ds.y, n), y_val=keras.utils.to_categorical(val_ds.y, n),
                  w_train=np.array([weights[int(i)] for i in train_ds.y], np.float32),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing))
    return model, fit


def train_head(model, cfg: TrainConfig, fit: FitData, seconds: dict[str, float],
               history: list[dict[str, Any]]) -> float:
    """Phase 1: the head on cached backbone features; returns its best val loss (inf when skipped)."""
    from train.model import head_model

    if cfg.epochs_head <= 0:
        return np.inf
    t = time.monotonic()
    n_copies = cfg.head_copies if cfg.augment else 1
    clean_fm, aug_fm = _feature_models(model, n_copies > 1)
    copies = [_features(clean_fm, fit.train.x, "train (clean)")]
    copies += [_features(aug_fm, fit.train.x, f"train (augmented copy {k})") for k in range(1, n_copies)]
    f_val = _features(clean_fm, fit.val.x, "val")
    seconds["features"] = time.monotonic() - t
    t = time.monotonic()
    head = head_model(model)
    head.compile(optimizer=_optimizer(cfg.optimizer, cfg.lr_head), loss=fit.loss, metrics=["accuracy"])
    k = len(copies)
    log.info("phase 1/2: head on %d cached feature vectors (%d copies), up to %d epochs",
             k * len(fit.train), k, cfg.epochs_head)
    h = head.fit(np.concatenate(copies), np.tile(fit.y_train, (k, 1)), sample_weight=np.tile(fit.w_train, k),
                 batch_size=cfg.batch_size, epochs=cfg.epochs_head, validation_data=(f_val, fit.y_val),
                 shuffle=True, callbacks=[_early_stop(cfg.patience)], verbose=_verbose())
    seconds["head"] = time.monotonic() - t
    history += _history_rows("head", h.history, seconds["head"])
    return float(np.min(h.history["val_loss"]))


def fine_tune(model, cfg: TrainConfig, fit: FitData, head_best: float, seconds: dict[str, float],
              history: list[dict[str, Any]]) -> None:
    """Phase 2: the top of the backbone too; the head-phase weights stay if this does not beat them."""
    import keras

    from train.model import set_finetune

    if cfg.epochs_finetune <= 0 or cfg.finetune_layers <= 0:
        return
    t = time.monotonic()
    before = model.get_weights()
    scratch = cfg.weights == "none"
    n_layers = 10**6 if scratch else cfg.finetune_layers  # from scratch nothing is worth freezing
    n_trainable = set_finetune(model, n_layers, train_batchnorm=scratch)
    model.compile(optimizer=_optimizer(cfg.optimizer, cfg.lr_finetune), loss=fit.loss, metrics=["accuracy"])
    log.info("phase 2/2: %s (%d weight tensors), up to %d epochs",
             "training the whole backbone from scratch" if scratch else
             f"fine-tuning the top {cfg.finetune_layers} backbone layers", n_trainable, cfg.epochs_finetune)
    ckpt = Path(cfg.out) / "checkpoint.weights.h5"
    h = model.fit(fit.train.x.astype(np.float32), fit.y_train, sample_weight=fit.w_train, batch_size=cfg.batch_size,
                  epochs=cfg.epochs_finetune, validation_data=(fit.val.x.astype(np.float32), fit.y_val),
                  shuffle=True, callbacks=[
                      _early_stop(cfg.patience),
                      # a plateau usually means the step is too big for the last few errors
                      keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                        patience=max(1, cfg.patience // 2), min_lr=1e-7),
                      keras.callbacks.ModelCheckpoint(str(ckpt), monitor="val_loss", save_best_only=True,
                                                      save_weights_only=True),
                  ], verbose=_verbose())
    seconds["finetune"] = time.monotonic() - t
    history += _history_rows("finetune", h.history, seconds["finetune"])
    if float(np.min(h.history["val_loss"])) >= head_best:
        log.info("fine-tuning did not beat the head phase on val loss; keeping the head-phase weights")
        model.set_weights(before)
    ckpt.unlink(missing_ok=True)


def save_run(model, cfg: TrainConfig, config: dict[str, Any], val_ds: Split, history: list[dict[str, Any]],
             seconds: dict[str, float], t_start: float) -> TrainResult:
    """model.keras with its card (val metrics at threshold 0.5), history.csv, curves.png, config.json."""
    from train import plots
    from train.evaluate import summarize
    from train.model import inference_model

    out, labels = Path(cfg.out), cfg.labels
    final = inference_model(model)
    model_path = out / "model.keras"
    final.save(model_path)
    probs = final.predict(val_ds.x.astype(np.float32), batch_size=64, verbose=0)
    val_metrics = summarize(val_ds.y, probs, labels, ALERT_LABEL, 0.5, cfg.alert_labels or None)
    seconds["total"] = time.monotonic() - t_start
    card = ModelCard(
        name=cfg.name or out.name,
        backbone=cfg.backbone,
        input_size=cfg.input_size,
        labels=list(labels),
        alert_labels=cfg.alert_labels,
        margin=config["margin"],
        threshold=0.5,
        quantization="none",
        metrics={"val": {k: val_metrics[k] for k in ("n", "accuracy", "roc_auc", "without_mask_precision",
                                                     "without_mask_recall", "without_mask_f1", "threshold")}},
        dataset_manifest_sha256=config["dataset_manifest_sha256"],
        extra={"alpha": cfg.alpha, "weights": cfg.weights, "train_seconds": round(seconds["total"], 1),
               "epochs": {p: sum(1 for r in history if r["phase"] == p) for p in ("head", "finetune")}},
    )
    card.validate(str(card_path(model_path)))
    card.save(card_path(model_path))
    write_history(history, out / "history.csv")
    if history:
        plots.training_curves(history, out / "curves.png")
    config["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    log.info("done in %.0f s: %s (val accuracy %.4f, without_mask F1 %.4f)", seconds["total"], model_path,
             val_metrics["accuracy"], val_metrics["without_mask_f1"])
    return TrainResult(out=out, model_path=model_path, card=card, history=history, seconds=seconds)


def _early_stop(patience: int):
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=max(1, patience), restore_best_weights=True)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            v[pkg] = md.version(pkg)
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from train.model import BACKBONES

    d = TrainConfig(data="", out="")
    parser.add_argument("--data", required=True, help="dataset folder (maskwatch data import + split)")
    parser.add_argument("--out", required=True, help="run folder to create, e.g. runs/NAME")
    parser.add_argument("--backbone", choices=list(BACKBONES), default=d.backbone)
    parser.add_argument("--alpha", type=float, default=d.alpha, help="width multiplier (MobileNets)")
    parser.add_argument("--input-size", type=int, default=d.input_size,
                        help="square input in px (default %(default)s: the Pi runs the model once per face per frame)")
    parser.add_argument("--weights", default=d.weights, help="imagenet (Keras cache), none, or a weights file")
    parser.add_argument("--epochs-head", type=int, default=d.epochs_head)
    parser.add_argument("--epochs-finetune", type=int, default=d.epochs_finetune)
    parser.add_argument("--finetune-layers", type=int, default=d.finetune_layers,
                        help="top backbone layers unfrozen in phase 2 (0: head only)")
    parser.add_argument("--lr-head", type=float, default=d.lr_head)
    parser.add_argument("--lr-finetune", type=float, default=d.lr_finetune)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default=d.optimizer)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--classes", type=int, choices=[0, 2, 3], default=d.classes,
                        help="2: with/without mask; 3: plus incorrect_mask; 0 (default): 3 when the train data "
                             "holds incorrect_mask faces, else 2")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience (epochs)")
    parser.add_argument("--head-copies", type=int, default=d.head_copies,
                        help="feature copies of the train split for the head phase: 1 clean + N-1 augmented")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation layers")
    parser.add_argument("--blur", action="store_true", help="add random Gaussian blur to the augmentation")
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument("--extra-train", default=d.extra_train, metavar="DIR",
                        help="synthetic faces added to the train split only (`maskwatch data add-masks DATA "
                             "--split train --style worn-wrong --out DIR`)")
    parser.add_argument("--name", default="", help="model name in the card (default: the run folder's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    keys = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: getattr(args, k) for k in keys if hasattr(args, k)})


def main(args: argparse.Namespace) -> int:
    result = train(config_from_args(args))
    val = result.card.metrics["val"]
    print(f"model: {result.model_path}")
    print(f"val accuracy {val['accuracy']:.4f}, without_mask F1 {val['without_mask_f1']:.4f}, "
          f"{result.seconds['total']:.0f} s")
    return 0
