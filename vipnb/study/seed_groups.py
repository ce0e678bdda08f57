"""Runs of one recipe over several seeds: trained and re-scored together, scored from their
saved logits, and combined into weighted ensembles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from vipnb.engine.parallel import default_processes, rescore_many, train_many
from vipnb.engine.recipe import load_recipe
from vipnb.engine.rescore import rescore
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.eval.ensemble import top_models_weights, weighted_score_average
from vipnb.eval.metrics import confusion_matrix, per_class_accuracy, top1


@dataclass(frozen=True)
class SeedGroup:
    """The finished runs of one recipe, one per seed."""

    name: str
    runs: list[RunDir]

    @property
    def classes(self) -> list[str]:
        return self.runs[0].logits("test").classes

    @cached_property
    def seeds(self) -> list[int]:
        return [run.recipe.seed for run in self.runs]

    def of_seeds(self, seeds: Sequence[int]) -> SeedGroup:
        """The runs of `seeds`, in that order."""
        by_seed = dict(zip(self.seeds, self.runs, strict=True))
        missing = [seed for seed in seeds if seed not in by_seed]
        if missing:
            raise VipnbError(f"{self.name} has no run of seed(s) {missing} (it has seeds "
                             f"{sorted(by_seed)}): train them first")
        return SeedGroup(self.name, [by_seed[seed] for seed in seeds])

    def top1(self, split: str = "test", ids: list[str] | None = None) -> list[float]:
        """Top-1 of each seed, in percent; with `ids`, on those images only (to compare with
        runs scored on fewer test images)."""
        if ids is None:
            return [100 * run.logits(split).top1 for run in self.runs]
        scores = []
        for run in self.runs:
            logits = run.logits(split)
            keep = np.isin(logits.ids, ids) & (logits.labels >= 0)
            scores.append(100 * top1(logits.logits[keep], logits.labels[keep]))
        return scores

    def scored_images(self, split: str = "test", ids: list[str] | None = None) -> int:
        """How many labelled images of `split` each seed's `top1` counts (of `ids` if given)."""
        logits = self.runs[0].logits(split)
        keep = logits.labels >= 0
        if ids is not None:
            keep &= np.isin(logits.ids, ids)
        return int(keep.sum())

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
        """Top-1 (percent) of each seed on the first `limit` test images (0: all), as trained
        (the saved logits) and re-scored under `views` at `test_size`: a paired comparison."""
        trained, rescored = [], []
        for run in self.runs:
            logits, labels = run.logits("test").labelled()
            first = slice(limit or None)
            trained.append(100 * top1(logits[first], labels[first]))
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


def common_seeds(first: SeedGroup, *others: SeedGroup) -> list[int]:
    """The seeds every group has, in `first`'s order."""
    return [seed for seed in first.seeds if all(seed in other.seeds for other in others)]


def on_common_seeds(before: SeedGroup, after: SeedGroup) -> tuple[SeedGroup, SeedGroup]:
    """Both groups cut to the seeds they share (in `before`'s order): a paired claim's sides."""
    common = common_seeds(before, after)
    return before.of_seeds(common), after.of_seeds(common)


def train_seed_groups(names: list[str], profile: str, seeds: list[int],
                      overrides: dict | None = None, processes: int | None = None, *,
                      runs_root: str | Path) -> dict[str, SeedGroup]:
    """Every recipe of `names` over every seed, trained under `runs_root` `processes` runs at
    a time (None: one single-threaded process per core at the `cpu` profile; see
    vipnb.engine.parallel)."""
    return train_seeds(dict.fromkeys(names, seeds), profile, overrides, processes,
                       runs_root=runs_root)


def train_seeds(seeds_of: dict[str, Sequence[int]], profile: str, overrides: dict | None = None,
                processes: int | None = None, *, runs_root: str | Path) -> dict[str, SeedGroup]:
    """Each recipe of `seeds_of` over its own seeds, all trained together as
    `train_seed_groups` trains them."""
    wanted = [load_recipe(name, profile, {**(overrides or {}), "seed": seed})
              for name, seeds in seeds_of.items() for seed in seeds]
    runs = iter(train_many(wanted, processes or default_processes(profile), runs_root=runs_root))
    return {name: SeedGroup(name, [next(runs) for _ in seeds]) for name, seeds in seeds_of.items()}


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


def weighted_ensemble_top1(groups: list[SeedGroup], n_best: int,
                           split: str = "test") -> list[float]:
    """Per seed, the top-1 (percent) of `weighted_ensembles` on `split`'s labelled images."""
    probabilities, labels, _ = weighted_ensembles(groups, n_best, split)
    known = labels >= 0
    return [100 * top1(p[known], labels[known]) for p in probabilities]
