"""What one kind of training supplies to the one training loop (`vipnb.engine.trainer`).

The loop owns everything that must hold for every kind alike: seeding per epoch, the order
of the images and each process's share of it, gradient accumulation, DDP, bf16 autocast,
EMA, checkpoints and resume, the metrics file. A task owns the rest: its data, its model,
how a batch becomes inputs and targets, its loss, its evaluation and what it saves at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vipnb.engine.distributed import DistInfo
from vipnb.engine.precision import memory_format
from vipnb.engine.recipe import Recipe, default_value
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError


class Task:
    # Recipe keys this task cannot honour, and why: a recipe that sets one away from its
    # default is refused rather than trained as if the key were not there.
    unsupported: dict[str, str] = {}
    # The evaluated number the progress bar shows.
    headline = "top1"

    def __init__(self, recipe: Recipe, data: Any, device: torch.device, dist: DistInfo):
        self.check(recipe)
        self.recipe, self.data, self.device, self.dist = recipe, data, device, dist
        self.memory_format = memory_format(recipe)

    @classmethod
    def check(cls, recipe: Recipe) -> None:
        """Refuse a recipe that sets a key this task cannot honour (before anything trains)."""
        refuse_unsupported(recipe, cls.unsupported)

    @staticmethod
    def load_data(recipe: Recipe) -> Any:
        """The recipe's data; the loop reads `train_size` and hands batches back to the task."""
        raise NotImplementedError

    # -- model -----------------------------------------------------------------------------
    def build_model(self, starts_from: dict[str, RunDir]) -> nn.Module:
        raise NotImplementedError

    def attach(self, model: nn.Module, starts_from: dict[str, RunDir]) -> None:
        """Build what the loss needs beside the model (a teacher, class centres); called
        once the model is on its device, before training."""

    def parameters(self, model: nn.Module) -> nn.Module | list[nn.Parameter]:
        """What the optimizer updates: the model (timm then keeps weight decay off biases and
        norms), or a list of parameters."""
        return model

    def unused_parameters(self, model: nn.Module) -> bool:
        """Whether some parameters get no gradient in a step (DDP must then look for them): a
        module says so with `leaves_parameters_unused` (DSK-net's three-branch blocks run one
        residual function per step, eq. 2)."""
        return any(getattr(m, "leaves_parameters_unused", False) for m in model.modules())

    # -- one epoch -------------------------------------------------------------------------
    @property
    def train_size(self) -> int:
        return len(self.data.train)

    def train_batch_size(self, requested: int) -> int:
        """The global batch actually used: at most the data, and even (timm's Mixup pairs
        samples)."""
        size = min(requested, self.train_size)
        return max(2, size - size % 2)

    def start_epoch(self, epoch: int, count: int, generator: torch.Generator) -> Any:
        """The epoch's random draws for its `count` images (in the epoch's order), made once
        by every process so that the images seen do not depend on how many share the work."""
        return None

    def batches(self, order: torch.Tensor, size: int) -> Iterator[Any]:
        raise NotImplementedError

    def inputs_targets(self, batch: Any, positions: torch.Tensor, draws: Any,
                       generator: torch.Generator) -> tuple[Any, Any]:
        """A batch's model inputs and loss targets on the device; `positions`: the batch's
        places in the epoch's order, to pick its share of `draws`."""
        raise NotImplementedError

    def loss(self, forward: nn.Module, inputs: Any,
             targets: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch (under the loop's autocast), and its named parts for the
        metrics."""
        raise NotImplementedError

    # -- evaluation and the finished run ---------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict[str, float | None]:
        """An epoch's evaluation (main process), as metrics entries; the task may keep it
        for `finish`."""
        raise NotImplementedError

    def not_evaluated(self) -> dict[str, None]:
        """The metrics entries of an epoch without evaluation."""
        return {}

    def finish(self, model: nn.Module, run: RunDir) -> dict:
        """Write the finished run's files (logits, ...); return the summary's own entries."""
        raise NotImplementedError

    def state_dict(self, model: nn.Module) -> dict:
        """Checkpoint entries of the task's own (a loss's state, exported weights)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def refuse_unsupported(recipe: Recipe, unsupported: dict[str, str]) -> None:
    for key, why in unsupported.items():
        value, default = getattr(recipe, key), default_value(key)
        if value != default:
            raise VipnbError(f"{recipe.name}: `{key}: {value}` is not supported here: {why}. "
                             f"Remove it from the recipe (the default is {default!r}).")

