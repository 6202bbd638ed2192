"""Targets of the benchmarks: a measured figure against its limit, and ``--target NAME=VALUE``.

Every ``make bench-*`` prints one line per target and exits 1 when one is missed, so a target
can be checked by passing an impossible value (``--target accuracy=1.01``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Exit status of a benchmark that missed a target (2 is "cannot run").
EXIT_MISSED = 1


@dataclass
class Target:
    name: str
    value: float | None
    op: str  # "<=" or ">="
    limit: float
    passed: bool

    def line(self) -> str:
        shown = "not measured" if self.value is None else f"{self.value + 0.0:.4g}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {shown} (target {self.op} {self.limit:g})"


def faces_note(hits: int, n: int) -> str:
    """"; 16 of 20, 95 % interval 0.584-0.919" after a target that is a share of counted faces
    (empty when there are none), so a reader sees whether a pass or a miss is more than a face."""
    from train.scenes.matching import wilson_interval

    interval = wilson_interval(hits, n)
    return f"; {hits} of {n}, 95 % interval {interval[0]:.3f}-{interval[1]:.3f}" if interval else ""


def faces_fields(hits: int, n: int) -> dict:
    """The JSON fields a target that is a share of counted faces carries beside its value: the
    faces (hits, of) and their 95 % interval (None when no face was counted)."""
    from train.scenes.matching import wilson_interval

    return {"faces": [hits, n], "interval_95": wilson_interval(hits, n)}


def check(name: str, value: float | None, limit: float, at_most: bool) -> Target:
    """``value`` against ``limit`` (inclusive); a figure that was not measured misses."""
    ok = value is not None and (value <= limit if at_most else value >= limit)
    return Target(name, value, "<=" if at_most else ">=", limit, ok)


def parse_overrides(pairs: Sequence[str], defaults: Mapping[str, float]) -> dict[str, float]:
    """``defaults`` with ``NAME=VALUE`` pairs applied; ValueError naming the pair otherwise."""
    out = dict(defaults)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name.strip() not in defaults:
            raise ValueError(f"--target {pair!r}: expected NAME=VALUE with NAME one of {', '.join(defaults)}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--target {pair!r}: {value!r} is not a number") from None
    return out


def exit_status(targets: Sequence[Target]) -> int:
    return 0 if all(t.passed for t in targets) else EXIT_MISSED


def run_benchmark(name: str, parse_args: Callable[[Any], Any], run: Callable[[Any], int], argv: Any) -> int:
    """A benchmark's ``main``: log to stdout, run, and exit 2 with one line when it cannot run
    (missing data or model, bad option): a benchmark that did not run must not look passed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    try:
        return run(parse_args(argv))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"make {name}: error: {exc}", file=sys.stderr)
        return 2
