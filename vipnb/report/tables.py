"""Result tables: the paper's number beside ours (mean ± std over seeds, and how many test
images were scored), and the hard-classes list. Differences between results are claims with
paired intervals (vipnb.study.claims, vipnb.report.ablations). Every file is written
atomically, so a crash never leaves half a table behind."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vipnb.atomic import write_text_atomic
from vipnb.errors import VipnbError
from vipnb.eval.metrics import mean_std
from vipnb.report.csv_file import write_csv
from vipnb.report.header import ReportHeader

RESULT_COLUMNS = [
    "experiment", "paper_top1", "ours_mean", "ours_std", "seeds", "test_images", "profile",
    "note", "paper_source",
]
HARD_CLASS_COLUMNS = ["rank", "class_index", "class_name", "accuracy", "below_threshold"]


@dataclass
class ResultRow:
    """One row of a paper's table: top-1 in percent, `ours` holds one value per seed, each
    scored on `test_images` test images (None: a row with no result)."""

    name: str
    paper: float | None
    ours: list[float] = field(default_factory=list)
    profile: str = ""
    note: str = ""
    paper_source: str = ""
    test_images: int | None = None

    def __post_init__(self) -> None:
        if self.ours and self.test_images is None:
            raise VipnbError(f"result row {self.name!r} has scores but no `test_images`: say "
                             "how many test images each seed was scored on")


def results_table(rows: Sequence[ResultRow]) -> list[dict]:
    """One dict per row; `ours_mean`/`ours_std` are None for a row with no finished seeds."""
    table = []
    for row in rows:
        mean, std, _ = mean_std(row.ours) if row.ours else (None, None, 0)
        table.append({
            "experiment": row.name,
            "paper_top1": row.paper,
            "ours_mean": mean,
            "ours_std": std,
            "seeds": len(row.ours),
            "test_images": row.test_images,
            "profile": row.profile,
            "note": row.note,
            "paper_source": row.paper_source,
        })
    return table


def write_table(
    rows: Sequence[ResultRow],
    out_dir: str | os.PathLike,
    stem: str,
    header: ReportHeader,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Write `<stem>.csv` (plain data) and `<stem>.md` (with the header); return both paths."""
    out_dir = Path(out_dir)
    table = results_table(rows)

    cells = []
    for entry in table:
        cells.append({key: _csv_number(value) for key, value in entry.items()})
        if entry["paper_top1"] is not None:
            cells[-1]["paper_top1"] = _paper_number(entry["paper_top1"])
    csv_path = write_csv(out_dir / f"{stem}.csv", RESULT_COLUMNS, cells)

    lines = [f"# {title}", ""] if title else []
    lines += [header.as_markdown(),
              "| experiment | paper top-1 (%) | ours top-1 (%) | test images | profile | note |",
              "| --- | ---: | ---: | ---: | --- | --- |"]
    for entry in table:
        images = "—" if entry["test_images"] is None else f"{entry['test_images']:,}"
        cells = [entry["experiment"], _paper_cell(entry), _ours_cell(entry), images,
                 entry["profile"], entry["note"]]
        lines.append("| " + " | ".join(_md_escape(str(cell)) for cell in cells) + " |")
    md_path = write_text_atomic(out_dir / f"{stem}.md", "\n".join(lines) + "\n")
    return csv_path, md_path


def write_hard_classes(
    hard: Sequence[dict], out_path: str | os.PathLike, header: ReportHeader
) -> Path:
    """CSV of the hardest classes: rank, class_index, class_name, accuracy, below_threshold."""
    for position, item in enumerate(hard):
        missing = [key for key in HARD_CLASS_COLUMNS if key not in item]
        if missing:
            raise VipnbError(
                f"hard-class entry {position} lacks {', '.join(missing)}; each entry needs "
                f"the keys {', '.join(HARD_CLASS_COLUMNS)}."
            )
    return write_csv(out_path, HARD_CLASS_COLUMNS,
                     [{key: _csv_number(item[key], digits=4) for key in HARD_CLASS_COLUMNS}
                      for item in hard])


def _csv_number(value: object, digits: int = 2) -> object:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{value:.{digits}f}"
    return "" if value is None else value


def _paper_number(value: float) -> str:
    """Two decimals, or three when the paper quotes three (75.178 must not become 75.18)."""
    text = f"{value:.3f}"
    return text[:-1] if text.endswith("0") else text


def _paper_cell(entry: dict) -> str:
    if entry["paper_top1"] is None:
        return "—"
    source = f" ({entry['paper_source']})" if entry["paper_source"] else ""
    return f"{_paper_number(entry['paper_top1'])}{source}"


def _ours_cell(entry: dict) -> str:
    if entry["ours_mean"] is None:
        return "not run"
    if entry["seeds"] == 1:
        return f"{entry['ours_mean']:.2f} (n=1, no spread)"
    return f"{entry['ours_mean']:.2f} ± {entry['ours_std']:.2f} (n={entry['seeds']})"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
