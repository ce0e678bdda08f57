"""Taylor cross-entropy (fusion-coverage paper §II.B.2, eq. 3).

After Feng et al. (2020, "Can Cross Entropy Loss Be Robust to Label Noise?"): the Taylor series
of −log p_y around p_y = 1, cut after `order` terms. A low order bounds the loss of a
confidently wrong (possibly mislabelled) sample; as the order grows it tends to cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses._reduction import check_reduction, compute_dtype, reduce


def taylor_cross_entropy(logits: torch.Tensor, target: torch.Tensor, order: int = 2,
                         reduction: str = "mean") -> torch.Tensor:
    """Σ_{k=1..order} (1 − p_y)^k / k with p = softmax(logits) (fusion-coverage paper eq. 3).

    `target` is class indices [B] or a probability matrix [B, C] (Mixup, label smoothing);
    for the latter p_y is the probability mass the model puts on the targets, Σ_c t_c p_c.
    `reduction`: "mean" | "sum" over the batch, or "none" for one value per sample. Computed
    in float32 at least.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise VipnbError(f"order={order!r} is not valid: the Taylor order must be an integer >= 1")
    check_reduction(reduction)
    dtype = compute_dtype(logits)
    probs = F.softmax(logits.to(dtype), dim=-1)
    if target.dim() == logits.dim() - 1:
        p_y = probs.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    else:
        p_y = (target.to(dtype) * probs).sum(-1)
    residual = (1 - p_y).clamp_min(0)  # soft targets may sum a hair above 1
    terms = torch.stack([residual.pow(k) / k for k in range(1, order + 1)])
    return reduce(terms.sum(0), reduction)
