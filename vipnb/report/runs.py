"""Reports for a group of runs of one recipe over several seeds, from their saved logits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vipnb.engine.parallel import default_processes, rescore_many, train_many
from vipnb.engine.recipe import load_recipe
from vipnb.engine.rescore import rescore
from vipnb.engine.rundir import RunDir
from vipnb.eval.ensemble import top_models_weights, weighted_score_average
from vipnb.eval.metrics import confusion_matrix, hard_classes, per_class_accuracy, top1
from vipnb.report.header import ReportHeader
from vipnb.report.plots import confusion_heatmap, learning_curves_plot, per_class_accuracy_plot
from vipnb.report.tables import write_hard_classes


@dataclass(frozen=True)
class SeedGroup:
    """The finished runs of one recipe, one per seed."""

    name: str
    runs: list[RunDir]

    @property
    def classes(self) -> list[str]:
        return self.runs[0].logits("test").classes

    def top1(self, split: str = "test") -> list[float]:
        """Top-1 of each seed, in percent."""
        return [100 * run.logits(split).top1 for run in self.runs]

    def ensemble_top1(self, split: str = "test") -> float:
        """Top-1 (percent) of the seeds' averaged softmax scores, from the saved logits."""
        probabilities = weighted_score_average([run.logits(split).logits for run in self.runs],
                                               [1.0] * len(self.runs))
        reference = self.runs[0].logits(split)
        known = reference.labels >= 0
        return 100 * top1(probabilities[known], reference.labels[known])

    def val_top1(self) -> float:
        """Mean validation top-1 (percent) over the seeds: what picks models, never test."""
        return float(np.mean(self.top1("val")))

    def rescored_top1(self, views: str, test_size: int,
                      limit: int) -> tuple[list[float], list[float]]:
        """Top-1 (percent) of each seed on the first `limit` test images, as trained (the
        saved logits) and re-scored under `views` at `test_size`: a paired comparison."""
        trained, rescored = [], []
        for run in self.runs:
            logits, labels = run.logits("test").labelled()
            trained.append(100 * top1(logits[:limit], labels[:limit]))
            rescored.append(100 * rescore(run, views, test_size, limit=limit).top1)
        return trained, rescored

    def per_class(self, split: str = "test") -> np.ndarray:
        """Per-class accuracy [seeds, classes] (fractions)."""
        rows = []
        for run in self.runs:
            logits, labels = run.logits(split).labelled()
            rows.append(per_class_accuracy(logits.argmax(1), labels, len(self.classes)))
        return np.stack(rows)

    def confusion(self, split: str = "test") -> np.ndarray:
        """Confusion counts summed over seeds (rows: true class)."""
        total = np.zeros((len(self.classes),) * 2, dtype=np.int64)
        for run in self.runs:
            logits, labels = run.logits(split).labelled()
            total += confusion_matrix(logits.argmax(1), labels, len(self.classes))
        return total


def train_seed_groups(names: list[str], profile: str, seeds: list[int],
                      overrides: dict | None = None,
                      processes: int | None = None) -> dict[str, SeedGroup]:
    """Every recipe of `names` over every seed, trained `processes` runs at a time (None: one
    single-threaded process per core at the `cpu` profile; see vipnb.engine.parallel)."""
    wanted = [load_recipe(name, profile, {**(overrides or {}), "seed": seed})
              for name in names for seed in seeds]
    runs = train_many(wanted, processes or default_processes(profile))
    return {name: SeedGroup(name, runs[i * len(seeds):(i + 1) * len(seeds)])
            for i, name in enumerate(names)}


def rescore_seed_groups(groups: list[SeedGroup], views: str, test_size: int, limit: int,
                        profile: str, processes: int | None = None) -> None:
    """Re-score every run of `groups` ahead of `SeedGroup.rescored_top1`, `processes` runs
    at once (None: as `train_seed_groups` at `profile`)."""
    rescore_many([run for group in groups for run in group.runs], views, test_size, limit,
                 processes or default_processes(profile))


def weighted_ensembles(groups: list[SeedGroup], n_best: int,
                       split: str = "test") -> tuple[list[np.ndarray], np.ndarray, list[float]]:
    """Per seed, the weighted score average of every group's run of that seed (weight 3 for
    the `n_best` groups with the best mean validation top-1, 1 for the rest); returns the
    probabilities per seed, the labels and the weights."""
    weights = top_models_weights([group.val_top1() for group in groups], n_best)
    seeds = min(len(group.runs) for group in groups)
    probabilities = [weighted_score_average([g.runs[s].logits(split).logits for g in groups],
                                            weights) for s in range(seeds)]
    return probabilities, groups[0].runs[0].logits(split).labels, weights


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
