"""VIPriors image-classification submission files: write, read and score them like the server.

The format is the one the official toolkit (VIPriors/vipriors-challenges-toolkit,
`image-classification/main.py`) writes: a header row `Image IDs,Predictions`, then one row
`img_<i>.JPEG,<class index>` per test image. Ground-truth files have the same shape with the
header `Image IDs,Labels`. `score_submission` follows `evaluate_classification.py`, the script
the evaluation server runs, without needing pandas.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vipnb.errors import VipnbError

SUBMISSION_HEADER = ("Image IDs", "Predictions")
GROUND_TRUTH_HEADER = ("Image IDs", "Labels")


@dataclass(frozen=True)
class SubmissionScore:
    """Top-1 over the ground-truth ids the submission answers, and how many it answered."""

    top1: float
    matched: int
    missing: int

    @property
    def coverage(self) -> float:
        """Fraction of ground-truth ids present in the submission; below 1.0 inflates top1."""
        return self.matched / (self.matched + self.missing)


def write_submission(path: str | os.PathLike, image_ids: Sequence[str], predictions: Any) -> Path:
    """Write a submission CSV atomically (a temp file beside it, then `os.replace`)."""
    path = Path(path)
    predicted = np.asarray(
        predictions.detach().cpu() if hasattr(predictions, "detach") else predictions
    )
    if predicted.ndim != 1 or not np.issubdtype(predicted.dtype, np.integer):
        raise VipnbError(
            f"predictions for {path} must be a 1-D array of class indices, got shape "
            f"{predicted.shape} of {predicted.dtype}; take argmax over the logits first."
        )
    if len(image_ids) != len(predicted):
        raise VipnbError(
            f"{len(image_ids)} image ids but {len(predicted)} predictions for {path}; "
            "they must list the same test images in the same order."
        )
    seen: set[str] = set()
    for image_id in image_ids:
        if image_id in seen:
            raise VipnbError(f"image id {image_id!r} appears twice in the submission for {path}.")
        seen.add(image_id)

    return write_labels_csv(path, image_ids, predicted.tolist(), SUBMISSION_HEADER)


def write_labels_csv(path: str | os.PathLike, image_ids: Sequence[str], labels: Sequence[int],
                     header: tuple[str, str] = GROUND_TRUTH_HEADER) -> Path:
    """Write `<header>` then `<image id>,<class index>` rows, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temp file beside the target (same filesystem, so os.replace is atomic); opened with
    # open() rather than tempfile so the result gets the usual permissions, not 0600.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(zip(image_ids, (int(label) for label in labels), strict=True))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_labels_csv(path: str | os.PathLike) -> dict[str, int]:
    """Read a submission or ground-truth CSV into `{image id: class index}`.

    Like the toolkit's `pandas.read_csv`, the first row is a header and blank lines are
    skipped. Stricter than it: a row that is not `<id>,<integer>`, a repeated id, or a first
    row that looks like data (the toolkit would silently drop it) is an error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise VipnbError(f"no labels CSV at {path}; check the path or write it first.")
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    # utf-8-sig: a file saved by a spreadsheet may start with a byte-order mark.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or len(header) != 2:
            raise VipnbError(
                f"{path}, line 1: expected a header of two columns like "
                f"'{','.join(SUBMISSION_HEADER)}', got {header!r}."
            )
        if header[1].strip().lstrip("-").isdigit():
            raise VipnbError(
                f"{path}, line 1: {header!r} looks like a data row, but the first row must be a "
                f"header ('{','.join(SUBMISSION_HEADER)}'); the evaluation server would skip it."
            )
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            # Ids are not stripped: pandas keeps their spaces, so the server would not match them.
            image_id = row[0] if len(row) == 2 else ""
            try:
                label = int(row[1])
            except (IndexError, ValueError):
                label = None
            if not image_id or label is None:
                raise VipnbError(
                    f"{path}, line {line}: expected '<image id>,<class index>', got {row!r}."
                )
            if image_id in labels:
                raise VipnbError(
                    f"{path}, line {line}: image id {image_id!r} already given on line "
                    f"{first_line[image_id]}; keep one row per image."
                )
            labels[image_id] = label
            first_line[image_id] = line
    return labels


def score_submission(
    ground_truth_csv: str | os.PathLike, submission_csv: str | os.PathLike
) -> SubmissionScore:
    """Score a submission exactly as the toolkit's `evaluate_classification.py` does.

    Top-1 counts only the ground-truth ids that the submission contains; ids it lacks are
    skipped, not counted wrong, as on the server. So check `missing` / `coverage`: a partial
    submission can score higher than it deserves. Ids in the submission that the ground truth
    lacks are ignored.
    """
    truth = read_labels_csv(ground_truth_csv)
    predicted = read_labels_csv(submission_csv)
    answered = [image_id for image_id in truth if image_id in predicted]
    if not answered:
        raise VipnbError(
            f"{submission_csv} shares no image id with {ground_truth_csv}; check that both "
            "use the same id form (e.g. 'img_1.JPEG')."
        )
    correct = sum(truth[image_id] == predicted[image_id] for image_id in answered)
    return SubmissionScore(
        top1=correct / len(answered), matched=len(answered), missing=len(truth) - len(answered)
    )
