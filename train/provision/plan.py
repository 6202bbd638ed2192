"""Every change provision makes to a card, decided before any is made.

A :class:`Plan` lists each file the card's ``maskwatch/`` folder (and the hooked ``user-data`` or
``firstrun.sh``) should hold, compared with what is there: ``--dry-run`` prints the list and
writes nothing; a real run writes only what differs, so running provision twice changes nothing
the second time. Wheels and models are compared by content, not by date.
"""

from __future__ import annotations

import filecmp
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Change:
    path: Path
    action: str  # "create" | "update" | "unchanged" | "remove"
    content: bytes | None = None  # for writes: the bytes, or
    source: Path | None = None  # a file to copy
    why: str = ""

    def describe(self, root: Path) -> str:
        try:
            rel = self.path.relative_to(root)
        except ValueError:
            rel = self.path
        size = len(self.content) if self.content is not None else (
            self.source.stat().st_size if self.source is not None else 0)
        extra = f" ({self.why})" if self.why else ""
        return f"{self.action:<9} {rel}" + (f"  [{size:,} bytes]" if self.action != "remove" else "") + extra


@dataclass
class Plan:
    root: Path  # the card's boot folder
    changes: list[Change] = field(default_factory=list)

    def write(self, path: Path, content: bytes | str, why: str = "") -> None:
        data = content.encode("utf-8") if isinstance(content, str) else content
        same = path.is_file() and path.read_bytes() == data
        self.changes.append(Change(path, "unchanged" if same else "update" if path.exists() else "create",
                                   content=data, why=why))

    def copy(self, source: Path, path: Path, why: str = "") -> None:
        same = path.is_file() and filecmp.cmp(source, path, shallow=False)
        self.changes.append(Change(path, "unchanged" if same else "update" if path.exists() else "create",
                                   source=source, why=why))

    def remove_others(self, folder: Path, keep: set[str], why: str) -> None:
        """Files in ``folder`` not named in ``keep`` (an earlier provision's wheels)."""
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.name not in keep:
                    self.changes.append(Change(p, "remove", why=why))

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def lines(self) -> list[str]:
        return [c.describe(self.root) for c in self.changes]

    def apply(self) -> None:
        """Make the pending changes: each file is written beside its place and renamed over it,
        so a card pulled out half-way holds old or new files, never half of one."""
        for c in self.pending:
            if c.action == "remove":
                c.path.unlink()
                continue
            c.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = c.path.with_name(c.path.name + ".provision-tmp")
            data = c.content if c.content is not None else c.source.read_bytes()
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, c.path)
