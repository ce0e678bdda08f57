"""The fusion-coverage paper's pipeline over the finished runs of one seed, from saved logits:
every model scored with the paper's TTA at every test size (§III.A, Tables I-III), the
two-stage fusion (§III.D) and the result coverage (§III.E)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from vipnb.engine.parallel import rescore_many
from vipnb.engine.rescore import rescore
from vipnb.engine.rundir import RunDir, SplitLogits
from vipnb.eval.coverage import cover, coverage_hard_vote
from vipnb.eval.fusion import two_stage_fusion

TTA_VIEWS = "paper_tta"  # centre, flip, colour jitter, Gaussian noise, rotation


@dataclass(frozen=True)
class Scores:
    """One model at one test size: its TTA logits on val (all) and test."""

    val: SplitLogits
    test: SplitLogits


def _tta_splits(test_limit: int) -> dict[str, int]:
    """The images `tta_scores` scores: all of val, the first `test_limit` of test (0: all)."""
    return {"val": 0, "test": test_limit}


def tta_scores(run: RunDir, test_size: int, test_limit: int = 0) -> Scores:
    """The whole image resized to `test_size`, scored under the paper's TTA views."""
    val, test = (rescore(run, TTA_VIEWS, test_size, split, limit, crop_size=test_size)
                 for split, limit in _tta_splits(test_limit).items())
    return Scores(val, test)


def tta_score_many(runs: Sequence[RunDir], test_sizes: Iterable[int], test_limit: int = 0,
                   processes: int = 1) -> None:
    """Score every run at every test size ahead of `tta_scores`, `processes` runs at once."""
    for size in test_sizes:
        for split, limit in _tta_splits(test_limit).items():
            rescore_many(runs, TTA_VIEWS, size, limit, processes, split, size)


@dataclass(frozen=True)
class Fusion:
    """Stage 1 (soft votes per test size and loss) and stage 2 (a hard vote over them)."""

    stage1_val: dict[tuple[int, str], np.ndarray]
    stage1_test: dict[tuple[int, str], np.ndarray]
    stage2_val: np.ndarray
    stage2_test: np.ndarray


def fuse(scores: dict[tuple[str, int], Scores], loss_of: dict[str, str]) -> Fusion:
    """`scores[(row, test_size)]` of one seed; rows of one loss and test size are soft-voted
    with weights softmax(val top-1), the stage-1 results hard-voted."""
    keys = sorted({(size, loss_of[row]) for row, size in scores})
    members = {key: [s for (row, size), s in sorted(scores.items())
                     if (size, loss_of[row]) == key] for key in keys}
    weights = {key: [s.val.top1 for s in group] for key, group in members.items()}
    stage1_val, stage2_val = two_stage_fusion(
        {key: ([s.val.logits for s in group], weights[key]) for key, group in members.items()})
    stage1_test, stage2_test = two_stage_fusion(
        {key: ([s.test.logits for s in group], weights[key]) for key, group in members.items()})
    return Fusion(stage1_val, stage1_test, stage2_val, stage2_test)


@dataclass(frozen=True)
class Coverage:
    """Result coverage of one seed: the hard classes, each coverage model's covered labels
    under both readings, and the hard votes over them."""

    hard: list[int]
    covered: dict[str, list[np.ndarray]]  # rule → one label array per coverage model
    final: dict[str, np.ndarray]  # rule → hard vote over the covered results


def run_coverage(fusion: Fusion, hard: list[int], coverage_runs: Sequence[RunDir],
                 test_size: int, test_limit: int, num_classes: int,
                 rules: Sequence[str] = ("literal", "replace")) -> Coverage:
    """Score the coverage models trained on `hard` on test and cover the stage-2 fused labels
    with them under each rule."""
    if not hard:
        return Coverage([], {rule: [] for rule in rules},
                        {rule: fusion.stage2_test for rule in rules})
    predictions = [tta_scores(run, test_size, test_limit).test.predictions
                   for run in coverage_runs]
    covered = {rule: [cover(fusion.stage2_test, p, hard, rule) for p in predictions]
               for rule in rules}
    final = {rule: coverage_hard_vote(labels, num_classes) for rule, labels in covered.items()}
    return Coverage(hard, covered, final)
