"""The scene benchmark's outputs: Markdown tables, ``report.json`` and two PNGs."""

from __future__ import annotations

import json
from pathlib import Path

from device.contract import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK
from train.scenes.matching import (
    FALSE_ALERT,
    MASKED_MIN_SIZE,
    MISSED_ALERT,
    SIZE_BINS,
    bin_name,
    wilson_interval,
)

DASH = "—"


def _r(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def _share(value: float | None, hits: int, n: int) -> str:
    """"0.92 (77/84; 0.84–0.96)": the share, its faces and their 95 % interval (Wilson)."""
    interval = wilson_interval(hits, n)
    within = f"; {interval[0]:.2f}–{interval[1]:.2f}" if interval else ""
    return f"{_r(value)} ({hits}/{n}{within})"


def _ms(stage: dict) -> str:
    return f"{stage['p50']:.1f} / {stage['p95']:.1f}"


def markdown(result: dict) -> str:
    """Two tables (faces found; alerts and time per frame) and the incorrect-mask row per detector."""
    sc, st = result["scenes"], result["settings"]
    bins = [bin_name(lo, hi) for lo, hi in SIZE_BINS]
    masked_key = f"{WITH_MASK}_{MASKED_MIN_SIZE}px"
    dets = result["detectors"]
    first = dets[0]
    head = (["detector", "faces found", WITH_MASK, WITHOUT_MASK, INCORRECT_MASK]
            + [f"{b} px" for b in bins] + [f"{WITH_MASK} ≥ {MASKED_MIN_SIZE} px"])
    lines = [f"{sc['used']} scene photos, {sc['faces_total']} faces ≥ {st['annotated_min_face']} px "
             f"({', '.join(f'{k} {v}' for k, v in sc['faces'].items())}); classifier {Path(st['model']).name} "
             f"(threshold {st['threshold']:.4g}); {st['threads']} threads; "
             f"{st['frame_size'][0]}x{st['frame_size'][1]} frames", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    counts = ([str(first["faces"])] + [str(first["by_class"][c]["faces"]) for c in (WITH_MASK, WITHOUT_MASK,
                                                                                     INCORRECT_MASK)]
              + [str(first["by_size"][b]["faces"]) for b in bins] + [str(first[masked_key]["faces"])])
    lines.append("| *faces* | " + " | ".join(counts) + " |")
    for d in dets:
        cells = ([_r(d["recall"])] + [_r(d["by_class"][c]["recall"]) for c in (WITH_MASK, WITHOUT_MASK, INCORRECT_MASK)]
                 + [_r(d["by_size"][b]["recall"]) for b in bins] + [_r(d[masked_key]["recall"])])
        lines.append(f"| {_label(d)} | " + " | ".join(cells) + " |")
    lines += ["", "| detector | no-mask found and flagged | flagged that are really no-mask | flagged unmatched "
              "| unmatched | ms detect p50 / p95 | ms classify p50 / p95 | ms per frame p50 / p95 |",
              "|" + "---|" * 8]
    for d in dets:
        a, p = d["alert_recall"], d["flagged_precision"]
        lines.append(
            f"| {_label(d)} | {_share(a['recall'], a['found_and_flagged'], a['faces'])} "
            f"| {_share(p['precision'], p[f'really_{WITHOUT_MASK}'], p['flagged'])} | {d['flagged_unmatched']} "
            f"| {d['unmatched']} | {_ms(d['ms']['detect'])} | {_ms(d['ms']['classify'])} | {_ms(d['ms']['total'])} |")
    lines += ["", f"| detector | {INCORRECT_MASK} faces | found | found and flagged (left out of the precision) |",
              "|---|---|---|---|"]
    for d in dets:
        o = d[INCORRECT_MASK]
        lines.append(f"| {_label(d)} | {o['faces']} | {o['found']} | {o['found_and_flagged']} |")
    lines += ["", "| detector | faces matched | annotated face vs detector box (fitted here): dx, dy, width, height "
              "| calibration the classifier's crops use |", "|---|---|---|---|"]
    for d in dets:
        c = d.get("box_calibration") or {}
        lines.append(f"| {_label(d)} | {c.get('faces', 0)} | {_calibration(c.get('fitted'))} | {_calibration(c.get('used'))} |")
    lines += ["", f"Face size: {st['face_size']}. Found: IoU ≥ {st['match_iou']} with an annotated face, one to one, "
              f"best IoU first. Flagged: P({' + '.join(st.get('alert_labels') or [st['alert_label']])}) ≥ the card's threshold. Detections smaller than "
              f"{st['detector_min_face']} px are dropped as the daemon drops them. In brackets: the faces, and the 95 % "
              "interval (Wilson) a share of that many faces carries."]
    shown = mistakes_detector(result)
    if "mistakes" in shown:
        listed = shown["mistakes"]
        lines.append(f"The alert's mistakes on found faces, {shown['name']}: "
                     f"{sum(m['kind'] == FALSE_ALERT for m in listed)} masked faces flagged, "
                     f"{sum(m['kind'] == MISSED_ALERT for m in listed)} no-mask faces not flagged "
                     "(each in report.json; the crops the classifier saw in mistakes.png).")
    if sc["skipped"]:
        lines.append(f"Skipped {len(sc['skipped'])} scene photos (listed in report.json).")
    if sc.get("filtered_out"):
        lines.append("Left out by the split filter: " + ", ".join(f"{k} {v}" for k, v in sc["filtered_out"].items()))
    return "\n".join(lines)


def _calibration(c: dict | None) -> str:
    """dx, dy, width, height in units of the detector box's longer side."""
    return DASH if not c else f"{c['dx']:+.3f}, {c['dy']:+.3f}, {c['width']:.3f}, {c['height']:.3f}"


def _label(d: dict) -> str:
    return f"**{d['name']}** (default)" if d.get("default") else d["name"]


def mistakes_detector(result: dict) -> dict:
    """The detector whose mistakes mistakes.png shows: the daemon's default, else the first."""
    dets = result["detectors"]
    return next((d for d in dets if d.get("default")), dets[0])


def mistake_caption(m: dict) -> str:
    verdict = "flagged" if m["kind"] == FALSE_ALERT else "not flagged"
    return f"{verdict}: {m['label']} {m['size']:.0f} px\nP(alert) {m['alert_score']:.2f} {Path(m['photo']).name}"


def write_plots(result: dict, out: Path, crops: dict | None = None) -> tuple[list[str], str | None]:
    """The PNGs; (paths, None), or ([], why not) when matplotlib is missing (as on a Pi).

    ``crops``: by detector name, the crops of its first mistakes (:mod:`train.scenes.runner`);
    those of :func:`mistakes_detector` become mistakes.png."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], "matplotlib is not installed: skipped the PNGs (pip install matplotlib to get them)"
    from train import plots

    dets = result["detectors"]
    names = [d["name"] for d in dets]
    bins = [bin_name(lo, hi) for lo, hi in SIZE_BINS]
    by_size = plots.scene_recall_by_size(
        names, bins, [[d["by_size"][b]["recall"] for b in bins] for d in dets],
        [dets[0]["by_size"][b]["faces"] for b in bins], out / "recall_by_size.png")
    vs_ms = plots.scene_recall_vs_ms(
        names, [d["ms"]["total"]["p50"] for d in dets], [d["recall"] for d in dets],
        [d["alert_recall"]["recall"] for d in dets], out / "recall_vs_ms.png")
    pngs = [str(by_size), str(vs_ms)]
    shown = mistakes_detector(result)
    images = (crops or {}).get(shown["name"])
    if images is not None:
        listed = shown["mistakes"]
        title = (f"{shown['name']}: {sum(m['kind'] == FALSE_ALERT for m in listed)} masked faces flagged, "
                 f"{sum(m['kind'] == MISSED_ALERT for m in listed)} no-mask faces found but not flagged"
                 + (f" (first {len(images)} shown)" if len(images) < len(listed) else ""))
        pngs.append(str(plots.contact_sheet(images, [mistake_caption(m) for m in listed[:len(images)]],
                                            out / "mistakes.png", title=title)))
    return pngs, None


def write_outputs(result: dict, out: Path) -> dict:
    """report.json, report.md and the PNGs in ``out``; the result gains their paths."""
    from train.scenes.runner import MISTAKE_CROPS_KEY

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs, note = write_plots(result, out, result.pop(MISTAKE_CROPS_KEY, None))
    result["png"] = pngs
    result["png_note"] = note
    (out / "report.md").write_text(markdown(result) + "\n", encoding="utf-8")
    from device.safe_write import write_file

    write_file(out / "report.json", (json.dumps(result, indent=2) + "\n").encode("utf-8"), mode=0o644)
    return result
