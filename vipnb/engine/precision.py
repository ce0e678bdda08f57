"""Where a recipe trains and evaluates in bf16 (autocast) and in which memory format."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from vipnb.engine.recipe import Recipe
from vipnb.errors import VipnbError


def use_bf16(amp: str, device: torch.device) -> bool:
    """bf16 autocast where it pays: on GPUs with native bf16 (compute capability 8.0 and up:
    Ampere, Hopper; ROCm), and on CPUs with native bf16 (AVX512-BF16, AMX). Elsewhere torch
    emulates it, and `amp: bf16` is refused: on an older GPU (V100, T4) it is slow; on a CPU
    without it, measured here (torch reports AVX512), it is 6-40x slower than fp32, and the
    emulated convolution backward of timm's resnet10t at 16 px gave non-finite weight gradients
    in 4 of 40 fresh processes on the same seeded batch (torch 2.14.1)."""
    native = {"cuda": _native_cuda_bf16, "cpu": _native_cpu_bf16}.get(device.type)
    if native is None:
        return amp == "bf16"
    if amp == "none":
        return False
    if native(device):
        return True
    if amp == "bf16":
        raise VipnbError(f"amp=bf16, but {_hardware(device)} has no native bf16 (torch would "
                         "emulate it: slowly, and on a CPU with non-finite gradients at random); "
                         "pass -p amp=auto (fp32 here) or -p amp=none")
    return False


def _native_cuda_bf16(device: torch.device) -> bool:
    """On the current CUDA device: the one training uses (torchrun's ranks set theirs)."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def _native_cpu_bf16(device: torch.device) -> bool:
    capability = torch.backends.cpu.get_cpu_capability()
    return "AMX" in capability or "BF16" in capability


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"this CPU (torch reports {torch.backends.cpu.get_cpu_capability()}; bf16 needs "
            "AVX512-BF16 or AMX)")


def autocast(recipe: Recipe, device: torch.device) -> AbstractContextManager:
    if use_bf16(recipe.amp, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def memory_format(recipe: Recipe) -> torch.memory_format:
    return torch.channels_last if recipe.channels_last else torch.contiguous_format
