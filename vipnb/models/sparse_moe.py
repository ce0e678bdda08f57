"""Sparsely-gated mixture of experts (Shazeer et al. 2017, "Outrageously Large Neural Networks"),
with one gate per task (multi-gate MoE, Ma et al. 2018, "MMoE") as the MTL-MoE poster uses it.

The gate (§2.1, eq. 3–5) keeps each sample's top k experts; two auxiliary losses (Appendix A,
eq. 6–10) keep the experts in use: the importance loss balances the summed gate values, the load
loss balances a smooth estimate of how many samples each expert receives. All experts run on
every sample ([B, E, D], fine for the handful of experts the poster uses); an expert outside a
sample's top k gets weight 0, hence neither a contribution nor a gradient from that sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vipnb.errors import VipnbError

#: Shazeer et al. use w_importance = w_load = 0.1 (Appendix A and the language-model runs);
#: tensor2tensor's and the common PyTorch port's `loss_coef` is 0.01. We follow the paper.
DEFAULT_AUX_WEIGHT = 0.1
#: Added to the noise scale Softplus(x·W_noise) as tensor2tensor does, so Φ never divides by 0.
NOISE_EPSILON = 1e-2
_CV_EPSILON = 1e-10


class GateOutput(NamedTuple):
    """G(x) [B, E] and what the load loss needs: x·W_g, H(x) and the noise scale
    (`noisy_logits` and `noise_stddev` are None when the gate adds no noise)."""

    gates: torch.Tensor
    clean_logits: torch.Tensor
    noisy_logits: torch.Tensor | None
    noise_stddev: torch.Tensor | None


class NoisyTopKGate(nn.Module):
    """Noisy top-k gating (Shazeer et al. 2017, eq. 3–5).

    H(x)_i = (x·W_g)_i + StandardNormal()·Softplus((x·W_noise)_i)   (eq. 4; training only)
    G(x) = Softmax(KeepTopK(H(x), k))                                (eq. 3, 5)
    KeepTopK sets entries outside the top k to −∞, so exactly k experts get non-zero weight;
    we softmax the k kept values and scatter them, which is the same. W_g and W_noise start at
    zero as in the paper (uniform routing; in training the noise breaks the ties).
    """

    def __init__(self, in_features: int, num_experts: int, k: int, noise: bool = True):
        super().__init__()
        check_top_k(k, num_experts)
        self.k = k
        self.noise = noise
        self.w_gate = nn.Linear(in_features, num_experts, bias=False)
        self.w_noise = nn.Linear(in_features, num_experts, bias=False)
        nn.init.zeros_(self.w_gate.weight)
        nn.init.zeros_(self.w_noise.weight)

    def forward(self, x: torch.Tensor) -> GateOutput:
        clean = self.w_gate(x)
        noisy = stddev = None
        logits = clean
        if self.noise and self.training:
            stddev = F.softplus(self.w_noise(x)) + NOISE_EPSILON
            noisy = clean + torch.randn_like(clean) * stddev
            logits = noisy
        top_values, top_indices = logits.topk(self.k, dim=1)
        gates = torch.zeros_like(logits).scatter(1, top_indices, top_values.softmax(dim=1))
        return GateOutput(gates, clean, noisy, stddev)


def check_top_k(k: int, num_experts: int) -> None:
    if num_experts < 1 or not 1 <= k <= num_experts:
        raise VipnbError(f"k={k} with num_experts={num_experts}: a sparse gate keeps 1 to "
                         "num_experts experts per sample; choose 1 <= k <= num_experts")


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """CV(v)² = variance / mean² (population variance as in Shazeer's code; 0 for one value)."""
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    if values.numel() < 2:
        return values.sum() * 0.0
    return values.var(unbiased=False) / (values.mean() ** 2 + _CV_EPSILON)


def importance_loss(gates: torch.Tensor) -> torch.Tensor:
    """CV(Importance(X))² with Importance(X)_i = Σ_x G(x)_i (Shazeer et al. eq. 6, without
    w_importance, which the caller applies). `gates` is [B, E]."""
    return cv_squared(gates.sum(dim=0))


def load_loss(clean_logits: torch.Tensor, noisy_logits: torch.Tensor | None,
              noise_stddev: torch.Tensor | None, gates: torch.Tensor, k: int) -> torch.Tensor:
    """CV(Load(X))² (Shazeer et al. eq. 8–11, without w_load), all arguments [B, E].

    Load(X)_i = Σ_x P(x, i), the smooth estimate of how many samples expert i receives:
    P(x, i) = Φ(((x·W_g)_i − kth_excluding(H(x), k, i)) / Softplus((x·W_noise)_i)) (eq. 9),
    the probability that i stays in the top k if only its own noise is redrawn.
    kth_excluding(H, k, i), the k-th largest of H without component i, is the (k+1)-th largest
    of H when i is in the top k and the k-th largest otherwise. Without noise (evaluation or
    noise off) Load is the non-differentiable count of non-zero gates, as in Shazeer's code.
    With k == E every expert always gets every sample: the loss is 0.
    """
    num_experts = clean_logits.shape[1]
    if k >= num_experts:
        return clean_logits.sum() * 0.0
    if noisy_logits is None or noise_stddev is None:
        return cv_squared((gates > 0).sum(dim=0))
    top_values = noisy_logits.topk(k + 1, dim=1).values
    threshold_if_in = top_values[:, k:k + 1]     # (k+1)-th largest: i is among the top k
    threshold_if_out = top_values[:, k - 1:k]    # k-th largest: i is outside the top k
    is_in = noisy_logits > threshold_if_in
    threshold = torch.where(is_in, threshold_if_in, threshold_if_out)
    prob = standard_normal_cdf((clean_logits - threshold) / noise_stddev)
    return cv_squared(prob.sum(dim=0))


def standard_normal_cdf(z: torch.Tensor) -> torch.Tensor:
    """Φ(z) = (1 + erf(z / √2)) / 2."""
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def expert_mlp(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Module:
    """One expert: Linear → ReLU → Dropout → Linear."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, out_features))


class MoEOutput(NamedTuple):
    """One combined output [B, D] per gate, the weighted auxiliary loss summed over the gates,
    and each gate's G(x) [B, E] (for routing plots)."""

    outputs: tuple[torch.Tensor, ...]
    aux_loss: torch.Tensor
    gates: tuple[torch.Tensor, ...]


class SparseMoE(nn.Module):
    """E experts of one shape with independent weights, combined by `num_gates` noisy top-k gates.

    y_t = Σ_i G_t(x)_i E_i(x) for every gate t (Shazeer et al. eq. 1; one gate per task as in
    MMoE, Ma et al. 2018). aux_loss = Σ_t w_importance·L_importance + w_load·L_load
    (Shazeer et al. eq. 7 and 11). `make_expert`, if given, builds each expert (a module mapping
    [B, in_features] to [B, out_features]) instead of the default MLP with `hidden` units.
    """

    def __init__(self, in_features: int, out_features: int, num_experts: int, k: int,
                 num_gates: int = 1, hidden: int | None = None, dropout: float = 0.0,
                 noise: bool = True, w_importance: float = DEFAULT_AUX_WEIGHT,
                 w_load: float = DEFAULT_AUX_WEIGHT,
                 make_expert: Callable[[], nn.Module] | None = None):
        super().__init__()
        check_top_k(k, num_experts)
        if num_gates < 1:
            raise VipnbError(f"num_gates={num_gates}: a mixture of experts needs at least one "
                             "gate (one per task)")
        if make_expert is None:
            width = hidden or out_features
            make_expert = lambda: expert_mlp(in_features, width, out_features, dropout)  # noqa: E731
        self.k = k
        self.w_importance = w_importance
        self.w_load = w_load
        self.experts = nn.ModuleList(make_expert() for _ in range(num_experts))
        self.gates = nn.ModuleList(NoisyTopKGate(in_features, num_experts, k, noise)
                                   for _ in range(num_gates))

    def forward(self, x: torch.Tensor) -> MoEOutput:
        expert_outputs = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, D]
        outputs, gates, aux_loss = [], [], x.new_zeros((), dtype=torch.float32)
        for gate in self.gates:
            routed = gate(x)
            weights = routed.gates.to(expert_outputs.dtype)
            outputs.append(torch.einsum("be,bed->bd", weights, expert_outputs))
            gates.append(routed.gates)
            load = load_loss(routed.clean_logits, routed.noisy_logits, routed.noise_stddev,
                             routed.gates, self.k)
            aux_loss = aux_loss + self.w_importance * importance_loss(routed.gates) \
                + self.w_load * load
        return MoEOutput(tuple(outputs), aux_loss, tuple(gates))
