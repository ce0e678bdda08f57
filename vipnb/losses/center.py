"""Center loss (VIPF paper eq. 6; Wen, Zhang, Li & Qiao, ECCV 2016, "A Discriminative Feature
Learning Approach for Deep Face Recognition").

L_C = ½ Σ_i ‖x_i − c_{y_i}‖² pulls each deep feature towards its class centre. By default
(`reduction="mean"`) we average over the batch, L_C = (1/B) Σ_i ½ ‖x_i − c_{y_i}‖², so its
weight (β in the VIPF paper's eq. 3) does not depend on the batch size. The centres are not
learned by the optimizer: as in Wen et al. (their eq. 4) each training step moves the centres
of the classes in the batch,
Δc_j = Σ_{i: y_i = j} (c_j − x_i) / (1 + n_j),  c_j ← c_j − α·Δc_j,
with n_j the number of samples of class j in the batch, using the centres from before the step
for the loss. The centres are a buffer (saved in the state dict, start at zero) and move only
in training mode.
"""

from __future__ import annotations

import torch
from torch import nn

from vipnb.errors import VipnbError
from vipnb.losses._reduction import check_reduction, compute_dtype, reduce


class CenterLoss(nn.Module):
    """Center loss over `num_classes` centres of `feature_dim`-dimensional features.

    `alpha` is Wen et al.'s centre learning rate (0 < alpha ≤ 1). `forward(features, labels)`
    takes features [B, feature_dim] and labels as class indices [B] or soft targets [B, C]
    (smoothed or mixed labels); with soft targets the loss is (1/B) Σ_i ½ Σ_c t_ic ‖x_i − c_c‖²
    and the centre update uses each sample's argmax class. `reduction` ("mean" | "sum" |
    "none") is over the batch, as in `nn.MSELoss`; computed in float32 at least.
    """

    centers: torch.Tensor

    def __init__(self, num_classes: int, feature_dim: int, alpha: float = 0.5,
                 reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        if num_classes < 1 or feature_dim < 1:
            raise VipnbError(f"CenterLoss needs num_classes ≥ 1 and feature_dim ≥ 1, got "
                             f"num_classes={num_classes}, feature_dim={feature_dim}")
        if not 0.0 < alpha <= 1.0:
            raise VipnbError(f"CenterLoss alpha={alpha} is outside (0, 1]; Wen et al. use 0.5")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.alpha = alpha
        self.reduction = reduction
        self.register_buffer("centers", torch.zeros(num_classes, feature_dim))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, feature_dim={self.feature_dim}, "
                f"alpha={self.alpha}, reduction={self.reduction!r}")

    def _check(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.feature_dim:
            raise VipnbError(f"CenterLoss features must be [B, {self.feature_dim}], got shape "
                             f"{tuple(features.shape)}; pass the pooled features the classifier sees")
        batch = features.shape[0]
        if labels.dim() == 1:
            if labels.shape[0] != batch:
                raise VipnbError(f"CenterLoss got {labels.shape[0]} labels for {batch} features")
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise VipnbError(f"CenterLoss labels must lie in [0, {self.num_classes}), got "
                                 f"{labels.min().item()}..{labels.max().item()}")
        elif labels.dim() != 2 or tuple(labels.shape) != (batch, self.num_classes):
            raise VipnbError(f"CenterLoss soft targets must be [{batch}, {self.num_classes}], "
                             f"got shape {tuple(labels.shape)}")

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """½‖x_i − c_{y_i}‖² per sample (eq. 6), reduced over the batch; in training mode the
        centres then move."""
        self._check(features, labels)
        x = features.to(compute_dtype(features))
        centers = self.centers.to(x.dtype, copy=True)  # the update below moves the buffer
        if labels.dim() == 1:
            hard = labels.long()
            loss = 0.5 * (x - centers[hard]).pow(2).sum(1)
        else:
            targets = labels.to(x.dtype)
            sq = (x.pow(2).sum(1, keepdim=True) - 2 * x @ centers.t()
                  + centers.pow(2).sum(1)).clamp_min(0)  # [B, C] ‖x_i − c_c‖²
            loss = 0.5 * (targets * sq).sum(1)
            hard = labels.argmax(1)
        if self.training and x.shape[0]:
            self._update(x.detach(), hard)
        return reduce(loss, self.reduction)

    @torch.no_grad()
    def _update(self, x: torch.Tensor, hard: torch.Tensor) -> None:
        """Wen et al.'s eq. 4: c_j ← c_j − α Σ_{i: y_i=j}(c_j − x_i) / (1 + n_j)."""
        counts = torch.bincount(hard, minlength=self.num_classes).to(x.dtype)  # n_j
        sums = torch.zeros_like(self.centers, dtype=x.dtype).index_add_(0, hard, x)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Under DDP every process moves the centres by the whole global batch: they stay equal.
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        delta = (counts[:, None] * self.centers.to(x.dtype) - sums) / (1 + counts[:, None])
        self.centers.sub_((self.alpha * delta).to(self.centers.dtype))
