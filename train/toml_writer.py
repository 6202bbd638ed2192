"""Writing a device config file from a dict, for runs the tests and ``make bench-device`` set up.

Python's :mod:`tomllib` reads TOML but cannot write it, and the device config needs no more than
top-level keys and one level of ``[sections]`` holding booleans, numbers, strings, paths and
lists of those: this is that much, not a general TOML writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def toml_value(v: Any) -> str:
    """One value as TOML (strings and paths quoted with JSON's escapes, which TOML shares)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """A two-level TOML document: the top-level keys, then one ``[section]`` per mapping value."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for k, v in data.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{k}]"] + [f"{kk} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """``data`` written to ``path`` as TOML; returns ``path``."""
    path = Path(path)
    path.write_text(to_toml(data), encoding="utf-8")
    return path
