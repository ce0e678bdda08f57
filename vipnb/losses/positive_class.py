"""Cross-entropy plus cosine loss against a target distribution.

MoE paper eq. 3–4: L = −Σ_c t_c log p_c + (1 − cos(t, p)), the cosine term after Barz &
Denzler (2020, "Deep Learning on Small Datasets using a Cosine Loss"). The VIPF paper calls
the same loss the positive-class loss (its eq. 5); one implementation serves both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _as_distribution(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    if targets.dim() == 1:
        return F.one_hot(targets.long(), num_classes).float()
    return targets.float()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch mean of −Σ_c t_c log softmax(logits)_c (MoE eq. 3); targets: indices or [B, C]."""
    targets = _as_distribution(targets, logits.shape[-1])
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def positive_class_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch mean of −Σ_c t_c log p_c + (1 − cos(t, p)), p = softmax(logits).

    `targets` are class indices [B] or a probability matrix [B, C] (smoothed, mixed or
    distilled labels).
    """
    targets = _as_distribution(targets, logits.shape[-1])
    probs = F.softmax(logits.float(), dim=-1)
    cosine = F.cosine_similarity(targets, probs, dim=-1)
    return soft_cross_entropy(logits, targets) + (1 - cosine).mean()
