"""Test-time augmentation: score a batch under several views of each image and average.

The views are the ones the papers use at test time: a center crop, its mirror image, five and
ten crops, several input scales, and the fusion-coverage paper's (§III.A) "random horizontal
flipping, color dithering, adding Gaussian noise and random rotation": `jitter` and `noise` are
its training colour jitter and noise (`vipnb.data.photometric`), `rotate` a rotation within
±TTA_ROTATION_DEGREES, and `paper_tta` all of them. Their random draws come from a generator
seeded with TTA_SEED at every call, so a re-score is reproducible; an image's draws depend on
its position in the batch, so only the same batch size and order give the same scores (and
CUDA draws other noise than the CPU). Crops come from torchvision's v2 functional transforms,
which work on batched tensors, so a whole batch is cut at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vipnb.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalize
from vipnb.data.photometric import PAPER_COLOR_JITTER, PAPER_NOISE_AMPLITUDE, BatchPhotometric
from vipnb.errors import VipnbError

VIEW_NAMES = ("center", "flip", "five_crop", "ten_crop", "jitter", "noise", "rotate", "paper_tta",
              "multi_scale:<s1>,<s2>,...")
TTA_SEED = 0
# The paper gives no angle. ±10° is the usual small RandomRotation range: objects stay upright
# and in frame, and at most ~7 % of the crop (its corners) is filled with black.
TTA_ROTATION_DEGREES = 10.0
_JITTER = BatchPhotometric(color_jitter=PAPER_COLOR_JITTER)
_NOISE = BatchPhotometric(gaussian_noise=PAPER_NOISE_AMPLITUDE)
REDUCTIONS = ("mean_prob", "mean_logit")
_MULTI_SCALE_PREFIX = "multi_scale:"


def _require_at_least(images: Tensor, crop_size: int, view: str) -> None:
    height, width = images.shape[-2:]
    if height < crop_size or width < crop_size:
        raise VipnbError(
            f"view {view!r} needs images of at least {crop_size}x{crop_size}, "
            f"got {height}x{width}; resize the images up or lower crop_size."
        )


def _center(images: Tensor, crop_size: int) -> Tensor:
    _require_at_least(images, crop_size, "center")
    if tuple(images.shape[-2:]) == (crop_size, crop_size):
        return images
    return F.center_crop(images, [crop_size, crop_size])


def _parse_scales(view: str) -> list[int]:
    text = view[len(_MULTI_SCALE_PREFIX) :]
    try:
        scales = [int(size) for size in text.split(",") if size.strip()]
    except ValueError:
        scales = []
    if not scales or min(scales) <= 0:
        raise VipnbError(
            f"cannot read the sizes in view {view!r}; write positive integers, "
            "e.g. 'multi_scale:192,224,256'."
        )
    return scales


def _channel_stats(images: Tensor, values: Sequence[float]) -> Tensor:
    return torch.tensor(values, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)


def _require_stats(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
    if not len(mean) == len(std) == images.shape[1]:
        raise VipnbError(f"TTA got mean {tuple(mean)} and std {tuple(std)} for images with "
                         f"{images.shape[1]} channels; pass the mean and std the images were "
                         "normalised with, one value per channel.")


def _photometric(images: Tensor, transform: BatchPhotometric, mean: Sequence[float],
                 std: Sequence[float]) -> Tensor:
    """The training transform on the pixels of a normalised batch, normalised again."""
    _require_stats(images, mean, std)
    pixels = (images * _channel_stats(images, std) + _channel_stats(images, mean)) * 255
    generator = torch.Generator().manual_seed(TTA_SEED)
    return normalize(transform(pixels, generator), mean, std).to(images.dtype)


def _rotate(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Each image turned by its own angle in ±TTA_ROTATION_DEGREES (bilinear, corners black,
    as torchvision's RandomRotation fills them)."""
    _require_stats(images, mean, std)
    generator = torch.Generator().manual_seed(TTA_SEED)
    angles = (2 * torch.rand(len(images), generator=generator) - 1) * TTA_ROTATION_DEGREES
    black = [-m / s for m, s in zip(mean, std, strict=True)]  # pixel value 0, normalised
    return torch.stack([
        F.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=black)
        for image, angle in zip(images, angles.tolist(), strict=True)
    ])


