"""Home Assistant MQTT discovery: the configs that make a maskwatch device appear by itself.

One retained config per entity (``<prefix>/<component>/<node_id>/<object_id>/config``), all
carrying the same ``device`` block so Home Assistant groups them under one device. Per-entity
configs work with every Home Assistant release that has MQTT discovery; the newer single
"device" discovery message does not. Keys follow the current MQTT integration docs:
``unique_id`` (required for the device registry), ``default_entity_id`` (which replaced
``object_id`` in 2025.10; older releases ignore it because discovery schemas drop unknown keys),
``origin``, ``availability_topic`` with an ``availability_template`` that maps our
``stopped`` (clean exit) to ``offline``, so a stopped device is shown unavailable instead of
keeping its last state.

The state payload the daemon publishes carries ``no_mask_present`` and ``alert_present`` (bool),
``<label>_total`` and ``<label>_today`` for every label of the model, and ``fps``;
:func:`state_keys` lists what the templates below use, for a given set of labels. A 3-label model
gets an ``incorrect_mask`` counter pair beside the other two, and "alert present" turns on for a
person whose label is any of the alert labels (``[alerts] labels``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from device.comms.events import EVENT_TYPES
from device.contract import ALERT_LABEL, BINARY_LABELS, INCORRECT_MASK, WITH_MASK, WITHOUT_MASK

#: How each label reads in Home Assistant's entity names.
LABEL_NAMES = {WITH_MASK: "with mask", WITHOUT_MASK: "without mask", INCORRECT_MASK: "with mask worn wrong"}


def state_keys(labels: Sequence[str] = BINARY_LABELS) -> tuple[str, ...]:
    """The state keys the discovery templates of a model with ``labels`` read."""
    counters = [f"{lb}_{when}" for when in ("total", "today") for lb in labels]
    return ("no_mask_present", "alert_present", *counters, "fps")


#: The keys a 2-label model's discovery templates read.
STATE_KEYS: tuple[str, ...] = state_keys()
ORIGIN_NAME = "maskwatch"


def node_id(device_id: str) -> str:
    """The device id as a discovery topic level / entity id part (letters, digits, _ only)."""
    return "maskwatch_" + re.sub(r"[^a-zA-Z0-9_]", "_", device_id).lower()


def status_topic(discovery_prefix: str) -> str:
    """Where Home Assistant announces itself (``online`` after it starts): we re-send then."""
    return f"{discovery_prefix.rstrip('/')}/status"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("maskwatch")
    except Exception:  # not installed as a distribution (plain source checkout)
        return "unknown"


def discovery_messages(
    *,
    device_id: str,
    device_name: str,
    availability_topic: str,
    state_topic: str,
    events_topic: str,
    discovery_prefix: str = "homeassistant",
    model_info: dict[str, Any] | None = None,
    labels: Sequence[str] = BINARY_LABELS,
    alert_labels: Sequence[str] = (ALERT_LABEL,),
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload) of every discovery config for one device; publish them retained.

    A counter pair (since start, today) per label of the model, one "alert present" binary
    sensor (any person whose label is one of ``alert_labels`` in view) beside the older
    "person without mask present".
    """
    node = node_id(device_id)
    prefix = discovery_prefix.rstrip("/")
    sw = _version()
    model = (model_info or {}).get("name") or "mask classifier"
    device = {
        "identifiers": [node],
        "name": device_name,
        "manufacturer": "maskwatch",
        "model": str(model),
        "serial_number": device_id,
        "sw_version": sw,
    }
    common = {
        "device": device,
        "origin": {"name": ORIGIN_NAME, "sw_version": sw},
        "availability_topic": availability_topic,
        "availability_template": "{{ 'online' if value == 'online' else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }

    def entity(component: str, key: str, name: str, **options: Any) -> tuple[str, dict[str, Any]]:
        uid = f"{node}_{key}"
        payload = {"name": name, "unique_id": uid, "default_entity_id": f"{component}.{uid}", **common, **options}
        return f"{prefix}/{component}/{node}/{key}/config", payload

    def counter(key: str, name: str) -> tuple[str, dict[str, Any]]:
        return entity(
            "sensor", key, name,
            state_topic=state_topic,
            value_template=f"{{{{ value_json.{key} }}}}",
            state_class="total_increasing",
            unit_of_measurement="faces",
            icon="mdi:counter",
        )

    return [
        entity(
            "binary_sensor", "no_mask_present", "Person without mask present",
            state_topic=state_topic,
            value_template="{{ 'ON' if value_json.no_mask_present else 'OFF' }}",
            payload_on="ON",
            payload_off="OFF",
            device_class="occupancy",
        ),
        entity(
            "binary_sensor", "alert_present", "Alert: person " + " or ".join(LABEL_NAMES.get(lb, lb) for lb in alert_labels)
            + " present",
            state_topic=state_topic,
            value_template="{{ 'ON' if value_json.alert_present else 'OFF' }}",
            payload_on="ON",
            payload_off="OFF",
            device_class="occupancy",
        ),
        *(counter(f"{lb}_total", f"Faces {LABEL_NAMES.get(lb, lb)} since start") for lb in labels),
        *(counter(f"{lb}_today", f"Faces {LABEL_NAMES.get(lb, lb)} today") for lb in labels),
        entity(
            "sensor", "fps", "Frame rate",
            state_topic=state_topic,
            value_template="{{ value_json.fps }}",
            state_class="measurement",
            unit_of_measurement="fps",
            suggested_display_precision=1,
            entity_category="diagnostic",
            icon="mdi:speedometer",
        ),
        entity(
            "event", "mask_event", "Mask event",
            state_topic=events_topic,
            event_types=list(EVENT_TYPES),
            # HA wants {"event_type": ..., <attributes>}; ours says "type".
            value_template=(
                "{{ {'event_type': value_json.type, 'label': value_json.label, 'score': value_json.score,"
                " 'top_score': value_json.top_score, 'track_id': value_json.track_id, 'box': value_json.box,"
                " 'event_id': value_json.event_id} | to_json }}"
            ),
            qos=1,
            icon="mdi:face-mask",
        ),
    ]
