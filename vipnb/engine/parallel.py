"""Train many runs at once, in worker processes.

On a CPU, a small network cannot keep every core busy: its convolutions are too small to split
well across threads. Several single-threaded processes, each training its own run, then
finish more runs per minute than one process using every core. A run another run depends on
(a teacher, an initialisation, a hierarchy's source) is trained first; every other run starts
as soon as a process is free, so no process waits for a whole group of runs to end, and no two
processes ever train the same run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from vipnb.engine.recipe import DEPENDENCY_KEYS, Recipe
from vipnb.engine.rescore import rescore, rescored_file
from vipnb.engine.rundir import RunDir
from vipnb.engine.training import train
from vipnb.errors import VipnbError
from vipnb.progress import progress_bar


def default_processes(profile: str) -> int:
    """One single-threaded process per core on the `cpu` profile; one process elsewhere (the
    `paper` profile trains on GPUs, each run using them all)."""
    if profile != "cpu" or torch.cuda.is_available():
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def dependency_graph(recipes: Sequence[Recipe]) -> dict[str, tuple[Recipe, set[str]]]:
    """Every recipe and every run it depends on, once each, by run name: the recipe and the
    run names it needs finished first."""
    graph: dict[str, tuple[Recipe, set[str]]] = {}

    def visit(recipe: Recipe) -> str:
        name = recipe.run_name  # a hash over the recipe and its dependencies' run names
        if name not in graph:
            graph[name] = (recipe, set())
            graph[name][1].update(visit(recipe.dependency(key))
                                  for key in DEPENDENCY_KEYS if getattr(recipe, key))
        return name

    for recipe in recipes:
        visit(recipe)
    return graph


def start_order(graph: dict[str, tuple[Recipe, set[str]]]) -> list[str]:
    """Run names, the first to start first among those ready: the runs at the bottom of the
    longest chains of runs waiting on them (they hold the most back), then the costliest
    (epochs × experts), so the last runs to start are short ones that end together."""
    waiting_on: dict[str, list[str]] = {name: [] for name in graph}
    for name, (_, needs) in graph.items():
        for need in needs:
            waiting_on[need].append(name)
    chain: dict[str, int] = {}

    def chain_above(name: str) -> int:
        if name not in chain:
            chain[name] = 1 + max(map(chain_above, waiting_on[name]), default=0)
        return chain[name]

    def cost(name: str) -> int:
        recipe = graph[name][0]
        return recipe.epochs * max(1, recipe.experts)

    return sorted(graph, key=lambda name: (-chain_above(name), -cost(name)))


def train_many(recipes: Sequence[Recipe], processes: int = 1, *,
               runs_root: str | Path) -> list[RunDir]:
    """Train every recipe not yet finished under `runs_root`, `processes` at a time; return
    their runs in order.

    With `processes` > 1 each worker trains with one thread per core it gets (cores /
    processes), progress bars off. Finished runs are reused as `train` does.
    """
    runs_root = str(runs_root)
    root = Path(runs_root)
    # A finished run is reused: nothing trains it, and nothing waits on it (an interrupted
    # notebook restarts with its teachers done and their students not).
    graph = {name: (recipe, {need for need in needs if not RunDir(root / need).finished})
             for name, (recipe, needs) in dependency_graph(recipes).items()
             if not RunDir(root / name).finished}
    if processes > 1 and graph:
        with _worker_pool(processes) as pool:
            _run_when_ready(graph, start_order(graph), processes,
                            lambda name: pool.submit(_train_quietly, graph[name][0], runs_root))
    return [train(recipe, runs_root, progress=processes <= 1) for recipe in recipes]


def rescore_many(runs: Sequence[RunDir], views: str, test_size: int, limit: int = 0,
                 processes: int = 1, split: str = "test", crop_size: int | None = None) -> None:
    """Re-score every run not yet re-scored under `views` at `test_size` on the first `limit`
    images of `split`, crops of `crop_size` (vipnb.engine.rescore), `processes` at a time.
    The logits land in each run directory, where `rescore` reads them back."""
    jobs = [(str(run.path), views, test_size, split, limit, crop_size) for run in runs
            if not rescored_file(run, views, test_size, split, limit, crop_size).exists()]
    if processes > 1 and len(jobs) > 1:
        with _worker_pool(processes) as pool:
            list(pool.map(_rescore, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            _rescore(*job)


def _rescore(path: str, views: str, test_size: int, split: str, limit: int,
             crop_size: int | None) -> None:
    rescore(RunDir(path), views, test_size, split, limit, crop_size=crop_size)


def _worker_pool(processes: int) -> ProcessPoolExecutor:
    threads = max(1, (os.cpu_count() or 1) // processes)
    spawn = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    return ProcessPoolExecutor(processes, mp_context=spawn, initializer=torch.set_num_threads,
                               initargs=(threads,))


def _run_when_ready(graph: dict[str, tuple[Recipe, set[str]]], order: list[str], processes: int,
                    start: Callable[[str], Future]) -> None:
    """Start each run once the runs it needs have finished, at most `processes` at a time, in
    `order` among the ready ones; a failed run raises (the runs under way still finish). A
    progress bar counts finished runs and estimates the time left."""
    needs = {name: graph[name][1] & graph.keys() for name in order}  # finished ones are left out
    running: dict[Future, str] = {}
    bar = progress_bar(total=len(order), desc="runs", unit="run", mininterval=10.0, ncols=100)
    while needs or running:
        ready = [name for name in order if name in needs and not needs[name]]
        for name in ready[:processes - len(running)]:
            del needs[name]
            running[start(name)] = name
            bar.write(f"run {len(order) - len(needs)} of {len(order)} started: {name} "
                      f"({graph[name][0].total_epochs} epochs)")
        if not running:
            raise VipnbError(f"runs that wait on each other: {', '.join(sorted(needs))}; a "
                             "recipe's teacher, init_from or hierarchy_from must not lead back "
                             "to it")
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            future.result()
            finished = running.pop(future)
            bar.update()
            for waiting in needs.values():
                waiting.discard(finished)
    bar.close()


def _train_quietly(recipe: Recipe, runs_root: str) -> None:
    train(recipe, runs_root, progress=False)
