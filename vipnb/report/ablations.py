"""A paper's steps as tables: each claim (vipnb.study.claims) with the paper's difference beside
our paired difference over seeds, its 95 % interval, the smallest effect the seeds could have
detected, and the verdict; one table per section of a notebook (`write_ablations`), and all of
a notebook's claims with a forest plot and the sentences of its conclusion (`write_claims`)."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from vipnb.atomic import write_text_atomic
from vipnb.report.csv_file import write_csv
from vipnb.report.header import ReportHeader
from vipnb.report.plots import save_figure

CLAIM_COLUMNS = ["claim", "paper_difference", "paper_direction", "ours_difference", "ci_low",
                 "ci_high", "mde", "seeds", "p", "p_holm", "verdict", "ours_before",
                 "ours_after", "test_images"]
VERDICT_ORDER = ("reproduced", "opposite", "not detected")


def write_ablations(rows: Sequence[dict], out_dir: str | os.PathLike, stem: str,
                    header: ReportHeader, title: str | None = None) -> tuple[Path, Path]:
    """`<stem>.csv` and `<stem>.md` of one section's assessed claims; differences in points.
    The verdicts here are Holm-adjusted over the section only: `claims.md` has them over the
    whole notebook."""
    return _write_table(rows, Path(out_dir), stem, header, title)


def write_claims(rows: Sequence[dict], out_dir: str | os.PathLike, header: ReportHeader,
                 title: str) -> tuple[Path, Path, Path]:
    """`claims.csv`, `claims.md` and `claims_forest.png` of all of a notebook's assessed
    claims (Holm over all of them)."""
    out_dir = Path(out_dir)
    csv_path, md_path = _write_table(rows, out_dir, "claims", header, title,
                                     footer=claims_conclusion(rows))
    return csv_path, md_path, forest_plot(rows, out_dir / "claims_forest.png", header)


def claims_conclusion(rows: Sequence[dict]) -> str:
    """The conclusion's sentences, from the assessed claims alone (no number typed by hand)."""
    counts = Counter(row["verdict"] for row in rows)
    with_interval = [r for r in rows if not math.isnan(r["mde"])]
    lines = [f"Claims tested here: {len(rows)}. Reproduced (same sign, significant after "
             f"Holm's correction): {counts['reproduced']}; the opposite way: "
             f"{counts['opposite']}; not detected: {counts['not detected']}."]
    if with_interval:
        mde = sorted(r["mde"] for r in with_interval)
        lines.append(f"With these seeds and {len(with_interval)} claims judged together, the "
                     f"smallest true difference each claim could have shown four times in five "
                     f"ranges from {mde[0]:.2f} to {mde[-1]:.2f} pp (median "
                     f"{np.median(mde):.2f}); a claim that is not detected may still hold with "
                     "an effect below that, and only more seeds lower it.")
    for verdict in ("reproduced", "opposite"):
        named = [r["claim"] for r in rows if r["verdict"] == verdict]
        if named:
            lines.append(f"{verdict.capitalize()}: " + "; ".join(named) + ".")
    return "\n\n".join(lines)


def forest_plot(rows: Sequence[dict], out_path: Path, header: ReportHeader) -> Path:
    """Each claim's paired difference with its 95 % interval, beside the paper's difference."""
    figure = Figure(figsize=(9.0, 1.2 + 0.32 * len(rows)))
    axes = figure.add_subplot()
    colours = {"reproduced": "#2ca02c", "opposite": "#d62728", "not detected": "0.35"}
    for y, row in enumerate(reversed(rows)):
        colour = colours[row["verdict"]]
        if not math.isnan(row["ci_low"]):
            axes.plot([row["ci_low"], row["ci_high"]], [y, y], color=colour, lw=2)
        axes.plot(row["ours_difference"], y, "o", color=colour)
        if row["paper_difference"] is not None:
            axes.plot(row["paper_difference"], y, "x", color="black", ms=7)
    axes.axvline(0.0, color="0.6", lw=1)
    axes.set_yticks(range(len(rows)), [_short(r["claim"]) for r in reversed(rows)], fontsize=7)
    axes.set_xlabel("difference in test top-1 (pp): ours ● with 95 % interval, paper ×")
    counts = Counter(row["verdict"] for row in rows)
    axes.set_title(", ".join(f"{verdict} {counts[verdict]}" for verdict in VERDICT_ORDER),
                   fontsize=9)
    return save_figure(figure, out_path, header)


def _write_table(rows: Sequence[dict], out_dir: Path, stem: str, header: ReportHeader,
                 title: str | None, footer: str = "") -> tuple[Path, Path]:
    csv_path = write_csv(out_dir / f"{stem}.csv", CLAIM_COLUMNS,
                         [{k: _number(v) for k, v in row.items()} for row in rows])
    lines = [f"# {title}", ""] if title else []
    lines += [header.as_markdown(),
              "| claim | paper (pp) | ours (pp, paired, 95 % interval) | detectable (pp, Holm) | "
              "ours before → after (%) | test images | verdict |",
              "| --- | ---: | --- | ---: | --- | ---: | --- |"]
    for r in rows:
        paper = _paper_difference_cell(r)
        images = "—" if r["test_images"] is None else f"{r['test_images']:,}"
        interval = ("one seed: no interval" if math.isnan(r["ci_low"])
                    else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]")
        mde = "—" if math.isnan(r["mde"]) else f"{r['mde']:.2f}"
        lines.append(f"| {r['claim']} | {paper} | {r['ours_difference']:+.2f} {interval} "
                     f"(n={r['seeds']}) | {mde} | {r['ours_before']:.2f} → "
                     f"{r['ours_after']:.2f} | {images} | {r['verdict']} |")
    lines += ["", "Paired over seeds: seed s of both sides draws the same data order and "
              "augmentation, and the same initialisation where both sides build the same "
              "network (not across architectures). Verdicts on Holm-adjusted p-values at "
              "α = 0.05, over all the claims here; *detectable*: the smallest true difference "
              "seen with 80 % power at Holm's strictest level (α over the number of claims), "
              "so an interval that misses zero can still read *not detected*. "
              "A paper column of \"+\" or \"−\" is a direction the paper states in words or "
              "shows in a figure without numbers for both sides."]
    if footer:
        lines += ["", "## Conclusion", "", footer]
    md_path = write_text_atomic(out_dir / f"{stem}.md", "\n".join(lines) + "\n")
    return csv_path, md_path


def _paper_difference_cell(row: dict) -> str:
    if row["paper_difference"] is not None:
        return f"{row['paper_difference']:+.2f}"
    return {1: "+", -1: "−"}.get(row["paper_direction"], "—")


def _number(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return value


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
