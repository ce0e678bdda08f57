"""Training and evaluation transforms applied to whole uint8 batches as tensor ops.

The per-image PIL pipeline of torchvision/timm (RandomResizedCrop, RandomHorizontalFlip,
Normalize) is reproduced batch-wide on the device that trains: crops are sampled with
torchvision's algorithm and cut out and resized in one call of torchvision's roi_align kernel.
AutoAugment and the fusion-coverage paper's vertical flip, colour jitter and Gaussian noise,
when asked for, run batched too (`vipnb.data.autoaugment`, `vipnb.data.photometric`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)

from vipnb.data.autoaugment import AutoAugmentDraws, BatchAutoAugment
from vipnb.data.photometric import BatchPhotometric, PhotometricDraws
from vipnb.errors import VipnbError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# "" is off; "original" is AutoAugment's ImageNet policy (Cubuk et al. 2019).
AUTO_AUGMENT_CHOICES = ("", "original")


@dataclass(frozen=True)
class TrainTransform:
    input_size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    auto_augment: str = ""
    vflip: float = 0.0
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    gaussian_noise: float = 0.0
    _auto_augment: BatchAutoAugment | None = field(init=False, repr=False, compare=False)
    _photometric: BatchPhotometric = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.auto_augment not in AUTO_AUGMENT_CHOICES:
            raise VipnbError(f"auto_augment {self.auto_augment!r} is not known; valid values: "
                             f"{', '.join(map(repr, AUTO_AUGMENT_CHOICES))} ('' is off)")
        object.__setattr__(self, "_auto_augment",
                           BatchAutoAugment() if self.auto_augment else None)
        object.__setattr__(self, "_photometric", BatchPhotometric(
            self.vflip, tuple(self.color_jitter), self.gaussian_noise))

    def sample(self, n: int, height: int, width: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The random draws for `n` images: crop boxes [n, 4] and flip flags [n].

        Drawn apart from the pixels so that every process of a distributed run draws the
        same numbers for the whole global batch and keeps its own share.
        """
        boxes = random_resized_crop_boxes(n, height, width, self.scale, self.ratio, generator)
        return boxes, torch.rand(n, generator=generator) < self.hflip

    def sample_auto_augment(self, n: int,
                            generator: torch.Generator) -> AutoAugmentDraws | None:
        """AutoAugment draws for `n` images, or None when it is off; then nothing is drawn,
        so runs without AutoAugment see the same random stream as before it existed."""
        return self._auto_augment.sample(n, generator) if self._auto_augment else None

    def sample_photometric(self, n: int, generator: torch.Generator) -> PhotometricDraws | None:
        """Vertical flip, colour jitter and noise draws for `n` images; None (and nothing
        drawn) when all three are off."""
        return self._photometric.sample(n, generator) if self._photometric.enabled else None

    def apply(self, batch: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor,
              auto_augment_draws: AutoAugmentDraws | None = None,
              photometric_draws: PhotometricDraws | None = None):
        n = len(batch)
        images = crop_and_resize(batch, boxes.to(batch.device), self.input_size)
        images = torch.where(flips.to(batch.device).view(n, 1, 1, 1), images.flip(-1), images)
        if self._auto_augment:
            if auto_augment_draws is None:
                raise ValueError(f"auto_augment={self.auto_augment!r} needs the draws of "
                                 "sample_auto_augment() passed as auto_augment_draws")
            # AutoAugment works on uint8 pixels, as on the PIL image before ToTensor.
            pixels = images.round().clamp(0, 255).to(torch.uint8)
            images = self._auto_augment.apply(pixels, auto_augment_draws).float()
        if self._photometric.enabled:
            if photometric_draws is None:
                raise ValueError("vflip/color_jitter/gaussian_noise need the draws of "
                                 "sample_photometric() passed as photometric_draws")
            images = self._photometric.apply(images, photometric_draws)
        return normalize(images, self.mean, self.std)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(batch)
        boxes, flips = self.sample(n, *batch.shape[-2:], generator)
        return self.apply(batch, boxes, flips, self.sample_auto_augment(n, generator),
                          self.sample_photometric(n, generator))


@dataclass(frozen=True)
class EvalTransform:
    """Center crop of `crop_pct` of the cached image, resized to `input_size`
    (the "resize 256, center crop 224" of ImageNet evaluation is crop_pct 0.875)."""

    input_size: int
    crop_pct: float = 1.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        n, _, height, width = batch.shape
        if self.crop_pct == 1.0 and height == width == self.input_size:
            images = batch.float()
        else:
            h, w = height * self.crop_pct, width * self.crop_pct
            box = torch.tensor([(width - w) / 2, (height - h) / 2, (width + w) / 2,
                                (height + h) / 2])
            images = crop_and_resize(batch, box.expand(n, 4).to(batch.device), self.input_size)
        return normalize(images, self.mean, self.std)


def random_resized_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                              ratio: tuple[float, float],
                              generator: torch.Generator) -> torch.Tensor:
    """`n` boxes (x1, y1, x2, y2) drawn as torchvision's RandomResizedCrop draws one:
    area fraction uniform in `scale`, log-uniform aspect ratio, ten tries, then a
    center crop clamped to `ratio`."""
    tries = 10
    area = height * width
    target_area = area * torch.empty(n, tries).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                               generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(target_area * aspect).round()
    h = torch.sqrt(target_area / aspect).round()
    fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    # Fallback of torchvision: whole image, clamped to the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    pick = first.clamp(min=0).unsqueeze(1)
    w = torch.where(first >= 0, w.gather(1, pick).squeeze(1), torch.tensor(float(fw)))
    h = torch.where(first >= 0, h.gather(1, pick).squeeze(1), torch.tensor(float(fh)))
    x0 = torch.floor(torch.rand(n, generator=generator) * (width - w + 1))
    y0 = torch.floor(torch.rand(n, generator=generator) * (height - h + 1))
    x0 = torch.where(first >= 0, x0, torch.tensor((width - fw) / 2).floor())
    y0 = torch.where(first >= 0, y0, torch.tensor((height - fh) / 2).floor())
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def crop_and_resize(batch: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut box i out of image i and resize it to `size`×`size` (bilinear; the adaptive
    sampling ratio averages over each output cell, so large shrinks do not alias)."""
    indices = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype).unsqueeze(1)
    rois = torch.cat([indices, boxes.to(torch.float32)], dim=1)
    # torchvision's kernel itself, not `torchvision.ops.roi_align`: under deterministic
    # algorithms on CUDA that wrapper swaps in a torch.compile'd Python version (its backward
    # kernel uses atomicAdd), which stalled the first GPU proof for minutes in the first
    # crops. The forward kernel is deterministic, and no gradient flows through augmentation.
    return torch.ops.torchvision.roi_align(batch.float(), rois, 1.0, size, size, -1, True)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]):
    """uint8-range float images → (x/255 − mean) / std, per channel."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    return (images - mean_t) / std_t
