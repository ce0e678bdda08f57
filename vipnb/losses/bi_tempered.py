"""Bi-tempered logistic loss (fusion-coverage paper §II.B.3, eq. 4–5).

Amid, Warmuth, Anil & Koren (2019, "Robust Bi-Tempered Logistic Loss Based on Bregman
Divergences"): a temperature t1 < 1 bounds the loss (robust to outliers and wrong labels), a
temperature t2 > 1 gives the tempered softmax a heavier tail. A port of Google's reference
implementation, google/bi-tempered-loss (`tensorflow/loss.py`, `jax/loss.py`): the same
normalisation (fixed point for t > 1, binary search for t < 1), label smoothing, loss formula
and explicit gradient, so it reproduces that repository's test values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipnb.errors import VipnbError
from vipnb.losses._reduction import check_reduction, compute_dtype, reduce

EPS = 1e-10  # the reference's guard in log_t(labels + EPS): finite where a label is 0


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


def _tempered_softmax_vjp(probs: torch.Tensor, grad_probs: torch.Tensor,
                          t: float) -> torch.Tensor:
    """Gradient through p = exp_t(a − λ(a)) with λ the exact normaliser (implicit function):
    dp_c = p_c^t (da_c − dλ), and Σ_c dp_c = 0 gives dλ = Σ_c e_c da_c, e = p^t / Σ p^t."""
    weighted = probs.pow(t)
    escorts = weighted / weighted.sum(-1, keepdim=True)
    return weighted * grad_probs - escorts * (weighted * grad_probs).sum(-1, keepdim=True)


class _TemperedSoftmaxBelowOne(torch.autograd.Function):
    """exp_t(a − λ(a)) for t < 1. The binary search's λ is piecewise constant in a, so
    autograd through it misses how λ moves with a; the gradient is the implicit one."""

    @staticmethod
    def forward(ctx, activations, t, num_iters):
        probs = exp_t(activations - _normalization_binary_search(activations, t, num_iters), t)
        ctx.save_for_backward(probs)
        ctx.t = t
        return probs

    @staticmethod
    def backward(ctx, grad_probs):
        (probs,) = ctx.saved_tensors
        return _tempered_softmax_vjp(probs, grad_probs, ctx.t), None, None


def tempered_softmax(logits: torch.Tensor, t: float, num_iters: int = 5) -> torch.Tensor:
    """exp_t(a − λ(a)) with λ normalising each row to sum 1 (Amid et al. 2019; eq. 5).

    t > 1: the reference's fixed-point iteration (autograd follows its iterations); t < 1:
    its binary search, with the implicit-function gradient of the exact normaliser; t = 1:
    softmax. Computed in float32 at least.
    """
    if t <= 0:
        raise VipnbError(f"t={t!r} is not valid: the tempered softmax needs t > 0")
    activations = logits.to(compute_dtype(logits))
    if t == 1.0:
        return F.softmax(activations, dim=-1)
    if t < 1.0:
        return _TemperedSoftmaxBelowOne.apply(activations, t, num_iters)
    normalization = _normalization_fixed_point(activations, t, num_iters)
    return exp_t(activations - normalization, t)


class _BiTemperedLoss(torch.autograd.Function):
    """Loss per sample with the reference's explicit gradient for the logits (its `grad`):
    autograd through the normalisation would see λ as a constant. Soft labels y get
    ∂L/∂y = log_t1(y + ε) + y (y + ε)^(−t1) − log_t1(p) − y^(1−t1), the derivative of the
    same formula (the reference gives them none)."""

    @staticmethod
    def forward(ctx, activations, labels, t1, t2, num_iters):
        probs = tempered_softmax(activations, t2, num_iters)
        loss = (labels * (log_t(labels + EPS, t1) - log_t(probs, t1))
                - (labels.pow(2.0 - t1) - probs.pow(2.0 - t1)) / (2.0 - t1))
        ctx.save_for_backward(probs, labels)
        ctx.t1, ctx.t2 = t1, t2
        return loss.sum(-1)

    @staticmethod
    def backward(ctx, grad_output):
        probs, labels = ctx.saved_tensors
        t1, t2 = ctx.t1, ctx.t2
        grad_output = grad_output.unsqueeze(-1)
        delta_times_forget = (probs - labels) * probs.pow(t2 - t1)
        escorts = probs.pow(t2)
        escorts = escorts / escorts.sum(-1, keepdim=True)
        derivative = delta_times_forget - escorts * delta_times_forget.sum(-1, keepdim=True)
        grad_labels = None
        if ctx.needs_input_grad[1]:
            grad_labels = grad_output * (
                log_t(labels + EPS, t1) + labels * (labels + EPS).pow(-t1)
                - log_t(probs, t1) - labels.pow(1.0 - t1))
        return grad_output * derivative, grad_labels, None, None, None


def _relative_entropy(activations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss at t1 = t2 = 1, the formula's limit: Σ y (log(y + ε) − log softmax(a)) − (Σ y − 1),
    i.e. KL(y ‖ softmax(a)) for normalised y; log_softmax stays finite where p underflows."""
    return ((labels * (torch.log(labels + EPS) - F.log_softmax(activations, dim=-1))).sum(-1)
            + (1 - labels.sum(-1)))


def bi_tempered_logistic_loss(logits: torch.Tensor, targets: torch.Tensor, t1: float,
                              t2: float, label_smoothing: float = 0.0, num_iters: int = 5,
                              reduction: str = "mean") -> torch.Tensor:
    """Bi-tempered logistic loss, Amid et al. 2019 (fusion-coverage paper eq. 4–5).

    Σ_c [y_c (log_t1(y_c + ε) − log_t1(p_c)) − (y_c^(2−t1) − p_c^(2−t1)) / (2 − t1)] with
    p = tempered_softmax(logits, t2): a Bregman divergence between targets and prediction, 0
    when p = y. `targets`: class indices [B] or a probability matrix [B, C] (which get
    gradients). Label smoothing is the reference's: (1 − ls·C/(C−1))·y + ls/(C−1), i.e.
    1 − ls on the label and ls/(C−1) elsewhere (fusion-coverage eq. 1).

    The loss is continuous in t1 and t2: at t1 = t2 = 1 it is KL(y ‖ softmax(logits)), the
    cross-entropy minus the targets' entropy, as in the reference's JAX code and its original
    TensorFlow code (its TensorFlow code since December 2020 returns the cross-entropy there
    instead, a jump at 1 for soft targets). For one-hot targets both are the cross-entropy.
    `reduction`: "mean" | "sum" over the batch, or "none" for one value per sample. Computed
    in float32 at least.
    """
    check_reduction(reduction)
    if not 0.0 <= label_smoothing < 1.0:
        raise VipnbError(f"label_smoothing={label_smoothing!r} is not valid: it must lie in [0, 1)")
    dtype = compute_dtype(logits)
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
        per_sample = _relative_entropy(activations, labels)
    else:
        per_sample = _BiTemperedLoss.apply(activations, labels, t1, t2, num_iters)
    return reduce(per_sample, reduction)
