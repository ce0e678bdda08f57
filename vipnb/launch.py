"""Send notebooks or training runs to a cluster through submitit: `--launcher slurm` on a
Slurm cluster, `--launcher local` (submitit's local executor) to try the same path here.

A job with several tasks (`--gpus-per-node N`) trains data-parallel: submitit's
`TorchDistributedEnvironment` sets the variables torchrun would, and `vipnb train` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipnb.errors import VipnbError

LAUNCHERS = ("slurm", "local")


@dataclass(frozen=True)
class ClusterOptions:
    launcher: str = "slurm"
    partition: str | None = None
    gpus_per_node: int = 1
    nodes: int = 1
    timeout_min: int = 24 * 60
    cpus_per_task: int = 8
    folder: Path | None = None  # submitit's logs and pickles (the CLI: <runs>/submitit/%j)


def make_executor(options: ClusterOptions):
    try:
        import submitit
    except ImportError:
        raise VipnbError("--launcher needs submitit: pip install submitit") from None
    if options.launcher not in LAUNCHERS:
        raise VipnbError(f"unknown launcher {options.launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if options.folder is None:
        raise VipnbError("ClusterOptions.folder is not set: give the folder for submitit's logs "
                         "(vipnb's command line uses <runs folder>/submitit/%j)")
    folder = options.folder
    if options.launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.timeout_min, tasks_per_node=1)
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**slurm_parameters(options))
    return executor


def slurm_parameters(options: ClusterOptions) -> dict[str, Any]:
    """submitit's parameters for a job: one task per GPU, so each task is one DDP process."""
    parameters = {"timeout_min": options.timeout_min, "nodes": options.nodes,
                  "gpus_per_node": options.gpus_per_node,
                  "tasks_per_node": max(1, options.gpus_per_node),
                  "cpus_per_task": options.cpus_per_task}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    return parameters


def notebook_job(name: str, profile: str, parameters: dict[str, Any],
                 overwrite: bool = False) -> str:
    from vipnb.run import run_notebook

    return str(run_notebook(name, profile, parameters, overwrite=overwrite))


def train_job(recipe_path: str, profile: str, overrides: dict[str, Any],
              runs_root: str | Path) -> str:
    """One task of a (possibly multi-task) job: join the job's process group, then train."""
    import os

    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
    from vipnb.engine import load_recipe, train

    return str(train(load_recipe(recipe_path, profile, overrides), runs_root=runs_root,
                     progress=False).path)


def submit(function, argument_lists: list[tuple], options: ClusterOptions, wait: bool):
    """Submit `function(*arguments)` once per entry; with `wait`, return their results."""
    executor = make_executor(options)
    jobs = [executor.submit(function, *arguments) for arguments in argument_lists]
    for job in jobs:
        print(f"submitted job {job.job_id} ({options.launcher}); logs in {job.paths.folder}")
    return [job.result() for job in jobs] if wait else jobs
