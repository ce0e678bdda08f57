"""Reports of a group of runs of one recipe over several seeds (vipnb.study.seed_groups), and
of the best one beside an ensemble: per-class plots and CSVs, confusion, learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vipnb.eval.metrics import confusion_matrix, hard_classes, per_class_accuracy
from vipnb.report.header import ReportHeader
from vipnb.report.plots import confusion_heatmap, learning_curves_plot, per_class_accuracy_plot
from vipnb.report.tables import write_hard_classes

if TYPE_CHECKING:  # rendering needs the runs' logits, never the code that trains them
    from vipnb.study.seed_groups import SeedGroup


def write_group_reports(group: SeedGroup, out_dir: str | Path, header: ReportHeader,
                        split: str = "test", threshold: float = 0.5,
                        k_worst: int = 3) -> dict[str, Path]:
    """Per-class plot, confusion heatmap, learning curves and hard classes of `group`,
    with per-class accuracy averaged over its seeds."""
    out_dir = Path(out_dir)
    stem = f"{group.name}_{split}"
    per_class = group.per_class(split).mean(0)
    hard = hard_classes(per_class, group.classes, threshold=threshold, k_worst=k_worst)
    n = len(group.runs)
    return {
        "per_class": per_class_accuracy_plot(
            {f"mean of {n} seed(s)": per_class}, group.classes, out_dir / f"{stem}_per_class.png",
            header, threshold=threshold, title=f"{group.name}: per-class {split} accuracy"),
        "confusion": confusion_heatmap(group.confusion(split), group.classes,
                                       out_dir / f"{stem}_confusion.png", header),
        "curves": learning_curves_plot({run.path.name: run.metrics() for run in group.runs},
                                       out_dir / f"{group.name}_learning_curves.png", header),
        "hard_classes": write_hard_classes(hard, out_dir / f"{stem}_hard_classes.csv", header),
    }


def write_ensemble_reports(best: SeedGroup, ensembles: list[np.ndarray], labels: np.ndarray,
                           out_dir: str | Path, header: ReportHeader) -> dict[str, Path]:
    """The best single model's reports (`write_group_reports`), its per-class test accuracy
    beside the ensemble's (each averaged over seeds) and the ensemble's hard classes (below
    0.5, plus the three worst) and its confusion matrix summed over seeds."""
    out_dir = Path(out_dir)
    files = write_group_reports(best, out_dir, header)
    known = labels >= 0
    classes = best.classes
    ensemble = sum(per_class_accuracy(p[known].argmax(1), labels[known], len(classes))
                   for p in ensembles) / len(ensembles)
    files["ensemble_per_class"] = per_class_accuracy_plot(
        {f"best single ({best.name})": best.per_class().mean(0), "ensemble": ensemble}, classes,
        out_dir / "ensemble_test_per_class.png", header,
        title="Per-class test accuracy: best single model vs ensemble")
    files["ensemble_hard_classes"] = write_hard_classes(
        hard_classes(ensemble, classes, k_worst=3), out_dir / "ensemble_test_hard_classes.csv",
        header)
    confusion = sum(confusion_matrix(p[known].argmax(1), labels[known], len(classes))
                    for p in ensembles)
    files["ensemble_confusion"] = confusion_heatmap(
        confusion, classes, out_dir / "ensemble_test_confusion.png", header)
    return files
