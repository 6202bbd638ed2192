"""``maskwatch data split``: stratified, seeded, leak-free train / val / test assignment.

The unit of assignment is the duplicate *group* written by the import (exact and near copies of
one photo), never the single image: a photo in train whose copy sits in test would inflate every
test metric. Within each label, groups are shuffled with the seed, then placed largest first,
each into the split furthest below its target size, so per-label proportions come out as close
to the requested fractions as whole groups allow. A group whose rows carry several labels (a
conflict) is placed with its most common label. Group ids are sorted before the shuffle, so the
result depends on the seed and the data only, not on the manifest's row order.

Faces cropped from one scene photo (PASCAL VOC: ``scene.jpg#box<N>``) are different people but
share the scene's light, camera and background; they are kept in one split too, so a test face
never has a sibling from the same photo in train. Scene faces form their own strata and their
units are placed in shuffled order (not largest first), so crowded scenes with small faces land
in every split in proportion instead of all in train.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict
from pathlib import Path

from device.manifest import SPLITS, Row, read_manifest, write_manifest
from train.data.dedup import UnionFind


def scene_of(source: str) -> str | None:
    """The scene photo a face crop came from (``a.jpg#box3`` -> ``a.jpg``), None for whole images."""
    head, sep, _ = source.rpartition("#box")
    return head if sep else None


def _units(rows: list[Row]) -> dict[str, str]:
    """Group id -> unit id, where a unit joins the groups that share a scene photo."""
    gids = sorted({r.group for r in rows})
    index = {g: i for i, g in enumerate(gids)}
    uf = UnionFind(len(gids))
    first: dict[str, int] = {}
    for r in rows:
        scene = scene_of(r.source)
        if scene is None:
            continue
        if scene in first:
            uf.union(first[scene], index[r.group])
        else:
            first[scene] = index[r.group]
    return {g: gids[uf.find(index[g])] for g in gids}


def assign_splits(rows: list[Row], val: float = 0.15, test: float = 0.15, seed: int = 0) -> dict[str, str]:
    """Split name for every group id of ``rows`` (groups of one scene photo get the same split)."""
    _check_fractions(val, test)
    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    active = [s for s in SPLITS if fractions[s] > 0]
    unit_of = _units(rows)
    members: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        members[unit_of[r.group]].append(r)
    # Strata: label x kind (whole photos vs faces cut from scene photos), so each split gets its
    # share of scene faces too, not only of each label.
    strata: dict[tuple[str, bool], list[str]] = defaultdict(list)
    for gid in sorted(members):
        counts = Counter(r.label for r in members[gid])
        label = min(counts, key=lambda lab: (-counts[lab], lab))
        strata[(label, any(scene_of(r.source) for r in members[gid]))].append(gid)

    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for key in sorted(strata):
        gids = strata[key]
        rng.shuffle(gids)
        if not key[1]:  # whole photos
            # Duplicate groups (copies of one photo) go largest first: fractions come out exact.
            # Scene units stay in shuffled order: their size is how crowded the photo is, and
            # largest-first sent every crowded scene, with its many small faces, to train.
            gids.sort(key=lambda g: -len(members[g]))  # stable: equal sizes keep the shuffled order
        total = sum(len(members[g]) for g in gids)
        have = dict.fromkeys(SPLITS, 0)
        for gid in gids:
            split = max(active, key=lambda s: fractions[s] * total - have[s])  # ties: SPLITS order
            assignment[gid] = split
            have[split] += len(members[gid])
    return {g: assignment[u] for g, u in unit_of.items()}


def _check_fractions(val: float, test: float) -> None:
    if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0):
        raise ValueError(f"--val and --test must be fractions in 0..1, got {val} and {test}")
    if val + test >= 1.0:
        raise ValueError(f"--val + --test must leave something to train on, got {val} + {test} = {val + test}")


def split_dataset(root: Path, val: float = 0.15, test: float = 0.15, seed: int = 0) -> list[Row]:
    """Assign splits to the manifest of ``root`` and rewrite it (atomically); returns the rows."""
    rows = read_manifest(root)
    if not rows:
        raise ValueError(f"{root}: the manifest has no rows to split")
    assignment = assign_splits(rows, val, test, seed)
    for r in rows:
        r.split = assignment[r.group]
    write_manifest(root, rows)
    return rows


def leaking_groups(rows: list[Row]) -> list[str]:
    """Group ids that occur in more than one split (empty for a leak-free split)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        seen[r.group].add(r.split)
    return sorted(g for g, s in seen.items() if len(s) > 1)


def counts(rows: list[Row]) -> dict[str, dict[str, int]]:
    """{label: {split: images}}; rows without a split are counted under ``unsplit``."""
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for r in rows:
        cell = table[r.label]
        key = r.split or "unsplit"
        cell[key] = cell.get(key, 0) + 1
    return {label: table[label] for label in sorted(table)}


def format_counts(rows: list[Row]) -> str:
    table = counts(rows)
    cols = list(SPLITS) + (["unsplit"] if any("unsplit" in c for c in table.values()) else [])
    width = max([len("label"), *map(len, table)])
    lines = [f"{'label':<{width}} " + " ".join(f"{c:>7}" for c in cols) + f" {'total':>7}"]
    for label, cell in table.items():
        lines.append(f"{label:<{width}} " + " ".join(f"{cell.get(c, 0):>7}" for c in cols)
                     + f" {sum(cell.values()):>7}")
    totals = [sum(cell.get(c, 0) for cell in table.values()) for c in cols]
    lines.append(f"{'total':<{width}} " + " ".join(f"{t:>7}" for t in totals) + f" {sum(totals):>7}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, metavar="DIR", help="dataset folder made by `maskwatch data import`")
    parser.add_argument("--val", type=float, default=0.15, help="fraction for validation (default %(default)s)")
    parser.add_argument("--test", type=float, default=0.15, help="fraction for test (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    rows = split_dataset(args.dataset, args.val, args.test, args.seed)
    groups = len({r.group for r in rows})
    leaks = leaking_groups(rows)
    if leaks:  # cannot happen by construction; checked because a leak would be silent otherwise
        raise RuntimeError(f"{len(leaks)} duplicate groups span two splits, e.g. {leaks[:3]}")
    print(f"split {args.dataset} (seed {args.seed}, val {args.val}, test {args.test}): {len(rows)} images in "
          f"{groups} duplicate groups; every group is in exactly one split")
    print(format_counts(rows))
    return 0
