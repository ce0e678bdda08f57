"""Seeding and deterministic kernels: a run's numbers follow from its recipe alone, and a
run resumed at an epoch boundary draws exactly what an uninterrupted one would have."""

from __future__ import annotations

import random

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


def configure_determinism(recipe: Recipe) -> None:
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
