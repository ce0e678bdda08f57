"""Report CSVs are plain data: one header row of column names, then values, so
`pandas.read_csv(path)` reads them with no options. Their provenance lives in the Markdown
header beside them and in the report folder's `provenance.json`."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from vipnb.atomic import write_text_atomic


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[dict]) -> Path:
    """Write `rows` (dicts; keys outside `columns` are ignored) atomically; None → empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return write_text_atomic(Path(path), buffer.getvalue())
