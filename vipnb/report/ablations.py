"""Ablation tables: for each step a paper takes (+SD, +Distill, N=1→3, ...), the paper's
difference beside ours, with its spread over seeds and whether it goes the paper's way."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vipnb.atomic import write_text_atomic
from vipnb.eval.metrics import mean_std
from vipnb.report.csv_file import write_csv
from vipnb.report.header import ReportHeader
from vipnb.report.tables import compare

ABLATION_COLUMNS = ["step", "paper_difference", "ours_difference", "ours_before", "ours_after",
                    "seeds", "p", "verdict", "paper_way"]


@dataclass
class AblationRow:
    """One step from `before` to `after`: top-1 in percent, one value per seed on our side."""

    step: str
    paper_before: float | None
    paper_after: float | None
    before: list[float]
    after: list[float]


def ablation_entry(row: AblationRow) -> dict:
    result = compare(row.after, row.before)
    paper = (None if row.paper_before is None or row.paper_after is None
             else row.paper_after - row.paper_before)
    if paper is None:
        way = "the paper gives no number"
    elif result["p"] is None:
        way = "one seed: no verdict"
    elif result["p"] >= 0.05:
        way = "inside the noise"
    else:
        way = "yes" if (result["difference"] > 0) == (paper > 0) else "no, the opposite way"
    return {"step": row.step, "paper_difference": paper, "ours_difference": result["difference"],
            "ours_before": mean_std(row.before)[0], "ours_after": mean_std(row.after)[0],
            "seeds": min(len(row.before), len(row.after)), "p": result["p"],
            "verdict": result["verdict"], "paper_way": way}


def write_ablations(rows: Sequence[AblationRow], out_dir: str | os.PathLike, stem: str,
                    header: ReportHeader, title: str | None = None) -> tuple[Path, Path]:
    """`<stem>.csv` (plain data) and `<stem>.md` (with the header); differences in points."""
    entries = [ablation_entry(row) for row in rows]
    csv_path = write_csv(Path(out_dir) / f"{stem}.csv", ABLATION_COLUMNS,
                         [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in e.items()}
                          for e in entries])
    lines = [f"# {title}", ""] if title else []
    lines += [header.as_markdown(),
              "| step | paper (pp) | ours (pp, Welch test) | ours before → after (%) | "
              "goes the paper's way? |", "| --- | ---: | --- | --- | --- |"]
    for e in entries:
        paper = "—" if e["paper_difference"] is None else f"{e['paper_difference']:+.2f}"
        lines.append(f"| {e['step']} | {paper} | {e['verdict']} (n={e['seeds']}) | "
                     f"{e['ours_before']:.2f} → {e['ours_after']:.2f} | {e['paper_way']} |")
    md_path = write_text_atomic(Path(out_dir) / f"{stem}.md", "\n".join(lines) + "\n")
    return csv_path, md_path
