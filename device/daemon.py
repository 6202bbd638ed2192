"""``maskwatch-device run``: the camera -> faces -> classifier -> tracker -> event sinks daemon.

Start-up order is deliberate: config, classifier + card, detector (checksum), tracker, and only
then the event sinks (the broker connection) and the camera. What is made from the config is
made in :mod:`device.wiring` (``check`` uses the same code); the daemon only runs the loop: a
frame through the :class:`~device.pipeline.Pipeline`, each tracker event turned into one
:class:`~device.comms.events.Event` and handed to every sink (:mod:`device.comms.sink`; MQTT
is one).

Anything wrong with the files fails fast with one clear line and a non-zero exit, before a
camera is opened or a message sent; that is what systemd's restart limit and ``journalctl``
are good at reporting.

After that nothing is fatal: a camera that fails is reopened by the grabber with backoff, a
broker that is away gets the events queued in the persistent outbox, a full or read-only disk
is counted in the state message. ``READY=1`` goes to systemd once the first frame went through
the pipeline and ``WATCHDOG=1`` only while frames keep coming, so a wedged camera makes
systemd restart the daemon. SIGTERM/SIGINT stop cleanly: open tracks end (their ``end``
events are published), the outbox is flushed and the retained availability says ``stopped``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("maskwatch.daemon")

#: How long one wait for a frame may block; bounds how late a signal or a state message is.
FRAME_WAIT_S = 0.25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the TOML config file")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop cleanly after N processed frames")
    parser.add_argument("--exit-on-end", action="store_true",
                        help="stop cleanly when a file or image source has no more frames "
                             "(default: keep running and report the camera as ended)")


def main(args: argparse.Namespace) -> int:
    from device.config import load_config
    from device.wiring import load_components

    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    cfg = load_config(args.config)
    parts = load_components(cfg)  # classifier, card, detector: every file problem raises here
    daemon = Daemon(cfg, parts, max_frames=args.max_frames, exit_on_end=args.exit_on_end, config_path=args.config)
    return daemon.run()


class Daemon:
    def __init__(self, cfg: Any, parts: Any, *, max_frames: int | None = None, exit_on_end: bool = False,
                 grabber_factory: Any = None, record_timings: bool = False,
                 sinks: Callable[[Path], Sequence[Any]] | None = None, config_path: Path | None = None):
        """``grabber_factory(camera_cfg)`` replaces the camera grabber and ``record_timings`` keeps
        every frame's stage times in :attr:`timings` (both for the benchmark). ``sinks(state_home)``
        makes the event sinks (default: :func:`device.wiring.make_sinks` of ``cfg``).
        ``config_path``: the file ``cfg`` came from, where the web page saves its zones (the page
        is served only with ``web.enabled`` and a config file)."""
        from device.captures import Monitor
        from device.health import Notifier, Watchdog
        from device.ratelimit import RateLimitedLog
        from device.state import DeviceState
        from device.wiring import make_pipeline, make_sinks, make_web_page

        self.cfg = cfg
        self.parts = parts
        self.max_frames = max_frames
        self.exit_on_end = exit_on_end
        card = parts.card
        self.alert_label = card.alert_label
        self.alert_labels = tuple(getattr(parts, "alert_labels", ()) or card.alerts)
        self.pipeline = make_pipeline(cfg, parts)
        self.sink_factory = sinks or (lambda home: make_sinks(cfg, parts, home))
        self.sinks: list[Any] = []
        self.web = make_web_page(cfg, parts, config_path)  # None unless [web] enabled
        self.errlog = RateLimitedLog(log)
        self.state_dir = Path(cfg.state_dir)
        self._prepare_state_dir()
        self.monitor = Monitor(
            self.state_dir, cfg.uncertain, cfg.snapshot, labels=card.labels, alert_label=card.alert_label,
            margin=card.margin, meta={"device_id": cfg.device_id, "model": parts.model_info},
            log_error=lambda msg: self.errlog.warning("%s", msg),
        )
        self.notifier = Notifier()
        self.watchdog = Watchdog(self.notifier, max_frame_age_s=max(2.0, float(cfg.camera.stall_timeout_s)))
        now_wall, now_mono = time.time(), time.monotonic()
        self.state = DeviceState(cfg.device_id, card.labels, card.alert_label, now_wall, now_mono,
                                 alert_labels=self.alert_labels)
        self.grabber: Any = None
        self.grabber_factory = grabber_factory
        self.timings: list[dict[str, float]] | None = [] if record_timings else None
        self.stop_event = threading.Event()
        self.publish_errors = 0
        self.frame_errors = 0
        self._last_ok: float | None = None  # monotonic time of the last frame processed without error
        # Frame time minus wall time at the last frame. Frames carry media time in lossless
        # replays (1/fps apart, however fast they are read), which runs ahead of or behind the
        # wall clock; the tracker must see one clock, also when it is fed no frame.
        self._frame_clock_offset = 0.0
        self._ready = False
        self._storage_error: str | None = None
        self._fallback_dir: Path | None = None  # temporary outbox home when state_dir is unwritable

    # ----------------------------------------------------------------------------- lifecycle

    def _prepare_state_dir(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # Not fatal: events then live in memory only, crops are not kept. Reported in state.
            self._storage_error = f"state_dir {self.state_dir}: {exc.strerror or exc}"
            log.warning("%s; running without persistent state", self._storage_error)

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            if self.stop_event.is_set():
                log.info("%s again: already stopping", signal.Signals(signum).name)
                return
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _outbox_home(self) -> Path:
        """The state dir, or a temporary folder when the state dir cannot be written (read-only
        SD card, full disk): events then survive a broker outage but not a reboot."""
        try:
            (self.state_dir / "outbox").mkdir(parents=True, exist_ok=True)
            probe = self.state_dir / "outbox" / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            return self.state_dir
        except OSError as exc:
            import tempfile

            fallback = Path(tempfile.mkdtemp(prefix="maskwatch-state-"))
            self._fallback_dir = fallback
            self._storage_error = f"state_dir {self.state_dir}: {exc.strerror or exc}"
            log.error("%s; the event outbox is in %s until the next start", self._storage_error, fallback)
            return fallback

    def _start_sinks(self) -> None:
        for sink in self.sink_factory(self._outbox_home()):
            self.sinks.append(sink)  # stopped on the way out even when its start fails
            sink.start()
        if self.web is not None:
            try:
                self.web.start()
            except (OSError, ValueError) as exc:  # port taken, password file gone: detection goes on
                log.error("web page not started: %s", exc)
                self.web = None
            else:
                self.sinks.append(self.web)

    def sink_status(self) -> dict[str, Any]:
        """Each sink's status by its name (``{"mqtt": {...}}``)."""
        return {sink.name: sink.status for sink in self.sinks}

    def run(self) -> int:
        from device.camera.capture import LatestFrameGrabber

        self._install_signals()
        cfg = self.cfg
        log.info("model %s (%s, threshold %.2f from %s), detector %s, device %s",
                 self.parts.classifier.path, self.parts.card.quantization, self.parts.threshold,
                 self.parts.threshold_source, cfg.detector.kind, cfg.device_id)
        try:
            self._start_sinks()
            self.grabber = (self.grabber_factory or LatestFrameGrabber)(cfg.camera)
            self.grabber.start()
            self.notifier.status("waiting for the first frame")
            next_state = time.monotonic()  # one state message as soon as possible
            while not self.stop_event.is_set():
                if not self._step():
                    break
                if self.web is not None and self.web.has_requests:
                    self._web_requests()
                # Fed only while frames make it through the pipeline: a stalled camera or a
                # pipeline that fails on every frame both get the daemon restarted by systemd.
                self.watchdog.tick(None if self._last_ok is None else time.monotonic() - self._last_ok)
                now = time.monotonic()
                if now >= next_state:
                    self._publish_state()
                    next_state = now + cfg.state_interval_s
        finally:
            self._shutdown()
        return 0

    def _step(self) -> bool:
        """Wait for one frame and process it (or let time pass without one); False: stop now.

        Its own method so that the frame is let go as soon as it is processed, not held while
        waiting for the next one (a 12 MP frame is 36 MB).
        """
        t0 = time.perf_counter()
        frame = self.grabber.get(timeout=FRAME_WAIT_S)
        wait_ms = (time.perf_counter() - t0) * 1e3
        if frame is not None:
            self._process_safely(frame, wait_ms)
            if self.max_frames is not None and self.state.frames_total >= self.max_frames:
                log.info("processed %d frames (--max-frames): stopping", self.state.frames_total)
                return False
        elif self.grabber.ended and self.exit_on_end:
            log.info("camera source ended (--exit-on-end): stopping")
            return False
        else:
            self._idle(self._frame_now())
            if self.grabber.ended:
                # get() returns at once for an ended source: wait here instead of spinning.
                self.stop_event.wait(FRAME_WAIT_S)
        return True

    def _shutdown(self) -> None:
        self.notifier.stopping()
        if self.grabber is not None:
            self.grabber.stop(timeout=5.0)
        now = self._frame_now()
        try:
            self._emit(self.pipeline.flush(now), now)
            if self.sinks:
                self._publish_state()
        finally:
            for sink in self.sinks:
                try:
                    sink.stop(clean=True, flush_timeout=5.0)
                except Exception as exc:  # one sink failing to stop must not keep the others from it
                    log.error("stopping the %s sink failed: %s: %s", sink.name, type(exc).__name__, exc)
            if self._fallback_dir is not None and not any(s.status.get("queued") for s in self.sinks):
                import shutil

                shutil.rmtree(self._fallback_dir, ignore_errors=True)
        log.info("stopped after %d frames, %d events", self.state.frames_total, self.state.events_total)

    # ----------------------------------------------------------------------------- per frame

    def _process_safely(self, frame: Any, wait_ms: float) -> None:
        """One frame; an unexpected error is logged (with its traceback the first time),
        counted in the state, and the next frame is tried."""
        try:
            self._process(frame, wait_ms)
        except Exception as exc:
            self.frame_errors += 1
            if self.frame_errors == 1:
                log.exception("processing frame %d failed", frame.seq)
            else:
                self.errlog.error("processing a frame failed: %s: %s", type(exc).__name__, exc)
            return
        self._last_ok = time.monotonic()

    def _frame_now(self) -> float:
        """Now, on the clock the frames' times are on (see ``_frame_clock_offset``)."""
        return time.time() + self._frame_clock_offset

    def _process(self, frame: Any, wait_ms: float) -> None:
        self._frame_clock_offset = frame.time - time.time()
        res = self.pipeline.process(frame.rgb, frame.time, frame.scale)
        t0 = time.perf_counter()
        self._emit(res.events, frame.time, res)
        t1 = time.perf_counter()
        self.monitor.uncertain.consider(res.view, res.crop_boxes, res.probs, res.alert_scores, frame.time,
                                        time.monotonic())
        t2 = time.perf_counter()
        timings = {"capture": wait_ms, **res.timings_ms, "publish": (t1 - t0) * 1e3, "monitor": (t2 - t1) * 1e3}
        if self.web is not None:  # the page's share of the frame, also while nobody watches
            if self.web.feed.wanted:  # someone watches: hand the picture over
                self._offer_live(res, frame)
            timings["web"] = (time.perf_counter() - t2) * 1e3
        self.state.on_frame(timings, len(res.faces), frame.time)
        if self.timings is not None:
            self.timings.append(timings)
        if not self._ready:
            self._ready = True
            h, w = frame.rgb.shape[:2]
            self.notifier.ready(f"processing {w}x{h} frames")
            log.info("first frame processed (%dx%d): ready", w, h)

    def _idle(self, now: float) -> None:
        """No frame this time: let the tracker end people who left while the camera was quiet."""
        if self._ready:
            self._emit(self.pipeline.expire(now), now)

    def _emit(self, events: list[Any], now: float, result: Any = None) -> None:
        """Each tracker event as one Event to every sink (and a snapshot of a ``new`` alert,
        from the picture the detector saw, when ``result`` is the frame's FrameResult)."""
        from device.comms.events import Event

        for e in events:
            event = Event.from_track(e, device_id=self.cfg.device_id, model=self.parts.model_info)
            self.state.on_event(e.type, e.track_id, e.label, now)
            log.info("event %s track %d %s score %.2f", e.type, e.track_id, e.label, e.score)
            self._publish("event", lambda sink, ev=event: sink.publish_event(ev))
            if e.type == "new" and e.label in self.alert_labels and result is not None:
                data = self.monitor.snapshot(result.view, result.view_boxes, result.to_view([e.box]), now)
                if data is not None:
                    self._publish("snapshot", lambda sink, d=data: sink.publish_snapshot(d))

    def _publish(self, what: str, call: Callable[[Any], None]) -> None:
        """``call(sink)`` for every sink; one that cannot take it does not keep it from the others."""
        for sink in self.sinks:
            try:
                call(sink)
            except (OSError, ValueError, RuntimeError) as exc:
                # e.g. the outbox could not take it (disk full, read-only): keep running, say so in state.
                self.publish_errors += 1
                self.errlog.error("cannot publish %s to %s: %s", what, sink.name, exc)

    # ----------------------------------------------------------------------------- web page

    def _offer_live(self, res: Any, frame: Any) -> None:
        from device.web.stream import live_frame

        h, w = frame.rgb.shape[:2]
        source = (round(w / frame.scale[0]), round(h / frame.scale[1]))
        p = self.pipeline
        self.web.feed.offer(live_frame(res, p.tracks, p.ignore_regions, p.entrance_region, source,
                                       self.alert_label))

    def _web_requests(self) -> None:
        """What the page asked for, between two frames: new zones, a test alert."""
        from device.web.page import ApplyZones

        for item in self.web.take_requests():
            if isinstance(item, ApplyZones):
                self.pipeline.set_zones(item.ignore_regions, item.entrance_region)
                log.info("zones applied: ignore %s, entrance %s", item.ignore_regions, item.entrance_region)
            else:  # SendTestAlert: to every sink like an event, never counted in the state
                log.info("test alert %s", item.event.event_id)
                self._publish("test event", lambda sink, ev=item.event: sink.publish_event(ev))

    # ----------------------------------------------------------------------------- state

    def _publish_state(self) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        monitor = self.monitor.status()
        if self._storage_error:
            monitor["state_dir_error"] = self._storage_error
            monitor["errors"] += 1
            monitor["last_error"] = monitor["last_error"] or self._storage_error
        monitor["publish_errors"] = self.publish_errors
        monitor["frame_errors"] = self.frame_errors
        camera = dict(self.grabber.stats) if self.grabber is not None else {}
        if camera.get("last_frame_age_s") is not None:
            camera["last_frame_age_s"] = round(camera["last_frame_age_s"], 3)
        self.state.presence.sync(self.pipeline.tracks)
        sinks = self.sink_status()
        payload = self.state.payload(
            now_wall, now_mono, camera=camera, mqtt=sinks.pop("mqtt", None), monitor=monitor,
            model={k: v for k, v in self.parts.model_info.items()}, detector=self.cfg.detector.kind,
        )
        payload.update(sinks)  # any other sink's status under its own name
        self._publish("state", lambda sink: sink.publish_state(payload))
        self.state.next_window(now_mono)
        self.notifier.status(
            f"{payload['fps']} fps, {payload['people_present']} in view, camera {camera.get('status')}, "
            f"mqtt {payload['mqtt']}"
        )
