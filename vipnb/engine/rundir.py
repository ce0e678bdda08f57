"""A run directory: everything one training run leaves behind, read back for evaluation.

    recipe.yaml      the resolved recipe          metrics.jsonl   one line per epoch
    checkpoint.pt    latest state (for resume)    summary.json    written last: the run is done
    logits_val.npz / logits_test.npz   logits, labels, image ids and class names
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from vipnb.atomic import atomic_file, write_text_atomic
from vipnb.engine.recipe import Recipe, from_dict, parse_yaml
from vipnb.errors import VipnbError
from vipnb.eval.metrics import top1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitLogits:
    logits: np.ndarray  # float32 [N, C]
    labels: np.ndarray  # int64 [N], -1 where unknown
    ids: list[str]
    classes: list[str]

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of the images whose label is known."""
        known = self.labels >= 0
        return self.logits[known], self.labels[known]

    @property
    def top1(self) -> float:
        logits, labels = self.labelled()
        return top1(logits, labels) if len(labels) else float("nan")


# Every run whose logits or metrics this process has read: the runs a notebook's reports were
# made from.
_RUNS_READ: dict[str, Path] = {}


def runs_read() -> list[RunDir]:
    """The runs whose logits or metrics this process has read, in the order first read."""
    return [RunDir(path) for path in _RUNS_READ.values()]


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    recipe_file = property(lambda self: self.path / "recipe.yaml")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    checkpoint_file = property(lambda self: self.path / "checkpoint.pt")
    summary_file = property(lambda self: self.path / "summary.json")

    @property
    def finished(self) -> bool:
        return self.summary_file.exists()

    @property
    def recipe(self) -> Recipe:
        try:
            values = parse_yaml(self.recipe_file.read_text())
        except FileNotFoundError:
            raise VipnbError(f"{self.path} has no recipe.yaml: it is not a run directory, or its "
                             "training never started") from None
        except yaml.YAMLError as e:
            raise self._damaged(self.recipe_file, e) from None
        if not isinstance(values, dict):
            raise self._damaged(self.recipe_file, "not a mapping of recipe keys")
        # checked when the run was trained; `extends` may have left unread keys in it
        return from_dict(values, source=str(self.recipe_file), written=())

    def summary(self) -> dict:
        if not self.finished:
            raise VipnbError(f"run {self.path} has not finished: train it first (no summary.json)")
        try:
            summary = json.loads(self.summary_file.read_text())
        except ValueError as e:
            raise self._damaged(self.summary_file, e) from None
        if not isinstance(summary, dict):
            raise self._damaged(self.summary_file, "not a JSON object")
        return summary

    def _damaged(self, file: Path, problem) -> VipnbError:
        problem = " ".join(str(problem).split())  # a YAML error spans lines
        return VipnbError(f"{file} cannot be read ({problem}); delete the run directory "
                          f"{self.path} and train the run again")

    def metrics(self) -> list[dict]:
        _RUNS_READ.setdefault(self.path.name, self.path)
        return self._read_metrics()[0]

    def _read_metrics(self) -> tuple[list[dict], bool]:
        """The epochs' records, and whether a torn last line (a write cut short by a kill)
        was left out; a damaged line before the last raises."""
        if not self.metrics_file.exists():
            return [], False
        lines = [line for line in self.metrics_file.read_text().splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, 1):
            record = _metrics_record(line)
            if record is None and number == len(lines):
                return records, True
            if record is None:
                raise VipnbError(
                    f"{self.metrics_file}, line {number}, is not an epoch's record: the file is "
                    "damaged; delete the run directory, or train with --restart, to train the "
                    "run from the start")
            records.append(record)
        return records, False

    def logits_file(self, split: str) -> Path:
        """Where the logits of `split` (val, test, or a re-scored view of it) are saved."""
        return self.path / f"logits_{split}.npz"

    def logits(self, split: str) -> SplitLogits:
        _RUNS_READ.setdefault(self.path.name, self.path)
        file = self.logits_file(split)
        if not file.exists():
            raise VipnbError(f"{file} does not exist: the run has not finished or was not trained")
        with np.load(file) as data:
            return SplitLogits(data["logits"], data["labels"], data["ids"].tolist(),
                               data["classes"].tolist())

    # writing (rank 0 of the trainer only)
    def write_recipe(self, recipe: Recipe) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.recipe_file, yaml.safe_dump(_plain(recipe.to_dict()), sort_keys=False))

    def truncate_metrics(self, before_epoch: int) -> None:
        """Drop epochs at or after `before_epoch` (left by a run killed after its checkpoint)."""
        records, torn = self._read_metrics()
        if torn:
            log.warning("%s: left out its last line, cut short when training was killed",
                        self.metrics_file)
        kept = [m for m in records if m["epoch"] < before_epoch]
        write_text_atomic(self.metrics_file, "".join(json.dumps(m) + "\n" for m in kept))

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_logits(self, split: str, logits: np.ndarray, labels: np.ndarray, ids: list[str],
                     classes: list[str]) -> None:
        with atomic_file(self.logits_file(split), "wb") as stream:
            np.savez_compressed(stream, logits=logits.astype(np.float32), labels=labels,
                                ids=np.asarray(ids), classes=np.asarray(classes))

    def write_summary(self, summary: dict) -> None:
        write_text_atomic(self.summary_file, json.dumps(summary, indent=1))


def _metrics_record(line: str) -> dict | None:
    """The record on one line of metrics.jsonl, or None if it is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("epoch"), int) else None


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
