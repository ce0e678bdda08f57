"""MoCo v2: momentum-contrast self-supervised pretraining of a timm backbone.

MoCo (He et al. 2020) learns features by picking out the key view of an image among a queue
of keys from earlier batches; MoCo v2 (Chen et al. 2020) adds an MLP projection head,
temperature 0.2, stronger augmentation (`TwoCropTransform`) and a cosine learning rate (the
trainer's business). The query backbone then initialises supervised training
(`MoCo.backbone_state_dict`). Follows facebookresearch/moco (`moco/builder.py`,
`main_moco.py`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vipnb.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_and_resize,
    normalize,
    random_resized_crop_boxes,
)


class MoCo(nn.Module):
    """Query encoder (backbone + projection head), momentum key encoder and queue of keys.

    `forward` returns the InfoNCE loss of MoCo eq. 1, −log exp(q·k₊/τ) / Σ_k exp(q·k/τ),
    over the positive key and the `queue_size` queued negatives. The key encoder is not
    trained: it follows the query encoder by MoCo eq. 2, θ_k ← m θ_k + (1 − m) θ_q, so that
    keys queued over many steps stay comparable.

    Shuffle BN (MoCo §3.3): BatchNorm statistics shared by a query and its own key let the
    model find its positive by them instead of by content. The reference computes BN per GPU
    and the keys on a shuffled batch; here `bn_groups` GPUs are emulated on one device: both
    views are forwarded in that many groups, the key view after a random permutation that is
    undone afterwards (1 turns it off). One process: keys are not gathered across ranks.

    `backbone` is a timm model made with `num_classes=0` (pooled features of `feature_dim`).
    The key encoder's parameters get no gradients, so optimisers given `parameters()` skip
    them.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, dim: int = 128,
                 queue_size: int = 4096, momentum: float = 0.999, temperature: float = 0.2,
                 mlp: bool = True, bn_groups: int = 2):
        super().__init__()
        self.momentum = momentum
        self.temperature = temperature
        self.bn_groups = bn_groups
        if mlp:  # MoCo v2
            head = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(),
                                 nn.Linear(feature_dim, dim))
        else:  # MoCo v1
            head = nn.Linear(feature_dim, dim)
        self.encoder_q = nn.Sequential(OrderedDict(backbone=backbone, head=head))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.encoder_k.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """MoCo eq. 2 on the parameters; buffers (BN running statistics) are copied."""
        for p_k, p_q in zip(self.encoder_k.parameters(), self.encoder_q.parameters(),
                            strict=True):
            p_k.mul_(self.momentum).add_(p_q.detach(), alpha=1 - self.momentum)
        for b_k, b_q in zip(self.encoder_k.buffers(), self.encoder_q.buffers(), strict=True):
            b_k.copy_(b_q)

    def _grouped(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(group) for group in images.chunk(self.bn_groups)])

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor) -> torch.Tensor:
        """InfoNCE loss (MoCo eq. 1) of a batch of two views; then its keys join the queue."""
        q = F.normalize(self._grouped(self.encoder_q, view_q), dim=1)
        with torch.no_grad():
            self.momentum_update()  # with the current query weights, before the keys
            if self.bn_groups > 1:
                perm = torch.randperm(len(view_k), device=view_k.device)
                k = self._grouped(self.encoder_k, view_k[perm])[torch.argsort(perm)]
            else:
                k = self.encoder_k(view_k)
            k = F.normalize(k, dim=1)
        # clone: the queue changes in place below but backward still needs this one.
        negatives = q @ self.queue.clone()
        logits = torch.cat([(q * k).sum(1, keepdim=True), negatives], dim=1)
        labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits / self.temperature, labels)
        self._enqueue(k)
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write the keys over the oldest ones, wrapping around the end of the queue."""
        size = self.queue.shape[1]
        n = len(keys)
        keys = keys[-size:]  # a batch larger than the queue keeps only its last keys
        slots = (self.queue_ptr + n - len(keys) + torch.arange(len(keys), device=keys.device))
        self.queue[:, slots % size] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The query backbone's weights, for a timm model of the same architecture
        (`load_state_dict(..., strict=False)` leaves its classifier as initialised)."""
        return self.encoder_q.backbone.state_dict()


