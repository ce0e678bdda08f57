"""Diversity loss of a mixture of experts (MoE paper eq. 6–7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipnb.losses._reduction import check_reduction, compute_dtype, reduce


def diversity_loss(expert_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """−Σ_i KL(p_i ‖ p̄) per sample (eq. 7), p̄ = (1/N) Σ_i p_i (eq. 6).

    `expert_logits` is [N, B, C]; `reduction` ("mean" | "sum" | "none") is over the batch B.
    Minimising it pushes each expert's prediction away from the experts' mean, so the
    experts do not all learn the same thing. Computed in float32 at least.
    """
    check_reduction(reduction)
    dtype = compute_dtype(expert_logits)
    log_probs = F.log_softmax(expert_logits.to(dtype), dim=-1)
    log_mean = torch.logsumexp(log_probs, dim=0) - torch.log(
        torch.tensor(float(expert_logits.shape[0]), dtype=dtype))
    kl = (log_probs.exp() * (log_probs - log_mean)).sum(-1)  # [N, B]
    return reduce(-kl.sum(0), reduction)
