"""What the daemon and the page hand each other: the page is one more event sink, plus a queue
of requests the daemon's loop carries out between two frames.

As a sink (:mod:`device.comms.sink`) it keeps the latest ``state`` document (the very dict MQTT
publishes, so the page and the ``state`` topic agree) and the last events. The other way, a
saved zone edit (:class:`ApplyZones`) or the test-alert button (:class:`SendTestAlert`) is queued
here and applied by the loop's own thread (:meth:`device.daemon.Daemon._web_requests`), so the
pipeline is never changed under a frame and the test event goes to every sink the normal way.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.comms.events import Event
from device.web.stream import LiveFeed

log = logging.getLogger("maskwatch.web")

#: Events the page lists.
LAST_EVENTS = 20


@dataclass(frozen=True)
class ApplyZones:
    ignore_regions: list[tuple[int, int, int, int]]
    entrance_region: tuple[int, int, int, int] | None


@dataclass(frozen=True)
class SendTestAlert:
    event: Event


class WebPage:
    """The page's sink, its live feed and its request queue; :meth:`start` serves it."""

    name = "web"

    def __init__(self, cfg: Any, config_path: Path, *, model_info: dict[str, Any], alert_label: str,
                 margin: float):
        self.cfg = cfg
        self.web = cfg.web
        self.config_path = Path(config_path)
        self.model_info = model_info
        self.alert_label = alert_label
        self.feed = LiveFeed(self.web.max_fps, blur_faces=self.web.blur_faces, margin=margin)
        self.state: dict[str, Any] | None = None
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=LAST_EVENTS)
        self._requests: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self.server: Any = None
        self._thread: threading.Thread | None = None

    # -- sink ----------------------------------------------------------------------------------

    def start(self) -> None:
        from device.config import read_password_file
        from device.web.server import make_server

        password = read_password_file(self.web.password_file)
        self.server = make_server(self, password)
        host, port = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever, name="web", daemon=True)
        self._thread.start()
        log.info("web page on http://%s:%d/ (password in %s)", host, port, self.web.password_file)

    def stop(self, clean: bool = True, flush_timeout: float = 5.0) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def publish_event(self, event: Event) -> None:
        with self._lock:
            self.events.appendleft({"time": event.frame_time, "type": event.type, "label": event.label,
                                    "score": event.score, "track_id": event.track_id})

    def publish_state(self, state: dict[str, Any]) -> None:
        self.state = state

    def publish_snapshot(self, jpeg: bytes) -> None:
        pass  # the page has its own live view

    @property
    def status(self) -> dict[str, Any]:
        return {"viewers": self.feed.watchers}

    # -- requests from the page to the daemon's loop -------------------------------------------

    def request(self, item: ApplyZones | SendTestAlert) -> None:
        self._requests.append(item)

    @property
    def has_requests(self) -> bool:
        return bool(self._requests)

    def take_requests(self) -> list[Any]:
        out = []
        while self._requests:
            out.append(self._requests.popleft())
        return out

    def test_alert(self) -> Event:
        """Queue a test event (type ``test``, the alert label) for every sink; returns it."""
        event = Event.test(device_id=self.cfg.device_id, model=self.model_info, label=self.alert_label,
                           now=time.time())
        self.request(SendTestAlert(event))
        return event

    def last_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)