@dataclass(frozen=True)
class TwoCropTransform:
    """Two independently augmented, normalised float views of every image of a uint8 batch
    [N, 3, H, W], as MoCo v2's `aug_plus` makes them per PIL image: RandomResizedCrop
    (scale 0.2–1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 (its four ops in a random order
    per image, as torchvision's), RandomGrayscale p 0.2, Gaussian blur σ ∈ [0.1, 2] with
    p 0.5, horizontal flip p 0.5. Tensor ops on the batch's device, every draw from
    `generator` (CPU), so a seed reproduces the views.

    The blur kernel spans about 10 % of `input_size` (as SimCLR's) where MoCo's PIL blur has
    unbounded support; the colour ops work on floats where PIL rounds to uint8 after each.
    """

    input_size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def blur_kernel_size(self) -> int:
        return max(3, int(0.1 * self.input_size) // 2 * 2 + 1)

    def __call__(self, batch: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = batch.shape
        m = 2 * n  # both views of every image go through as one batch
        boxes = random_resized_crop_boxes(m, height, width, self.scale, self.ratio, generator)
        # Columns: apply jitter, grayscale, blur, flip; blur sigma.
        draws = torch.rand(m, 5, generator=generator)
        low = torch.tensor([max(0.0, 1 - self.jitter)] * 3 + [-self.hue])
        high = torch.tensor([1 + self.jitter] * 3 + [self.hue])
        factors = low + (high - low) * torch.rand(m, 4, generator=generator)
        order = torch.rand(m, 4, generator=generator).argsort(dim=1)
        device = batch.device
        draws, factors, order = draws.to(device), factors.to(device), order.to(device)

        images = crop_and_resize(torch.cat([batch, batch]), boxes.to(device), self.input_size)
        if self.jitter_p > 0:
            images = _where(draws[:, 0] < self.jitter_p, color_jitter(images, factors, order),
                            images)
        if self.grayscale_p > 0:
            images = _where(draws[:, 1] < self.grayscale_p,
                            rgb_to_grayscale(images).expand_as(images), images)
        if self.blur_p > 0:
            low_s, high_s = self.blur_sigma
            sigma = low_s + (high_s - low_s) * draws[:, 4]
            images = _where(draws[:, 2] < self.blur_p,
                            gaussian_blur(images, sigma, self.blur_kernel_size), images)
        images = _where(draws[:, 3] < self.hflip, images.flip(-1), images)
        view_q, view_k = normalize(images, self.mean, self.std).chunk(2)
        return view_q, view_k


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: `a` where `mask` [N], else `b`."""
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] → [N, 1, H, W] luma with torchvision's weights."""
    r, g, b = images.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of image i by `shift[i]` turns through HSV, as torchvision's adjust_hue
    (images in 0..255; HSV is scale-free but for V)."""
    r, g, b = images.unbind(1)
    minc, maxc = torch.aminmax(images, dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, 1.0)  # grey pixels: s = 0, so h does not matter
    h = torch.where(maxc == r, (g - b) / safe,
                    torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = (h / 6 + shift.view(-1, 1, 1)).remainder(1.0)
    s = delta / torch.where(maxc > 0, maxc, 1.0)
    # HSV → RGB: channel c is v·(1 − s·clamp(min(k, 4 − k), 0, 1)), k = (n_c + 6h) mod 6.
    n_c = torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1)
    k = (n_c + 6 * h.unsqueeze(1)).remainder(6.0)
    weight = torch.minimum(k, 4 - k).clamp(0, 1)
    return maxc.unsqueeze(1) * (1 - s.unsqueeze(1) * weight)


def color_jitter(images: torch.Tensor, factors: torch.Tensor,
                 order: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter on 0..255 float images with per-image factors [N, 4]
    (brightness, contrast, saturation, hue) applied in a per-image order [N, 4] (a
    permutation of 0..3). Brightness, contrast and saturation blend with black, the mean
    grey and the grey image, clamped after each op as torchvision does."""
    for step in range(4):
        op = order[:, step].view(-1, 1, 1, 1)
        factor = factors.gather(1, order[:, step:step + 1]).view(-1, 1, 1, 1)
        gray = rgb_to_grayscale(images)
        target = torch.where(op == 0, 0.0, torch.where(
            op == 1, gray.mean(dim=(1, 2, 3), keepdim=True), gray))
        blended = (factor * images + (1 - factor) * target).clamp(0, 255)
        images = torch.where(op == 3, adjust_hue(images, factor.view(-1)), blended)
    return images


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur image i with a Gaussian of std `sigma[i]`: separable, reflect padding, as
    torchvision's gaussian_blur; one grouped convolution per direction for the batch."""
    n, c, height, width = images.shape
    radius = kernel_size // 2
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma.view(-1, 1).to(images.dtype)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)
    flat = F.pad(images.reshape(1, n * c, height, width), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    return flat.view(n, c, height, width)


@torch.no_grad()
def knn_top1(train_features: torch.Tensor, train_labels: torch.Tensor,
             query_features: torch.Tensor, query_labels: torch.Tensor, k: int = 20,
             temperature: float = 0.07) -> float:
    """Top-1 accuracy of a weighted kNN classifier on frozen features (InstDisc, Wu et al.
    2018; the MoCo monitor): each query's `k` most cosine-similar training features vote for
    their labels with weight exp(sim / temperature). Tracks self-supervised training with
    labels that never enter its loss."""
    train = F.normalize(train_features.float(), dim=1)
    train_labels = train_labels.to(train.device)
    num_classes = int(train_labels.max()) + 1
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(query_features), 1024):  # bounds the similarity matrix
        query = F.normalize(query_features[start:start + 1024].float().to(train.device), dim=1)
        sim, idx = (query @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(query), num_classes, device=train.device)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        labels = query_labels[start:start + 1024].to(train.device)
        correct += int((votes.argmax(1) == labels).sum())
    return correct / len(query_features)
