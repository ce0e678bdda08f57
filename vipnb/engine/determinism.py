"""Seeding and deterministic kernels: a run's numbers follow from its recipe alone, and a
run resumed at an epoch boundary draws exactly what an uninterrupted one would have."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from vipnb.engine.recipe import Recipe


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed every random source from (seed, epoch) and return a generator seeded the same,
    for the epoch's order and augmentation draws."""
    epoch_seed = seed * 100_003 + epoch
    random.seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    torch.manual_seed(epoch_seed)
    return torch.Generator().manual_seed(epoch_seed)


@contextmanager
def deterministic_kernels(recipe: Recipe) -> Iterator[None]:
    """torch's deterministic kernels (or cuDNN's benchmark when `deterministic: false`) while
    the block runs; the process's own settings come back after it (they are process-wide)."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    if recipe.deterministic:
        _fix_cublas_workspace()
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def _fix_cublas_workspace() -> None:
    """cuBLAS (CUDA >= 10.2) is deterministic only with a fixed workspace. torch reads the
    variable once, at the process's first cuBLAS call, so it is set for good (a value the user
    set is kept), and set after CUDA work began it may come too late: that is said."""
    if "CUBLAS_WORKSPACE_CONFIG" in os.environ:
        return
    if torch.cuda.is_initialized():
        warnings.warn("CUBLAS_WORKSPACE_CONFIG was unset after this process had used CUDA, so "
                      "its matrix products may not be deterministic; set "
                      "CUBLAS_WORKSPACE_CONFIG=:4096:8 where it starts (the shell that starts "
                      "Jupyter or vipnb)", stacklevel=3)
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
