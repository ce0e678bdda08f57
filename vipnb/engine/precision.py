"""Where a recipe trains and evaluates in bf16 (autocast) and in which memory format."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from vipnb.engine.recipe import Recipe


def use_bf16(amp: str, device: torch.device) -> bool:
    """bf16 autocast where it pays: on CUDA, and on CPUs with native bf16 (AVX512-BF16,
    AMX). On an AVX2-only CPU, measured here, it is 6-40x slower than fp32."""
    if amp != "auto":
        return amp == "bf16"
    if device.type == "cuda":
        return True
    capability = torch.backends.cpu.get_cpu_capability()
    return device.type == "cpu" and ("AMX" in capability or "BF16" in capability)


def autocast(recipe: Recipe, device: torch.device) -> AbstractContextManager:
    if use_bf16(recipe.amp, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def memory_format(recipe: Recipe) -> torch.memory_format:
    return torch.channels_last if recipe.channels_last else torch.contiguous_format
