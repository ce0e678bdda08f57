"""DSB focal loss: a sigmoid focal loss re-weighted by each class's semantic scale
(fusion-coverage paper §II.D, eq. 7–8).

The fusion-coverage paper withheld how the semantic scale S_i is computed; its authors published
it as Ma, Jiao, Liu, Li, Yang & Liu, "Delving into Semantic Scale Imbalance", ICLR 2023
(arXiv 2212.14613). From its abstract and framework figure: the semantic scale measures a
class's feature diversity as the volume its features span; the loss re-weights classes by it,
recomputed during training from a storage pool of the latest features (features drift slowly,
so recent iterations' features stand in for the current model's). The formula as code,
S = ½ log₂ det(I + (d/m)·(Z − Z̄)(Z − Z̄)ᵀ) with features centred on their mean, is the authors'
own `calculate_volume` (mayanbiao1234/Geometric-metrics-for-perceptual-manifolds, README
"Volume metrics ... (ICLR 2023)"; PyPI `perceptual-manifold-geometry` 0.1.4).

Our choices where the paper's full text was not at hand: features are L2-normalised first,
d is the feature dimension, the pool is a per-class ring buffer of `store_size` features, and
the weights are (1/S_i)^alpha scaled to mean 1; no sample-count correction of S is applied
(full buffers hold the same m for every class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from vipnb.errors import VipnbError
from vipnb.losses._reduction import check_reduction, compute_dtype, reduce


def _batched_scale(features: torch.Tensor, mask: torch.Tensor, d: float | None,
                   normalize: bool) -> torch.Tensor:
    """Semantic scale of each [N, dim] slice of `features` [K, N, dim] over its `mask`ed rows."""
    z = features.to(torch.promote_types(features.dtype, torch.float32))
    if normalize:
        z = F.normalize(z, dim=-1)
    weight = mask.to(z.dtype).unsqueeze(-1)
    m = weight.sum(1, keepdim=True).clamp_min(1.0)  # [K, 1, 1]
    z = (z - (z * weight).sum(1, keepdim=True) / m) * weight  # masked rows → 0
    scale = float(z.shape[-1]) if d is None else float(d)
    # det(I_dim + c·ZᵀZ) = det(I_N + c·ZZᵀ) (Sylvester): the N×N Gram matrix is the small one;
    # a masked (zero) row adds an identity row and leaves the determinant alone.
    gram = ((scale / m) * z @ z.transpose(1, 2)).double()  # small [K, N, N]: log det in float64
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return 0.5 * torch.linalg.slogdet(eye + gram).logabsdet / torch.log(gram.new_tensor(2.0))


def semantic_scale(features: torch.Tensor, d: float | None = None,
                   normalize: bool = True) -> torch.Tensor:
    """S(Z) = ½ log₂ det(I + (d/m)·(Z − Z̄)(Z − Z̄)ᵀ) of one class's features [m, dim]
    (Ma et al. 2023, semantic scale; centring and log₂ as in the authors' code).

    `normalize` first puts each feature on the unit sphere, so the scale measures how the
    features spread in direction, not their norms. `d` defaults to the feature dimension (the
    paper's d/m); the authors' later package exposes it as a factor with default 1.0.
    Returns a float64 scalar; it grows as the features spread and is 0 for identical ones.
    """
    if features.dim() != 2:
        raise VipnbError(f"features must be [m, dim], got shape {tuple(features.shape)}")
    mask = torch.ones(1, features.shape[0], dtype=torch.bool, device=features.device)
    return _batched_scale(features.unsqueeze(0), mask, d, normalize)[0]


class SemanticScaleStore(nn.Module):
    """Per-class ring buffer of the last `store_size` feature vectors and the class weights
    they give (Ma et al. 2023, dynamic semantic-scale-balanced learning).

    `update(features, labels)` after each training step (features are detached; the feature
    size is taken from the first batch unless `feature_dim` is given); `class_weights()` →
    [C] weights w_i ∝ (1/S_i)^alpha with mean 1 over the classes that hold at least 2
    features; every other class gets 1, the mean. Buffers are registered, so the store moves
    with `.to(device)` and is saved in a `state_dict`.
    """

    def __init__(self, num_classes: int, store_size: int = 64, feature_dim: int | None = None,
                 alpha: float = 1.0, d: float | None = None, normalize: bool = True,
                 min_scale: float = 1e-6):
        super().__init__()
        if store_size < 2:
            raise VipnbError(f"store_size={store_size} is too small: a semantic scale needs "
                             "at least 2 features per class")
        self.alpha, self.d, self.normalize, self.min_scale = alpha, d, normalize, min_scale
        self.register_buffer("bank", torch.zeros(num_classes, store_size, feature_dim or 0))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("cursor", torch.zeros(num_classes, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "bank")
        if saved is not None and self.bank.shape[-1] == 0:  # not sized yet: take the saved size
            self.bank = self.bank.new_zeros(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Push `features` [B, dim] under `labels` [B] (indices; a [B, C] target counts for its
        largest entry); each class keeps only its latest `store_size`."""
        if labels.dim() == 2:
            labels = labels.argmax(-1)
        if self.bank.shape[-1] == 0:
            self.bank = self.bank.new_zeros(*self.bank.shape[:2], features.shape[-1])
        if features.shape[-1] != self.bank.shape[-1]:
            raise VipnbError(f"features have {features.shape[-1]} dimensions, the store holds "
                             f"{self.bank.shape[-1]}: use one store per feature layer")
        features = features.detach().to(self.bank)
        labels = labels.to(self.bank.device).long()
        num_classes, size = self.bank.shape[:2]
        # Rank of each sample among its class's samples in this batch: no per-class Python loop.
        order = torch.argsort(labels, stable=True)
        per_class = torch.bincount(labels, minlength=num_classes)
        starts = per_class.cumsum(0) - per_class
        rank = torch.empty_like(labels)
        rank[order] = torch.arange(len(labels), device=labels.device) - starts[labels[order]]
        skipped = (per_class[labels] - size).clamp_min(0)  # older rows that do not fit
        keep = rank >= skipped
        slots = (self.cursor[labels] + rank - skipped) % size
        self.bank[labels[keep], slots[keep]] = features[keep]
        self.cursor.add_(per_class.clamp_max(size)).remainder_(size)
        self.count.add_(per_class).clamp_max_(size)

    def features(self, cls: int) -> torch.Tensor:
        """The stored features of class `cls`, [n, dim], in no particular order."""
        return self.bank[cls, : int(self.count[cls])]

    def scales(self) -> torch.Tensor:
        """[C] semantic scales (float64); NaN for classes with fewer than 2 features."""
        size = self.bank.shape[1]
        mask = torch.arange(size, device=self.bank.device) < self.count.unsqueeze(1)
        scales = torch.cat([  # chunks of classes bound the memory of the normalised copy
            _batched_scale(bank, part, self.d, self.normalize)
            for bank, part in zip(self.bank.split(128), mask.split(128), strict=True)])
        return scales.masked_fill(self.count < 2, float("nan"))

    def class_weights(self) -> torch.Tensor:
        """[C] float32 weights ∝ (1/S_i)^alpha, mean 1 over the classes with a scale."""
        scales = self.scales()
        known = ~scales.isnan()
        weights = torch.ones_like(scales)
        if known.any():
            inverse = scales[known].clamp_min(self.min_scale).reciprocal().pow(self.alpha)
            weights[known] = inverse / inverse.mean()
        return weights.float()


def dsb_focal_loss(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor,
                   gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """DSB focal loss, fusion-coverage paper eq. 8: −(1/S_y) Σ_c (1 − p_t,c)^γ log p_t,c.

    The sum is eq. 7's one-vs-all sigmoid focal loss over the C classes (p = sigmoid(logits),
    p_t = p for the target class and 1 − p elsewhere; torchvision's `sigmoid_focal_loss` with
    no α term); each sample's sum is weighted by its true class's weight, `class_weights[y]`
    (e.g. `SemanticScaleStore.class_weights()`, the normalised 1/S). Soft targets [B, C] are
    the binary targets of the focal loss and weight the sample by Σ_c t_c w_c.
    `reduction`: "mean" | "sum" over the batch, or "none" for one value per sample. Computed
    in float32 at least.
    """
    check_reduction(reduction)
    if gamma < 0:
        raise VipnbError(f"gamma={gamma!r} is not valid: the focusing parameter must be >= 0")
    num_classes = logits.shape[-1]
    if class_weights.shape != (num_classes,):
        raise VipnbError(f"class_weights has shape {tuple(class_weights.shape)}, expected "
                         f"({num_classes},): one weight per class")
    logits = logits.to(compute_dtype(logits))
    if targets.dim() == logits.dim() - 1:
        binary = F.one_hot(targets.long(), num_classes).to(logits.dtype)
    else:
        binary = targets.to(logits.dtype)
    per_class = sigmoid_focal_loss(logits, binary, alpha=-1, gamma=gamma, reduction="none")
    sample_weight = binary @ class_weights.to(logits)
    return reduce(sample_weight * per_class.sum(-1), reduction)
