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
from typing import Any

import numpy as np

from device.contract import ALERT_LABEL, BINARY_LABELS, THREE_CLASS_LABELS, ModelCard, card_path

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
    classes: int = 2
    seed: int = 0
    patience: int = 3
    #: Feature copies of the train split for the head phase: 1 clean + (n - 1) augmented.
    head_copies: int = 2
    augment: bool = True
    blur: bool = False
    dropout: float = 0.2
    label_smoothing: float = 0.0
    name: str = ""
    overwrite: bool = False

    @property
    def labels(self) -> tuple[str, ...]:
        return BINARY_LABELS if self.classes == 2 else THREE_CLASS_LABELS

    def validate(self) -> None:
        if self.classes not in (2, 3):
            raise ValueError(f"--classes must be 2 or 3, got {self.classes}")
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
    from device.manifest import manifest_sha256
    from train.augment import AugmentConfig
    from train.dataset import check_training_data, class_weights, dataset_margin, load_split_data
    from train.evaluate import summarize
    from train.model import check_options, imagenet_weights_path

    t_start = time.monotonic()
    cfg.validate()
    labels = cfg.labels
    data, out = Path(cfg.data), Path(cfg.out)
    check_options(cfg.backbone, cfg.input_size, cfg.alpha, cfg.weights)
    counts = check_training_data(data, labels)
    if cfg.weights == "imagenet":
        imagenet_weights_path(cfg.backbone, cfg.alpha)  # fail now, not after loading images
    _prepare_out(out, cfg.overwrite)
    log.info("dataset %s: %s", data, json.dumps(counts))

    seconds: dict[str, float] = {}
    t = time.monotonic()
    train_ds = load_split_data(data, "train", cfg.input_size, labels)
    val_ds = load_split_data(data, "val", cfg.input_size, labels)
    seconds["load_images"] = time.monotonic() - t
    log.info("loaded %d train + %d val images in %.1f s", len(train_ds), len(val_ds), seconds["load_images"])

    aug_cfg = AugmentConfig(blur=0.5 if cfg.blur else 0.0)
    margin = dataset_margin(data)
    sha = manifest_sha256(data)
    weights = class_weights(train_ds.y, len(labels))
    config = {**asdict(cfg), "data_resolved": str(data.resolve()), "labels": list(labels), "augment_config": aug_cfg.to_dict(), "margin": margin,
              "dataset_manifest_sha256": sha, "counts": counts, "class_weights": {labels[i]: w for i, w in weights.items()},
              "versions": _versions()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    import keras

    from train.model import build_model, head_model, inference_model, set_finetune

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg.backbone, cfg.input_size, len(labels), cfg.alpha, cfg.weights, augment=cfg.augment,
                        dropout=cfg.dropout, augment_config=aug_cfg, seed=cfg.seed)
    n = len(labels)
    y_train = keras.utils.to_categorical(train_ds.y, n)
    y_val = keras.utils.to_categorical(val_ds.y, n)
    w_train = np.array([weights[int(i)] for i in train_ds.y], np.float32)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    history: list[dict[str, Any]] = []
    fit_kw = {"verbose": _verbose()}

    # ---- phase 1: head on cached features -------------------------------------------------
    head_best = np.inf
    if cfg.epochs_head > 0:
        t = time.monotonic()
        n_copies = cfg.head_copies if cfg.augment else 1
        clean_fm, aug_fm = _feature_models(model, n_copies > 1)
        copies = [_features(clean_fm, train_ds.x, "train (clean)")]
        copies += [_features(aug_fm, train_ds.x, f"train (augmented copy {k})") for k in range(1, n_copies)]
        f_val = _features(clean_fm, val_ds.x, "val")
        seconds["features"] = time.monotonic() - t
        t = time.monotonic()
        head = head_model(model)
        head.compile(optimizer=_optimizer(cfg.optimizer, cfg.lr_head), loss=loss, metrics=["accuracy"])
        k = len(copies)
        log.info("phase 1/2: head on %d cached feature vectors (%d copies), up to %d epochs",
                 k * len(train_ds), k, cfg.epochs_head)
        h = head.fit(np.concatenate(copies), np.tile(y_train, (k, 1)), sample_weight=np.tile(w_train, k),
                     batch_size=cfg.batch_size, epochs=cfg.epochs_head, validation_data=(f_val, y_val),
                     shuffle=True, callbacks=[_early_stop(cfg.patience)], **fit_kw)
        seconds["head"] = time.monotonic() - t
        history += _history_rows("head", h.history, seconds["head"])
        head_best = float(np.min(h.history["val_loss"]))
        del copies

    # ---- phase 2: fine-tune the top of the backbone ---------------------------------------
    if cfg.epochs_finetune > 0 and cfg.finetune_layers > 0:
        t = time.monotonic()
        before = model.get_weights()
        scratch = cfg.weights == "none"
        n_layers = 10**6 if scratch else cfg.finetune_layers  # from scratch nothing is worth freezing
        n_trainable = set_finetune(model, n_layers, train_batchnorm=scratch)
        model.compile(optimizer=_optimizer(cfg.optimizer, cfg.lr_finetune), loss=loss, metrics=["accuracy"])
        log.info("phase 2/2: %s (%d weight tensors), up to %d epochs",
                 "training the whole backbone from scratch" if scratch else
                 f"fine-tuning the top {cfg.finetune_layers} backbone layers", n_trainable, cfg.epochs_finetune)
        ckpt = out / "checkpoint.weights.h5"
        h = model.fit(train_ds.x.astype(np.float32), y_train, sample_weight=w_train, batch_size=cfg.batch_size,
                      epochs=cfg.epochs_finetune, validation_data=(val_ds.x.astype(np.float32), y_val),
                      shuffle=True, callbacks=[
                          _early_stop(cfg.patience),
                          # a plateau usually means the step is too big for the last few errors
                          keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                            patience=max(1, cfg.patience // 2), min_lr=1e-7),
                          keras.callbacks.ModelCheckpoint(str(ckpt), monitor="val_loss", save_best_only=True,
                                                          save_weights_only=True),
                      ], **fit_kw)
        seconds["finetune"] = time.monotonic() - t
        history += _history_rows("finetune", h.history, seconds["finetune"])
        if float(np.min(h.history["val_loss"])) >= head_best:
            log.info("fine-tuning did not beat the head phase on val loss; keeping the head-phase weights")
            model.set_weights(before)
        ckpt.unlink(missing_ok=True)

    # ---- artefacts ---------------------------------------------------------------------------
    from train import plots

    final = inference_model(model)
    model_path = out / "model.keras"
    final.save(model_path)
    probs = final.predict(val_ds.x.astype(np.float32), batch_size=64, verbose=0)
    val_metrics = summarize(val_ds.y, probs, labels, ALERT_LABEL, 0.5)
    seconds["total"] = time.monotonic() - t_start
    card = ModelCard(
        name=cfg.name or out.name,
        backbone=cfg.backbone,
        input_size=cfg.input_size,
        labels=list(labels),
        margin=margin,
        threshold=0.5,
        quantization="none",
        metrics={"val": {k: val_metrics[k] for k in ("n", "accuracy", "roc_auc", "without_mask_precision",
                                                     "without_mask_recall", "without_mask_f1", "threshold")}},
        dataset_manifest_sha256=sha,
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
    parser.add_argument("--classes", type=int, choices=[2, 3], default=d.classes,
                        help="2: with/without mask; 3: plus incorrect_mask")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience (epochs)")
    parser.add_argument("--head-copies", type=int, default=d.head_copies,
                        help="feature copies of the train split for the head phase: 1 clean + N-1 augmented")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation layers")
    parser.add_argument("--blur", action="store_true", help="add random Gaussian blur to the augmentation")
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
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
