"""Data-parallel training on PyTorch's own engine: `torchrun` sets RANK, WORLD_SIZE and
LOCAL_RANK; `vipnb train` reads them and needs no other change (one node or several)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: torch.Tensor) -> bool:
        """True when `flag` (a 0-d bool tensor) holds on every process."""
        if not self.enabled:
            return bool(flag)
        value = flag.float().reshape(1)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item() > 0)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value


def init_distributed() -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA), or run alone."""
    cuda = torch.cuda.is_available()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return DistInfo(), torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    return info, torch.device(f"cuda:{local_rank}" if cuda else "cpu")
