"""The zones in the config file: what the page shows, and saving what the page drew.

The config file stays the one source of truth: the page's zones are written into it
(``detector.ignore_regions``, ``detector.entrance_region``) and nowhere else. The new text is
made with ``tomlkit``, which edits a TOML document in place, so the comments and the layout the
user wrote survive; it is then validated by the daemon's own loader
(:func:`device.config.config_from_dict` on what ``tomllib`` reads back, the very rules of a
start), so a bad value is refused with the field named and the file is left untouched. A good
one replaces the file atomically with its mode kept (:func:`device.safe_write.write_file`:
temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

from device.config import ConfigError, DaemonConfig, config_from_dict, tomllib

_lock = threading.Lock()  # one save at a time


def zones_of(cfg: DaemonConfig) -> dict[str, Any]:
    """The zones as the page's JSON: lists of [x0, y0, x1, y1] in the source frame's pixels."""
    det = cfg.detector
    return {"ignore_regions": [list(r) for r in det.ignore_regions],
            "entrance_region": list(det.entrance_region) if det.entrance_region else None}


def edited_text(text: str, ignore_regions: Any, entrance_region: Any) -> str:
    """``text`` (a TOML document) with the two zone fields of ``[detector]`` replaced, comments kept."""
    import tomlkit

    doc = tomlkit.parse(text)
    if "detector" not in doc:
        doc.add("detector", tomlkit.table())
    det = doc["detector"]
    try:
        det["ignore_regions"] = ignore_regions
        det["entrance_region"] = [] if entrance_region is None else entrance_region
    except (TypeError, ValueError) as exc:  # tomlkit cannot hold it (None in a list, an object)
        raise ConfigError("detector.ignore_regions", f"must be lists of [x0, y0, x1, y1] integers ({exc})") from None
    return tomlkit.dumps(doc)


def save_zones(path: Path, ignore_regions: Any, entrance_region: Any) -> DaemonConfig:
    """Write the zones into the config file at ``path``; the validated config, or ConfigError."""
    from device.safe_write import write_file

    path = Path(path)
    with _lock:
        text = path.read_text(encoding="utf-8")
        new = edited_text(text, ignore_regions, entrance_region)
        cfg = config_from_dict(tomllib.loads(new), base_dir=path.resolve().parent)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        write_file(path, new.encode("utf-8"), mode=mode)
    return cfg
