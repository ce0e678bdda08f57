"""Box-aware batched transforms for classification + box regression (the MTL-MoE paper's two
tasks, `mtl-moe-cub.txt`): the image and its object box move together.

Images are uint8 batches [B, 3, S, S] (as `vipnb.data.cub.decode_cub` returns them) and boxes
are (x1, y1, x2, y2) fractions of the image in [0, 1]. Training takes a random resized crop
(torchvision's RandomResizedCrop draw, `vipnb.data.augment.random_resized_crop_boxes`) and a
horizontal flip; the box is shifted and scaled into the crop, clipped to it, and mirrored with
the image. Resizing does not change a box given as fractions of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vipnb.data.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_and_resize,
    normalize,
    random_resized_crop_boxes,
)
from vipnb.errors import VipnbError


@dataclass(frozen=True)
class BoxTrainTransform:
    """Random resized crop + horizontal flip of images and their boxes, then normalisation.

    A crop that would keep less than `min_visible` of the object box's area is replaced by the
    whole image, so the regression target is never an empty or sliver box.
    """

    input_size: int
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    min_visible: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.min_visible <= 1.0:
            raise VipnbError(f"min_visible={self.min_visible} must lie in [0, 1]: the share of "
                             "the object box a training crop must keep")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise VipnbError(f"scale={tuple(self.scale)} must satisfy 0 < low <= high <= 1 "
                             "(the crop's share of the image area)")

    def sample(self, n: int, height: int, width: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The random draws for `n` images: crop boxes [n, 4] in pixels and flip flags [n]."""
        crops = random_resized_crop_boxes(n, height, width, self.scale, self.ratio, generator)
        return crops, torch.rand(n, generator=generator) < self.hflip

    def apply(self, images: torch.Tensor, boxes: torch.Tensor, crops: torch.Tensor,
              flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images [B, 3, input_size, input_size] and their boxes in [0, 1]."""
        n, _, height, width = images.shape
        crops = keep_visible(boxes, crops.to(boxes.device), height, width, self.min_visible)
        out = crop_and_resize(images, crops.to(images.device), self.input_size)
        out = torch.where(flips.to(images.device).view(n, 1, 1, 1), out.flip(-1), out)
        moved = boxes_in_crop(boxes, crops, height, width)
        moved = torch.where(flips.to(boxes.device).view(n, 1), hflip_boxes(moved), moved)
        return normalize(out, self.mean, self.std), moved

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        crops, flips = self.sample(len(images), *images.shape[-2:], generator)
        return self.apply(images, boxes, crops, flips)


@dataclass(frozen=True)
class BoxEvalTransform:
    """The whole image resized to `input_size` and normalised; boxes (fractions) unchanged.

    `transform(images)` returns the images; `transform(images, boxes)` returns (images, boxes),
    the same call shape as `BoxTrainTransform`.
    """

    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor | None = None):
        n, _, height, width = images.shape
        if height == width == self.input_size:
            out = images.float()
        else:
            whole = torch.tensor([0.0, 0.0, width, height], device=images.device)
            out = crop_and_resize(images, whole.expand(n, 4), self.input_size)
        out = normalize(out, self.mean, self.std)
        return out if boxes is None else (out, boxes)


def _pixels(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return boxes * boxes.new_tensor([width, height, width, height])


def visible_fraction(boxes: torch.Tensor, crops: torch.Tensor, height: int,
                     width: int) -> torch.Tensor:
    """Share of each box's area (fractions [B, 4]) inside its crop (pixels [B, 4]); an empty
    box counts as fully visible."""
    px = _pixels(boxes, height, width)
    crops = crops.to(px)
    inter_w = (torch.minimum(px[:, 2], crops[:, 2]) - torch.maximum(px[:, 0], crops[:, 0]))
    inter_h = (torch.minimum(px[:, 3], crops[:, 3]) - torch.maximum(px[:, 1], crops[:, 1]))
    inter = inter_w.clamp(min=0) * inter_h.clamp(min=0)
    area = (px[:, 2] - px[:, 0]).clamp(min=0) * (px[:, 3] - px[:, 1]).clamp(min=0)
    return torch.where(area > 0, inter / area.clamp(min=1e-12), torch.ones_like(area))


def keep_visible(boxes: torch.Tensor, crops: torch.Tensor, height: int, width: int,
                 min_visible: float) -> torch.Tensor:
    """`crops` with those keeping less than `min_visible` of their box replaced by the whole
    image."""
    whole = crops.new_tensor([0.0, 0.0, width, height]).expand_as(crops)
    enough = visible_fraction(boxes, crops, height, width) >= min_visible
    return torch.where(enough.to(crops.device).unsqueeze(1), crops, whole)


def boxes_in_crop(boxes: torch.Tensor, crops: torch.Tensor, height: int,
                  width: int) -> torch.Tensor:
    """Boxes (fractions of the image) as fractions of their crops (pixels), clipped to [0, 1]."""
    px = _pixels(boxes, height, width)
    crops = crops.to(px)
    origin = crops[:, :2].repeat(1, 2)
    extent = (crops[:, 2:] - crops[:, :2]).repeat(1, 2)
    return ((px - origin) / extent).clamp(0.0, 1.0)


def hflip_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Mirror boxes (fractions) left-right: x1, x2 → 1 − x2, 1 − x1."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([1 - x2, y1, 1 - x1, y2], dim=-1)
