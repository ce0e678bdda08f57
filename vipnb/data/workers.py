"""How many DataLoader workers decode images for one training process: `workers: auto`.

A paper server's CPUs are shared by the node's training processes (one per GPU under torchrun),
so each takes its share; a hard-coded count starves a big node and oversubscribes a small one.
"""

from __future__ import annotations

import os

MAX_WORKERS = 16  # more rarely feeds one GPU faster, and each worker holds its own memory


def available_cpus() -> int:
    """The CPUs this process may run on (a Slurm or taskset limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def worker_count(workers: int | str) -> int:
    """`workers` itself when a number; for `auto`, this process's share of the CPUs.

    Under torchrun every process of a node sees all the node's CPUs, so the share is the CPUs
    divided by the processes on the node (LOCAL_WORLD_SIZE). A process already limited to
    fewer CPUs than the machine has (Slurm's cpus_per_task) has its share already."""
    if workers != "auto":
        return int(workers)
    cpus = available_cpus()
    if cpus >= (os.cpu_count() or cpus):  # not limited: share with the node's other ranks
        cpus //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_WORKERS, cpus))
