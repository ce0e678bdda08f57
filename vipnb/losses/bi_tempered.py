"""Bi-tempered logistic loss (fusion-coverage paper §II.B.3, eq. 4–5).

Amid, Warmuth, Anil & Koren (2019, "Robust Bi-Tempered Logistic Loss Based on Bregman
Divergences"): a temperature t1 < 1 bounds the loss (robust to outliers and wrong labels), a
temperature t2 > 1 gives the tempered softmax a heavier tail. A port of Google's reference
implementation, google/bi-tempered-loss `tensorflow/loss.py`: the same normalisation
(fixed point for t > 1, binary search for t < 1), label smoothing, loss formula and explicit
gradient, so it reproduces that repository's test values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses._reduction import check_reduction, reduce


def log_t(u: torch.Tensor, t: float) -> torch.Tensor:
    """Tempered logarithm (u^(1−t) − 1) / (1 − t); log u at t = 1 (Amid et al. 2019; eq. 4)."""
    if t == 1.0:
        return torch.log(u)
    return (u.pow(1.0 - t) - 1.0) / (1.0 - t)


def exp_t(u: torch.Tensor, t: float) -> torch.Tensor:
    """Tempered exponential [1 + (1 − t) u]_+^(1/(1−t)); exp u at t = 1 (eq. 5)."""
    if t == 1.0:
        return torch.exp(u)
    return torch.relu(1.0 + (1.0 - t) * u).pow(1.0 / (1.0 - t))


def _normalization_fixed_point(activations: torch.Tensor, t: float,
                               num_iters: int) -> torch.Tensor:
    """λ with Σ_c exp_t(a_c − λ) = 1 for t > 1 (reference `compute_normalization_fixed_point`)."""
    mu = activations.amax(-1, keepdim=True)
    step_0 = activations - mu
    normalized = step_0
    for _ in range(num_iters):
        logt_partition = exp_t(normalized, t).sum(-1, keepdim=True)
        normalized = step_0 * logt_partition.pow(1.0 - t)
    logt_partition = exp_t(normalized, t).sum(-1, keepdim=True)
    return -log_t(1.0 / logt_partition, t) + mu


def _normalization_binary_search(activations: torch.Tensor, t: float,
                                 num_iters: int) -> torch.Tensor:
    """λ for t < 1, where exp_t has finite support (reference
    `compute_normalization_binary_search`)."""
    mu = activations.amax(-1, keepdim=True)
    normalized = activations - mu
    effective_dim = (normalized > -1.0 / (1.0 - t)).sum(-1, keepdim=True).to(normalized.dtype)
    lower = torch.zeros_like(mu)
    upper = -log_t(1.0 / effective_dim, t)
    for _ in range(num_iters):
        logt_partition = (upper + lower) / 2.0
        sum_probs = exp_t(normalized - logt_partition, t).sum(-1, keepdim=True)
        update = (sum_probs < 1.0).to(normalized.dtype)
        lower = lower * update + (1.0 - update) * logt_partition
        upper = upper * (1.0 - update) + update * logt_partition
    return (upper + lower) / 2.0 + mu


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # bf16/fp16 would lose the fixed point; float64 stays float64 (gradient checks).
    return torch.promote_types(x.dtype, torch.float32)


def tempered_softmax(logits: torch.Tensor, t: float, num_iters: int = 5) -> torch.Tensor:
    """exp_t(a − λ(a)) with λ normalising each row to sum 1 (Amid et al. 2019).

    t > 1: the reference's fixed-point iteration; t < 1: its binary search; t = 1: softmax.
    Computed in float32 at least.
    """
    if t <= 0:
        raise VipnbError(f"t={t!r} is not valid: the tempered softmax needs t > 0")
    activations = logits.to(_compute_dtype(logits))
    if t == 1.0:
        return F.softmax(activations, dim=-1)
    if t < 1.0:
        normalization = _normalization_binary_search(activations, t, num_iters)
    else:
        normalization = _normalization_fixed_point(activations, t, num_iters)
    return exp_t(activations - normalization, t)


class _BiTemperedLoss(torch.autograd.Function):
    """Loss per sample with the reference's explicit gradient (its `grad`): autograd through
    the binary search would see λ as a constant and give a wrong gradient."""

    @staticmethod
    def forward(ctx, activations, labels, t1, t2, num_iters):
        probs = tempered_softmax(activations, t2, num_iters)
        loss = (labels * (log_t(labels + 1e-10, t1) - log_t(probs, t1))
                - (labels.pow(2.0 - t1) - probs.pow(2.0 - t1)) / (2.0 - t1))
        ctx.save_for_backward(probs, labels)
        ctx.t1, ctx.t2 = t1, t2
        return loss.sum(-1)

    @staticmethod
    def backward(ctx, grad_output):
        probs, labels = ctx.saved_tensors
        delta_times_forget = (probs - labels) * probs.pow(ctx.t2 - ctx.t1)
        escorts = probs.pow(ctx.t2)
        escorts = escorts / escorts.sum(-1, keepdim=True)
        derivative = delta_times_forget - escorts * delta_times_forget.sum(-1, keepdim=True)
        return grad_output.unsqueeze(-1) * derivative, None, None, None, None


def bi_tempered_logistic_loss(logits: torch.Tensor, targets: torch.Tensor, t1: float,
                              t2: float, label_smoothing: float = 0.0, num_iters: int = 5,
                              reduction: str = "mean") -> torch.Tensor:
    """Bi-tempered logistic loss, Amid et al. 2019 (fusion-coverage paper eq. 4–5).

    Σ_c [t_c (log_t1(t_c) − log_t1(p_c)) − (t_c^(2−t1) − p_c^(2−t1)) / (2 − t1)] with
    p = tempered_softmax(logits, t2). `targets`: class indices [B] or a probability matrix
    [B, C]. Label smoothing is the reference's: (1 − ls·C/(C−1))·t + ls/(C−1), i.e. 1 − ls on
    the label and ls/(C−1) elsewhere (fusion-coverage eq. 1). At t1 = t2 = 1 it is, like the
    reference, the cross-entropy against the (smoothed) targets. `reduction`: "mean" | "sum"
    over the batch, or "none" for one value per sample. Computed in float32 at least.
    """
    check_reduction(reduction)
    if not 0.0 <= label_smoothing < 1.0:
        raise VipnbError(f"label_smoothing={label_smoothing!r} is not valid: it must lie in [0, 1)")
    dtype = _compute_dtype(logits)
    activations = logits.to(dtype)
    num_classes = logits.shape[-1]
    if targets.dim() == logits.dim() - 1:
        labels = F.one_hot(targets.long(), num_classes).to(dtype)
    else:
        labels = targets.to(dtype)
    if label_smoothing > 0.0:
        labels = ((1 - num_classes / (num_classes - 1) * label_smoothing) * labels
                  + label_smoothing / (num_classes - 1))
    if t1 == 1.0 and t2 == 1.0:
        per_sample = -(labels * F.log_softmax(activations, dim=-1)).sum(-1)
    else:
        per_sample = _BiTemperedLoss.apply(activations, labels, t1, t2, num_iters)
    return reduce(per_sample, reduction)
