"""``maskwatch data report``: what is in a dataset folder, for a person to check before training.

Reads ``manifest.csv`` (and ``import_report.json`` when present) and writes to ``--out``:
``report.json`` (machine-readable), ``report.md`` (also printed), ``sizes.png`` (histogram of
image sizes per label) and ``contact_<label>.png`` (a seeded random sample of thumbnails per
label, each with a bar in its split's colour). Looking at the contact sheets is the fastest
way to catch a mislabelled folder or a class full of non-faces.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from device.manifest import Row, read_manifest
from train.data.importer import read_report
from train.data.split import counts, format_counts, leaking_groups

THUMB = 64
COLUMNS = 12
SPLIT_COLOURS = {"train": (150, 150, 150), "val": (40, 110, 220), "test": (240, 140, 20), "": (255, 255, 255)}


def contact_sheet(root: Path, rows: list[Row], path: Path, title: str, limit: int = 144, seed: int = 0) -> int:
    """Grid of up to ``limit`` thumbnails (a seeded sample); returns how many it shows."""
    from PIL import Image, ImageDraw, ImageOps

    from device.images import pil_decode

    sample = sorted(rows, key=lambda r: r.path)
    if len(sample) > limit:
        sample = sorted(random.Random(seed).sample(sample, limit), key=lambda r: r.path)
    cols = min(COLUMNS, max(1, len(sample)))
    n_rows = max(1, -(-len(sample) // cols))
    pad, head = 2, 18
    sheet = Image.new("RGB", (cols * (THUMB + pad) + pad, head + n_rows * (THUMB + 4 + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 3), title, fill=(0, 0, 0))
    for k, r in enumerate(sample):
        x = pad + (k % cols) * (THUMB + pad)
        y = head + (k // cols) * (THUMB + 4 + pad)
        try:
            im, _ = pil_decode((root / r.path).read_bytes())
            tile = ImageOps.pad(im, (THUMB, THUMB), color=(235, 235, 235))
        except (OSError, ValueError):
            tile = Image.new("RGB", (THUMB, THUMB), (220, 0, 0))  # missing or unreadable: a red tile
        sheet.paste(tile, (x, y))
        draw.rectangle((x, y + THUMB, x + THUMB - 1, y + THUMB + 3), fill=SPLIT_COLOURS.get(r.split, (0, 0, 0)))
    sheet.save(path)
    return len(sample)


def size_histogram(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sides = defaultdict(list)
    for r in rows:
        sides[r.label].append(min(r.width, r.height))
    lo = max(1, min(min(v) for v in sides.values()))
    hi = max(max(v) for v in sides.values())
    bins = np.geomspace(lo, max(hi, lo + 1), 30)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.hist([sides[k] for k in sorted(sides)], bins=bins, stacked=True, label=sorted(sides))
    ax.set_xscale("log")
    ticks = [t for t in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if lo / 2 <= t <= hi * 2]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlim(bins[0], bins[-1])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("shorter side of the image (px, log scale)")
    ax.set_ylabel("images")
    ax.set_title(f"image sizes ({len(rows)} images)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_report(root: Path, out: Path | None = None, sample: int = 144, seed: int = 0) -> dict:
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    rows = read_manifest(root)
    if not rows:
        raise ValueError(f"{root}: the manifest has no rows")
    imp = read_report(root) or {}
    out.mkdir(parents=True, exist_ok=True)

    by_label: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_label[r.label].append(r)
    group_sizes = Counter(r.group for r in rows)
    multi = {g: n for g, n in group_sizes.items() if n > 1}
    size_histogram(rows, out / "sizes.png")
    sheets = {}
    for label, lrows in sorted(by_label.items()):
        name = f"contact_{label}.png"
        shown = contact_sheet(root, lrows, out / name,
                              f"{label}: {min(sample, len(lrows))} of {len(lrows)} (bar: train grey, val blue, "
                              f"test orange)", limit=sample, seed=seed)
        sheets[label] = {"file": name, "shown": shown}

    def stats(values: list[int]) -> dict:
        a = np.asarray(values)
        return {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}

    report = {
        "dataset": str(root),
        "images": len(rows),
        "counts": counts(rows),
        "split": bool(all(r.split for r in rows)),
        "leaking_groups": leaking_groups(rows) if all(r.split for r in rows) else [],
        "missing_files": [r.path for r in rows if not (root / r.path).is_file()],
        "sizes": {label: {"width": stats([r.width for r in lr]), "height": stats([r.height for r in lr])}
                  for label, lr in sorted(by_label.items())},
        "duplicates": {
            "groups_with_several_images": len(multi),
            "images_in_such_groups": sum(multi.values()),
            "largest_group": max(group_sizes.values()),
            "exact_groups_at_import": imp.get("exact_duplicate_groups"),
            "near_groups_at_import": imp.get("near_duplicate_groups"),
            "exact_copies_dropped_at_import": imp.get("duplicates_dropped"),
        },
        "conflicts": imp.get("conflicts", []),
        "skipped": {
            "total": imp.get("skipped"),
            "by_reason": imp.get("skipped_by_reason", {}),
            "files": [s for s in imp.get("skipped_files", []) if s.get("reason") != "too_small"],
        },
        "import": {k: imp.get(k) for k in ("seen", "imported", "options", "created", "policy")} if imp else None,
        "files": {"sizes_histogram": "sizes.png", "contact_sheets": sheets, "markdown": "report.md"},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(report, rows), encoding="utf-8")
    return report


def markdown(report: dict, rows: list[Row]) -> str:
    d = report["duplicates"]
    lines = [
        f"# Dataset report: {report['dataset']}",
        "",
        f"{report['images']} images. Counts per label and split:",
        "",
        "```",
        format_counts(rows),
        "```",
        "",
        "## Sizes (px)",
        "",
        "| label | width min / median / max | height min / median / max |",
        "|---|---|---|",
    ]
    for label, s in report["sizes"].items():
        w, h = s["width"], s["height"]
        lines.append(f"| {label} | {w['min']} / {w['median']:g} / {w['max']} | {h['min']} / {h['median']:g} / {h['max']} |")
    lines += [
        "",
        "## Duplicates",
        "",
        f"- {d['groups_with_several_images']} groups hold more than one image ({d['images_in_such_groups']} images; "
        f"largest {d['largest_group']}); a split keeps each group whole.",
    ]
    if d["exact_groups_at_import"] is not None:
        lines.append(f"- at import: {d['exact_groups_at_import']} exact-duplicate groups "
                     f"({d['exact_copies_dropped_at_import']} extra copies dropped), "
                     f"{d['near_groups_at_import']} near-duplicate groups.")
    if report["split"]:
        leaks = report["leaking_groups"]
        lines.append(f"- groups spanning two splits: {len(leaks)}" + (" (LEAK: re-run `maskwatch data split`)"
                                                                      if leaks else ""))
    else:
        lines.append("- not split yet: run `maskwatch data split`.")
    lines += ["", f"## Conflicts (same photo under two labels): {len(report['conflicts'])}", ""]
    for c in report["conflicts"][:20]:
        lines.append(f"- {c['group']}: " + ", ".join(f"{r['label']} `{r['path']}`" for r in c["rows"]))
    sk = report["skipped"]
    if sk["total"] is not None:
        reasons = ", ".join(f"{k} {v}" for k, v in sk["by_reason"].items()) or "none"
        lines += ["", f"## Skipped at import: {sk['total']} ({reasons})", ""]
        for s in sk["files"][:30]:
            lines.append(f"- `{s['path']}`: {s['reason']} ({s['detail']})")
        if len(sk["files"]) > 30:
            lines.append(f"- ... {len(sk['files']) - 30} more in import_report.json")
    if report["missing_files"]:
        lines += ["", f"**{len(report['missing_files'])} manifest rows point to missing files**, "
                  f"e.g. `{report['missing_files'][0]}`."]
    sheets = ", ".join(f"`{v['file']}`" for v in report["files"]["contact_sheets"].values())
    lines += ["", f"Files: `sizes.png`, {sheets}, `report.json`.", ""]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, metavar="DIR", help="dataset folder made by `maskwatch data import`")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default DIR/report)")
    parser.add_argument("--sample", type=int, default=144, help="thumbnails per contact sheet (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the contact-sheet sample")


def main(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.dataset / "report"
    build_report(args.dataset, out, sample=args.sample, seed=args.seed)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report written to {out}")
    return 0
