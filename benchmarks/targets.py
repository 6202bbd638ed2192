"""Targets of the benchmarks: a measured figure against its limit, and ``--target NAME=VALUE``.

Every ``make bench-*`` prints one line per target and exits 1 when one is missed, so a target
can be checked by passing an impossible value (``--target accuracy=1.01``).
"""

from __future__ import annotations

import logging
import math
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


#: The two-sided 95 % quantile of the normal distribution (``scipy.stats.norm.ppf(0.975)``).
Z_95 = 1.959963984540054


def wilson_interval(hits: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of the proportion ``hits / n`` (95 % by default); None for n = 0.

    Why: a scene target is a share of a few dozen faces (84 no-mask test faces, 82 flagged), so
    one face moves it by more than a point. The interval says how far a change must move a figure
    before it is more than which photos happened to be in the split. Wilson's interval (what
    ``scipy.stats.binomtest(...).proportion_ci(method="wilson")`` computes; scipy is not in the Pi
    env these benchmarks' tests also run in) stays inside [0, 1] and is sound near 0 and 1, where
    these figures sit.
    """
    if n <= 0:
        return None
    if not 0 <= hits <= n:
        raise ValueError(f"{hits} hits of {n}: a share needs 0 <= hits <= n")
    p = hits / n
    scale = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


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