def check_view(view: str) -> None:
    """Raise a VipnbError unless `view` is one of VIEW_NAMES: a recipe's `eval_views` is
    checked when it is loaded, not after its training, when the run is scored."""
    if view.startswith(_MULTI_SCALE_PREFIX):
        _parse_scales(view)
    elif view not in VIEW_NAMES:
        raise VipnbError(f"unknown TTA view {view!r}; valid views: {', '.join(VIEW_NAMES)}.")


def _views_for(images: Tensor, view: str, crop_size: int, mean: Sequence[float],
               std: Sequence[float]) -> list[Tensor]:
    if view == "center":
        return [_center(images, crop_size)]
    if view == "flip":
        center = _center(images, crop_size)
        return [center, F.horizontal_flip(center)]
    if view == "jitter":
        return [_photometric(_center(images, crop_size), _JITTER, mean, std)]
    if view == "noise":
        return [_photometric(_center(images, crop_size), _NOISE, mean, std)]
    if view == "rotate":
        return [_rotate(_center(images, crop_size), mean, std)]
    if view == "paper_tta":
        center = _center(images, crop_size)
        return [center, F.horizontal_flip(center), _photometric(center, _JITTER, mean, std),
                _photometric(center, _NOISE, mean, std), _rotate(center, mean, std)]
    if view in ("five_crop", "ten_crop"):
        _require_at_least(images, crop_size, view)
        crop = F.five_crop if view == "five_crop" else F.ten_crop
        return list(crop(images, [crop_size, crop_size]))
    if view.startswith(_MULTI_SCALE_PREFIX):
        # The whole image at each scale (shorter side = s): timm models pool globally, so they
        # accept any input size, and nothing is cut away.
        return [
            F.resize(images, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
            for size in _parse_scales(view)
        ]
    raise VipnbError(f"unknown TTA view {view!r}; valid views: {', '.join(VIEW_NAMES)}.")


def tta_views(
    images: Tensor,
    views: str | Sequence[str],
    crop_size: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> list[Tensor]:
    """The views of a normalised batch `[B, C, H, W]`, in order; a list of names is concatenated.

    `"center"` is one view (the batch itself when already `crop_size`), `"flip"` two, `"five_crop"`
    five, `"ten_crop"` ten (five crops and their mirrors), `"multi_scale:s1,s2"` one per size.
    `"jitter"`, `"noise"` and `"rotate"` are one view each, of the center crop; `"paper_tta"`
    five (center, mirror, jitter, noise, rotate). `mean` and `std` are those the batch was
    normalised with: the photometric views work on its pixels, and rotate fills with black.
    """
    if images.ndim != 4:
        raise VipnbError(f"TTA expects a batch [B, C, H, W], got shape {tuple(images.shape)}.")
    names = [views] if isinstance(views, str) else list(views)
    if not names:
        raise VipnbError(f"no TTA views given; choose from: {', '.join(VIEW_NAMES)}.")
    return [view for name in names
            for view in _views_for(images, name.strip(), crop_size, mean, std)]


def tta_predict(
    model: nn.Module,
    images: Tensor,
    views: str | Sequence[str],
    crop_size: int,
    reduce: str = "mean_prob",
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    memory_format: torch.memory_format = torch.preserve_format,
) -> Tensor:
    """Scores `[B, num_classes]` averaged over the TTA views (`mean`, `std`: see `tta_views`),
    each view in `memory_format` (the model's: a crop or rotation returns NCHW).

    `"mean_prob"` averages softmax probabilities and returns their log, so the result still
    works with argmax and softmax like logits; `"mean_logit"` averages the raw logits.
    The model runs in eval mode under `torch.inference_mode()`; its mode is restored afterwards.
    """
    if reduce not in REDUCTIONS:
        raise VipnbError(f"unknown TTA reduction {reduce!r}; valid: {', '.join(REDUCTIONS)}.")
    batch_views = tta_views(images, views, crop_size, mean=mean, std=std)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # float32 so half-precision models average without losing small probabilities.
            logits = torch.stack([model(view.to(memory_format=memory_format)).float()
                                  for view in batch_views])
            if reduce == "mean_logit":
                return logits.mean(dim=0)
            # log(mean(softmax)) computed in log space, stable for confident predictions.
            return torch.logsumexp(logits.log_softmax(dim=-1), dim=0) - math.log(len(batch_views))
    finally:
        model.train(was_training)
