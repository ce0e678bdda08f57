"""Where a recipe trains and evaluates in bf16 (autocast) and in which memory format."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from vipnb.engine.recipe import Recipe
from vipnb.errors import VipnbError


def use_bf16(amp: str, device: torch.device) -> bool:
    """bf16 autocast where it pays: on GPUs with native bf16 (compute capability 8.0 and up:
    Ampere, Hopper; ROCm), and on CPUs with native bf16 (AVX512-BF16, AMX). On an AVX2-only CPU,
    measured here, it is 6-40x slower than fp32; on an older GPU (V100, T4) torch emulates it.
    `amp: bf16` on such a GPU is refused rather than emulated."""
    if device.type == "cuda" and amp != "none" and not _native_cuda_bf16(device):
        if amp == "bf16":
            name = torch.cuda.get_device_name(device)
            raise VipnbError(f"amp=bf16, but {name} has no native bf16 (torch would emulate it, "
                             "slowly); pass -p amp=auto (fp32 on this GPU) or -p amp=none")
        return False
    if amp != "auto":
        return amp == "bf16"
    if device.type == "cuda":
        return True
    capability = torch.backends.cpu.get_cpu_capability()
    return device.type == "cpu" and ("AMX" in capability or "BF16" in capability)


def _native_cuda_bf16(device: torch.device) -> bool:
    """On the current CUDA device: the one training uses (torchrun's ranks set theirs)."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast(recipe: Recipe, device: torch.device) -> AbstractContextManager:
    if use_bf16(recipe.amp, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def memory_format(recipe: Recipe) -> torch.memory_format:
    return torch.channels_last if recipe.channels_last else torch.contiguous_format
