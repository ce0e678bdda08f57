"""What the MTL-MoE notebook reads back from its finished runs: per-epoch test metrics, the
epoch validation chooses, and how the gates route each class."""

from __future__ import annotations

import numpy as np

from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError


def run_metrics(run: RunDir, metric: str) -> np.ndarray:
    """`metric` of every epoch of `run`, in order; NaN for the epochs it was not measured
    (a recipe with `val_every` > 1 scores the test set every few epochs and after the last)."""
    records = run.metrics()
    values = np.array([np.nan if record.get(metric) is None else record[metric]
                       for record in records], dtype=float)
    if not np.isfinite(values).any():
        available = sorted({key for record in records for key, value in record.items()
                            if value is not None})
        raise VipnbError(f"{run.path}: no per-epoch {metric!r}; the records hold "
                         f"{', '.join(available) or 'nothing'}")
    return values


def at_epoch_chosen_on_val(run: RunDir, metric: str = "test_top1") -> float:
    """`metric` at the epoch of the best validation top-1 (the first, on a tie): the honest
    counterpart of the poster's best test epoch. Needs a run with `box_val_per_class`."""
    val = run_metrics(run, "val_top1")
    return float(run_metrics(run, metric)[int(np.nanargmax(val))])


def seed_curve(run: RunDir, metric: str = "test_top1") -> list[float]:
    return run_metrics(run, metric).tolist()


def routing(run: RunDir) -> dict[str, np.ndarray]:
    """Per gate, the mean gate weight [classes, experts] on the test images of each class."""
    labels = run.logits("test").labels
    classes = len(run.logits("test").classes)
    with np.load(run.path / "boxes_gates_test.npz") as saved:
        gates = {key.removeprefix("gates_"): saved[key] for key in saved.files
                 if key.startswith("gates_")}
    return {task: np.stack([weights[labels == c].mean(0) for c in range(classes)])
            for task, weights in gates.items()}
