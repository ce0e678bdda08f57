"""Cross-entropy plus cosine loss against a target distribution.

MoE paper eq. 3–4: L = −Σ_c t_c log p_c + (1 − cos(t, p)), the cosine term after Barz &
Denzler (2020, "Deep Learning on Small Datasets using a Cosine Loss"). The VIPF paper calls
the same loss the positive-class loss (its eq. 5); one implementation serves both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipnb.losses._reduction import check_reduction, compute_dtype, reduce


def _as_distribution(targets: torch.Tensor, num_classes: int,
                     dtype: torch.dtype) -> torch.Tensor:
    if targets.dim() == 1:
        return F.one_hot(targets.long(), num_classes).to(dtype)
    return targets.to(dtype)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       reduction: str = "mean") -> torch.Tensor:
    """−Σ_c t_c log softmax(logits)_c per sample (MoE eq. 3); targets: indices [B] or [B, C].

    `reduction`: "mean" | "sum" over the batch, or "none" for one value per sample. Computed
    in float32 at least; soft targets get gradients, like `F.cross_entropy`'s.
    """
    check_reduction(reduction)
    dtype = compute_dtype(logits)
    targets = _as_distribution(targets, logits.shape[-1], dtype)
    return reduce(-(targets * F.log_softmax(logits.to(dtype), dim=-1)).sum(-1), reduction)


def positive_class_loss(logits: torch.Tensor, targets: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """−Σ_c t_c log p_c + (1 − cos(t, p)) per sample, p = softmax(logits) (VIPF eq. 5).

    `targets` are class indices [B] or a probability matrix [B, C] (smoothed, mixed or
    distilled labels). `reduction`: "mean" | "sum" over the batch, or "none".
    """
    check_reduction(reduction)
    dtype = compute_dtype(logits)
    targets = _as_distribution(targets, logits.shape[-1], dtype)
    probs = F.softmax(logits.to(dtype), dim=-1)
    cosine = F.cosine_similarity(targets, probs, dim=-1)
    # Each term reduced on its own: the batch mean stays the sum of the two means it always was.
    return soft_cross_entropy(logits, targets, reduction) + reduce(1 - cosine, reduction)
