"""Distillation targets (MoE paper eq. 2)."""

from __future__ import annotations

import torch

from vipnb.losses._reduction import compute_dtype


def distillation_targets(label_targets: torch.Tensor, teacher_logits: torch.Tensor,
                         label_weight: float) -> torch.Tensor:
    """l_train = λ·l_ls + (1 − λ)·softmax(teacher) (eq. 2).

    `label_targets` [B, C] are the smoothed (and mixed) labels l_ls; the teacher sees the
    same augmented images as the student. The paper does not state λ; it is the recipe key
    `distill_label_weight`. Float32 at least (float64 inputs stay float64).
    """
    if not 0.0 <= label_weight <= 1.0:
        raise ValueError(f"label_weight must lie in [0, 1], got {label_weight}")
    dtype = torch.promote_types(compute_dtype(label_targets), teacher_logits.dtype)
    teacher = torch.softmax(teacher_logits.to(dtype), dim=-1)
    return label_weight * label_targets.to(dtype) + (1 - label_weight) * teacher
