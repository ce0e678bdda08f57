"""A run directory: everything one training run leaves behind, read back for evaluation.

    recipe.yaml      the resolved recipe          metrics.jsonl   one line per epoch
    checkpoint.pt    latest state (for resume)    summary.json    written last: the run is done
    logits_val.npz / logits_test.npz   logits, labels, image ids and class names
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from vipnb.atomic import write_text_atomic
from vipnb.engine.recipe import Recipe, from_dict
from vipnb.errors import VipnbError
from vipnb.eval.metrics import top1


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


# Every run whose logits this process has read: the runs a notebook's reports were made from.
_RUNS_READ: dict[str, Path] = {}


def runs_read() -> list[RunDir]:
    """The runs whose logits this process has read, in the order first read."""
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
        return from_dict(yaml.safe_load(self.recipe_file.read_text()), source=str(self.recipe_file))

    def summary(self) -> dict:
        if not self.finished:
            raise VipnbError(f"run {self.path} has not finished: train it first (no summary.json)")
        return json.loads(self.summary_file.read_text())

    def metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

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
        kept = [m for m in self.metrics() if m["epoch"] < before_epoch]
        write_text_atomic(self.metrics_file, "".join(json.dumps(m) + "\n" for m in kept))

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_logits(self, split: str, logits: np.ndarray, labels: np.ndarray, ids: list[str],
                     classes: list[str]) -> None:
        tmp = self.path / f".logits_{split}.tmp.npz"
        np.savez_compressed(tmp, logits=logits.astype(np.float32), labels=labels,
                            ids=np.asarray(ids), classes=np.asarray(classes))
        os.replace(tmp, self.logits_file(split))

    def write_summary(self, summary: dict) -> None:
        write_text_atomic(self.summary_file, json.dumps(summary, indent=1))


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
