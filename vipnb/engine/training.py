"""`train`: one recipe in, one finished run directory out. It trains the runs the recipe
starts from first, lets one process at a time train a run, and hands the recipe to the one
training loop (`vipnb.engine.trainer`) with its task: classification, its MoCo-v2 stage, or
MTL-MoE with boxes."""

from __future__ import annotations

from pathlib import Path

import torch

from vipnb.engine.determinism import deterministic_kernels
from vipnb.engine.distributed import init_distributed
from vipnb.engine.recipe import DEPENDENCY_KEYS, Recipe
from vipnb.engine.run_lock import training_claim
from vipnb.engine.rundir import RunDir
from vipnb.engine.tasks import task_class
from vipnb.engine.trainer import Trainer


def train(recipe: Recipe, runs_root: str | Path, resume: bool = True,
          progress: bool = True, device: str | None = None) -> RunDir:
    """Train `recipe` under `runs_root` (the caller's runs folder: the command line and the
    notebooks pass `vipnb.paths.runs_root()`) unless its run directory already holds a
    finished run; return the run.

    With `resume` (the default) an interrupted run continues from its last checkpoint;
    without it, an unfinished run starts again from scratch.
    """
    run = RunDir(Path(runs_root) / recipe.run_name)
    if run.finished:  # reused as it is: no lock needed to read it
        return run
    task = task_class(recipe)
    task.check(recipe)
    # Runs this one starts from (a teacher, pretrained weights) are trained first, or reused.
    starts_from = {}
    for key in (key for key in DEPENDENCY_KEYS if getattr(recipe, key)):
        needed = recipe.dependency(key)
        if progress and not RunDir(Path(runs_root) / needed.run_name).finished:
            print(f"{recipe.name}: its {key} {needed.name} trains first: "
                  f"{needed.total_epochs} epochs at {needed.input_size} px, batch "
                  f"{needed.batch_size}, with {needed.overrides or 'no overrides'}", flush=True)
        starts_from[key] = train(needed, runs_root, resume, progress, device)
    dist_info, default_device = init_distributed()
    device = torch.device(device) if device else default_device
    # One process trains a run at a time; under torchrun, rank 0 holds the lock for all.
    with training_claim(run, dist_info, default_device) as unfinished:
        if not unfinished:  # another process finished it meanwhile
            return run
        if dist_info.is_main and not resume:
            run.checkpoint_file.unlink(missing_ok=True)
        if dist_info.is_main:
            run.write_recipe(recipe)
            data = task.load_data(recipe)  # the main process builds data and caches first
        dist_info.barrier()
        if not dist_info.is_main:
            data = task.load_data(recipe)
        with deterministic_kernels(recipe):
            return Trainer(recipe, run, data, device, progress, dist_info, starts_from).fit()
