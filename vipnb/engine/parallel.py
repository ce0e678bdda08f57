"""Train many runs at once, in worker processes.

On a CPU, a small network cannot keep every core busy: its convolutions are too small to split
well across threads. Several single-threaded processes, each training its own run, then
finish more runs per minute than one process using every core. Runs another run depends on
(a teacher, an initialisation, a hierarchy's source) are trained first, one dependency level at
a time, so no two processes ever train the same run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from vipnb.engine.recipe import DEPENDENCY_KEYS, Recipe
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import train


def default_processes(profile: str) -> int:
    """One single-threaded process per core on the `cpu` profile; one process elsewhere (the
    `paper` profile trains on GPUs, each run using them all)."""
    if profile != "cpu" or torch.cuda.is_available():
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def dependency_levels(recipes: Sequence[Recipe]) -> list[list[Recipe]]:
    """Every recipe and what it depends on, by level: level 0 depends on nothing, level k on
    runs of lower levels only. Each run appears once."""
    depth: dict[str, int] = {}
    by_name: dict[str, Recipe] = {}

    def visit(recipe: Recipe) -> int:
        if recipe.run_name not in depth:
            below = [visit(recipe.dependency(key)) for key in DEPENDENCY_KEYS
                     if getattr(recipe, key)]
            depth[recipe.run_name] = 1 + max(below, default=-1)
            by_name[recipe.run_name] = recipe
        return depth[recipe.run_name]

    for recipe in recipes:
        visit(recipe)
    levels: list[list[Recipe]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name, level in depth.items():
        levels[level].append(by_name[name])
    return levels


def train_many(recipes: Sequence[Recipe], processes: int = 1,
               runs_root: str | Path | None = None) -> list[RunDir]:
    """Train every recipe not yet finished, `processes` at a time; return their runs in order.

    With `processes` > 1 each worker trains with one thread per core it gets (cores /
    processes), progress bars off. Finished runs are reused as `train` does.
    """
    runs_root = str(runs_root) if runs_root else None
    if processes > 1:
        threads = max(1, (os.cpu_count() or 1) // processes)
        spawn = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        with ProcessPoolExecutor(processes, mp_context=spawn, initializer=torch.set_num_threads,
                                 initargs=(threads,)) as pool:
            for level in dependency_levels(recipes):
                list(pool.map(_train_quietly, level, [runs_root] * len(level)))
    return [train(recipe, runs_root, progress=processes <= 1) for recipe in recipes]


def _train_quietly(recipe: Recipe, runs_root: str | None) -> str:
    return str(train(recipe, runs_root, progress=False).path)
