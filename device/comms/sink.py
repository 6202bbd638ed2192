"""Where the daemon's messages go: the one interface every event sink implements.

The daemon hands each event, state document and snapshot to every sink in its list and knows
nothing else about them; :class:`device.comms.mqtt.MqttPublisher` is one. Another sink (a web
page's live feed, a webhook, a log file) is a module with these methods plus one line in
:func:`device.wiring.make_sinks`.

Contract, as the daemon relies on it:

* ``publish_event`` must not block the frame loop for long: queue, and deliver from a thread.
  It may raise ``OSError``/``ValueError``/``RuntimeError`` (disk full, schema violation); the
  daemon counts and logs that and goes on with the next sink.
* ``publish_state`` gets the latest state; only the latest one matters.
* ``publish_snapshot`` gets JPEG bytes; a sink may drop them (they are best effort).
* ``status`` is a small JSON-able dict; it appears in the state document under ``name``.
* ``stop(clean=True, flush_timeout=...)`` may use up to ``flush_timeout`` seconds to deliver
  what is queued; anything it cannot deliver it keeps for the next start or says it dropped.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from device.comms.events import Event


@runtime_checkable
class EventSink(Protocol):
    #: The sink's key in the state document ("mqtt").
    name: str

    def start(self) -> None: ...

    def stop(self, clean: bool = True, flush_timeout: float = 5.0) -> None: ...

    def publish_event(self, event: Event) -> None: ...

    def publish_state(self, state: dict[str, Any]) -> None: ...

    def publish_snapshot(self, jpeg: bytes) -> None: ...

    @property
    def status(self) -> dict[str, Any]: ...
