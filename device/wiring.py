"""How the daemon's parts are made from its config: one place, used by ``run`` and ``check``.

``check`` loads exactly what ``run`` loads, in the same order and with the same code, so "check
passes" means "run starts": the classifier and its card, the face detector (pinned sha256 for
the BlazeFace models), the pipeline around them, and the event sinks the events go to.

A sink is anything with the :class:`device.comms.sink.EventSink` methods; :func:`make_sinks`
is the one list of them (MQTT today). A second one (a web page's live feed, a webhook) is its
own module plus one line here; the daemon does not change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What the daemon needs before it may touch the camera or the network."""

    classifier: Any  # device.classifier.MaskClassifier
    detector: Any
    detector_path: Path | None
    detector_verified: bool  # its sha256 matched the pinned one
    threshold: float  # the alert threshold in force (config, else the card's)
    threshold_source: str  # "config" | "model card"
    model_info: dict[str, Any]  # the ``model`` block of every event
    alert_labels: tuple[str, ...] = ()  # the labels that alert (``[alerts] labels`` for this model)

    @property
    def card(self) -> Any:
        return self.classifier.card


def resolve_detector_path(cfg: Any) -> tuple[Path | None, bool]:
    """The detector model file and whether it has a pinned checksum (BlazeFace) that matched.

    With no ``detector.model_path`` the fetched BlazeFace model (or, for yunet, the converted
    default model) is looked for in ``STATE_DIR/models`` (where install.sh puts detectors), then
    in ``$MASKWATCH_MODELS`` / ``models/``.
    A BlazeFace file whose sha256 is not the pinned one is refused (ChecksumError names it).
    """
    from device.detectors import model_files as fetch

    kind = cfg.detector.kind
    pinned = fetch.MODELS.get(kind)
    if cfg.detector.model_path:
        path = Path(cfg.detector.model_path)
    elif pinned is not None:
        candidates = [Path(cfg.state_dir) / "models" / pinned.name, Path(fetch.DEFAULT_DIR) / pinned.name]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"detector.model_path: the {kind!r} detector model {pinned.name} is in none of "
                f"{', '.join(str(p.parent) for p in candidates)}; run `maskwatch-device fetch-models "
                f"--dest {candidates[0].parent}`"
            )
    else:  # yunet: the converted default model, in the same folders
        from device.detectors.yunet_litert import default_model_path

        try:
            path = default_model_path(Path(cfg.state_dir) / "models")
        except FileNotFoundError:
            try:
                path = default_model_path()
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"detector.model_path: {exc}") from None
    if not path.is_file():
        raise FileNotFoundError(f"detector.model_path: file not found: {path}")
    if pinned is None:
        return path, False
    fetch.verify(path, pinned)  # ChecksumError (a RuntimeError) naming the file
    return path, True


def load_components(cfg: Any) -> Components:
    """Classifier + card, detector, in that order; any problem raises before the camera opens."""
    from device.classifier import MaskClassifier
    from device.comms.events import model_info
    from device.contract import THREE_CLASS_LABELS, card_path
    from device.detectors import make_detector

    clf = MaskClassifier(Path(cfg.classifier.model_path), num_threads=cfg.classifier.num_threads)
    unknown = [lab for lab in clf.card.labels if lab not in THREE_CLASS_LABELS]
    if unknown:  # events may only carry the contract's labels (device/schemas/event.schema.json)
        raise ValueError(f"{card_path(clf.path)}: labels {unknown} are not among {list(THREE_CLASS_LABELS)}")
    if cfg.classifier.threshold is not None:
        threshold, source = float(cfg.classifier.threshold), "config"
    else:
        threshold, source = float(clf.card.threshold), "model card"
    det_path, verified = resolve_detector_path(cfg)
    detector = make_detector(
        cfg.detector.kind, det_path, score_threshold=cfg.detector.score_threshold,
        min_face=cfg.detector.min_face, num_threads=cfg.detector.num_threads, mirror=cfg.detector.mirror,
    )
    info = model_info(clf.card.name, clf.sha256, clf.card.quantization, threshold)
    return Components(clf, detector, det_path, verified, threshold, source, info, alert_labels(cfg, clf.card))


def alert_labels(cfg: Any, card: Any) -> tuple[str, ...]:
    """``[alerts] labels`` for this model (ConfigError naming the field when the card lacks one).

    The card's threshold was chosen for the card's own alert labels (their summed probability);
    another set is allowed but the threshold then means something else, so it is logged.
    """
    from device.config import AlertsConfig

    labels = getattr(cfg, "alerts", AlertsConfig()).for_model(card.labels)
    if cfg.classifier.threshold is None and tuple(labels) != tuple(card.alerts):
        log.warning("alerts.labels %s differ from the labels the model card's threshold was chosen for %s",
                    list(labels), list(card.alerts))
    return labels


def make_pipeline(cfg: Any, parts: Components) -> Any:
    """Detector, classifier and a fresh tracker as one :class:`device.pipeline.Pipeline`."""
    from device.pipeline import Pipeline
    from device.tracking.tracker import Tracker

    card = parts.card
    tracker = Tracker(cfg.tracker, card.labels, parts.alert_labels or card.alerts, parts.threshold)
    det = cfg.detector
    return Pipeline(parts.detector, parts.classifier, tracker, min_face=det.min_face,
                    ignore_regions=det.ignore_regions, max_faces=det.max_faces,
                    entrance_region=det.entrance_region)


def make_sinks(cfg: Any, parts: Components, state_home: Path) -> list[Any]:
    """The event sinks of this config, not started; ``state_home`` holds their persistent state
    (the MQTT outbox)."""
    from device.comms.mqtt import MqttPublisher

    card = parts.card
    mqtt = MqttPublisher(cfg.mqtt, cfg.device_id, state_home, cfg.device_name, parts.model_info,
                         labels=card.labels, alert_labels=parts.alert_labels or card.alerts)
    log.info("mqtt: %s:%s, events on %s", cfg.mqtt.host, cfg.mqtt.port, mqtt.topics.events)
    return [mqtt]


def make_web_page(cfg: Any, parts: Components, config_path: Path | None) -> Any:
    """The set-up page (:class:`device.web.page.WebPage`, not started) when ``web.enabled``, else None.

    It needs the config file it came from (zones are saved there); a config built in code has
    none, so no page.
    """
    if not cfg.web.enabled:
        return None
    if config_path is None:
        log.warning("web.enabled but no config file to save zones into: the page is not served")
        return None
    from device.web.page import WebPage

    return WebPage(cfg, Path(config_path), model_info=parts.model_info, alert_label=parts.card.alert_label,
                   margin=parts.card.margin)
