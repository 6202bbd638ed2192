"""The device's MQTT topic names, and the rules a configured topic must follow.

Everything the daemon publishes lives under one prefix (``maskwatch/<device_id>`` by default):
``availability``, ``events``, ``state`` and ``snapshot``. The rules here are the ones the MQTT
specification and real brokers enforce, checked when the config is read so that a bad prefix
is a config error naming the field instead of a broker silently dropping the connection:
no wildcards (``+``, ``#``), no control characters (NUL, ESC, ...), no empty, ``.`` or ``..``
levels, no leading or trailing ``/``, no ``$`` at the start (``$SYS/...`` belongs to the
broker), at most 65,535 bytes of UTF-8. Light on purpose: the config module imports it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Characters allowed in a device id: it becomes an MQTT topic level and a Home Assistant
#: discovery node id, which allow exactly these.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEVICE_ID_RULE = "1-64 letters, digits, '_' or '-'"
#: The placeholder a topic prefix must contain, so that every device gets its own topics.
DEVICE_ID_FIELD = "{device_id}"
#: MQTT's limit on a topic name (a two-byte length prefix), in bytes of UTF-8.
MAX_TOPIC_BYTES = 65_535
#: The topics under the prefix.
SUFFIXES = ("availability", "events", "state", "snapshot")


def _is_noncharacter(ch: str) -> bool:
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def topic_problem(topic: str) -> str | None:
    """What makes ``topic`` unusable as a topic the device publishes to (or a prefix of one), or None."""
    if not topic:
        return "must not be empty"
    if topic.startswith("/") or topic.endswith("/"):
        return "must not start or end with '/'"
    if topic.startswith("$"):
        return "must not start with '$' (topics starting with '$', like $SYS, belong to the broker)"
    for wildcard in ("+", "#"):
        if wildcard in topic:
            return f"must not contain the MQTT wildcard {wildcard!r}"
    bad = next((c for c in topic if unicodedata.category(c) in ("Cc", "Cs") or _is_noncharacter(c)), None)
    if bad is not None:
        return f"must not contain control or non-characters (found {bad!r})"
    for i, level in enumerate(topic.split("/"), start=1):
        if level == "":
            return f"must not have empty levels ('//' at level {i})"
        if level in (".", ".."):
            return f"must not have {level!r} levels (level {i})"
    size = len(topic.encode("utf-8"))
    if size > MAX_TOPIC_BYTES:
        return f"is {size:,} bytes of UTF-8, more than MQTT's limit of {MAX_TOPIC_BYTES:,}"
    return None


def prefix_template_problem(template: str) -> str | None:
    """:func:`topic_problem` for a ``topic_prefix`` before substitution, which must hold ``{device_id}``."""
    problem = topic_problem(template)
    if problem is None and DEVICE_ID_FIELD not in template:
        problem = f"must contain {DEVICE_ID_FIELD} (else every device publishes to the same topics)"
    return problem


def topic_prefix_problem(template: str, device_id: str) -> str | None:
    """:func:`prefix_template_problem`, then the longest topic under the prefix once ``{device_id}``
    is substituted (its length)."""
    problem = prefix_template_problem(template)
    if problem is None:
        prefix = template.replace(DEVICE_ID_FIELD, device_id)
        too_long = topic_problem(f"{prefix}/{max(SUFFIXES, key=len)}")
        problem = too_long and f"makes a topic that {too_long}"
    return problem


def device_id_problem(device_id: str) -> str | None:
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        return f"must be {DEVICE_ID_RULE}"
    return None


@dataclass(frozen=True)
class Topics:
    """The topics of one device, from the configured prefix template."""

    prefix: str
    availability: str
    events: str
    state: str
    snapshot: str

    @classmethod
    def build(cls, template: str, device_id: str) -> Topics:
        """Substitute ``{device_id}``; ValueError (saying which part is wrong) for a bad id or prefix."""
        problem = device_id_problem(device_id)
        if problem:
            raise ValueError(f"device_id {problem}, got {shorten(device_id)}")
        problem = topic_prefix_problem(template, device_id)
        if problem:
            raise ValueError(f"topic_prefix {problem}, got {shorten(template)}")
        prefix = template.replace(DEVICE_ID_FIELD, device_id)
        return cls(prefix, *(f"{prefix}/{suffix}" for suffix in SUFFIXES))


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error quoting a 70,000-character prefix helps nobody."""
    text = repr(value)
    size = len(value) if isinstance(value, str) else len(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({size:,} characters)"
