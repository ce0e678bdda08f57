"""The fusion-coverage paper's extra training augmentations (§III.A, items 2-4), batched:
vertical flip, colour jitter and Gaussian noise, on uint8-range float batches [B, 3, H, W]
(pixel values 0..255 as floats, before `normalize`).

Colour jitter is torchvision's `ColorJitter`: factors uniform in [max(0, 1-b), 1+b],
[max(0, 1-c), 1+c], [max(0, 1-s), 1+s] and hue in [-h, h] (the paper's ranges [0.5, 1.5] and
[-0.1, 0.1] are b = c = s = 0.5, h = 0.1), the four ops in a random order per image, each with
the formulas of `torchvision.transforms.v2.functional` (brightness: blend with black; contrast:
blend with the mean of the grayscale image; saturation: blend with the grayscale image; hue:
shift in HSV), here with a factor per image.

"Gaussian noise with parameter settings of 0, 1, 20" is read as the widely copied
`AddGaussianNoise(mean=0, variance=1, amplitude=20)`: noise = 20 · N(0, 1) per pixel, the same
for the three channels, added to the pixels. That transform clips only at 255 and lets negative
values wrap around in `astype('uint8')`; here the sum is clamped to [0, 255] and kept as float.

As in `vipnb.data.augment`, the draws are sampled apart from the pixels (`sample`) so that the
processes of a distributed run draw the same numbers, then applied (`apply`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

# torchvision's own batched RGB<->HSV conversions (private, pinned by tests/test_photometric.py).
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from vipnb.errors import VipnbError

# The paper's settings (§III.A): flips with probability 0.5, brightness/contrast/saturation in
# [0.5, 1.5], hue in [-0.1, 0.1], noise amplitude 20.
PAPER_VFLIP = 0.5
PAPER_COLOR_JITTER = (0.5, 0.5, 0.5, 0.1)
PAPER_NOISE_AMPLITUDE = 20.0

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_MAX = 255.0


@dataclass(frozen=True)
class PhotometricDraws:
    """Random choices for `len(self)` images; `draws[positions]` keeps a share of them."""

    vflip: torch.Tensor  # [n] bool, flip upside down
    factors: torch.Tensor  # [n, 4] float: brightness, contrast, saturation factors, hue shift
    order: torch.Tensor  # [n, 4] int64: indices into JITTER_OPS in the order they are applied
    noise_seed: torch.Tensor  # [n] int64: seed of the image's noise, drawn when applied

    def __len__(self) -> int:
        return len(self.vflip)

    def __getitem__(self, positions) -> PhotometricDraws:
        return PhotometricDraws(self.vflip[positions], self.factors[positions],
                                self.order[positions], self.noise_seed[positions])


@dataclass(frozen=True)
class BatchPhotometric:
    """Vertical flip with probability `vflip`, then colour jitter (brightness, contrast,
    saturation, hue as in torchvision's ColorJitter, in a random order per image), then
    Gaussian noise of amplitude `gaussian_noise` (pixel units), clamped to [0, 255]."""

    vflip: float = 0.0
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    gaussian_noise: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.vflip <= 1.0:
            raise VipnbError(f"vflip {self.vflip} is not a probability; use a value in [0, 1]")
        if len(self.color_jitter) != 4:
            raise VipnbError(f"color_jitter {self.color_jitter!r} needs four values: "
                             "(brightness, contrast, saturation, hue), e.g. (0.5, 0.5, 0.5, 0.1)")
        if min(self.color_jitter) < 0 or self.color_jitter[3] > 0.5:
            raise VipnbError(f"color_jitter {self.color_jitter!r} is out of range; brightness, "
                             "contrast and saturation must be >= 0 and hue in [0, 0.5]")
        if self.gaussian_noise < 0:
            raise VipnbError(f"gaussian_noise {self.gaussian_noise} is negative; give the noise "
                             "amplitude in pixel units (the paper's is 20) or 0 for none")

    @property
    def enabled(self) -> bool:
        """False when every part is off: callers then skip `sample`, so the random stream of
        runs without these augmentations stays as it was."""
        return self.vflip > 0 or any(self.color_jitter) or self.gaussian_noise > 0

    def sample(self, n: int, generator: torch.Generator) -> PhotometricDraws:
        """Draws for `n` images. Every part is drawn even when off, so switching one part on
        does not change the draws of the others."""
        vflip = torch.rand(n, generator=generator) < self.vflip
        b, c, s, h = self.color_jitter
        low = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
        high = torch.tensor([1 + b, 1 + c, 1 + s, h])
        factors = low + (high - low) * torch.rand(n, 4, generator=generator)
        order = torch.rand(n, 4, generator=generator).argsort(dim=1)  # a permutation per image
        noise_seed = torch.randint(2**62, (n,), generator=generator)
        return PhotometricDraws(vflip, factors, order, noise_seed)

    def apply(self, images: torch.Tensor, draws: PhotometricDraws) -> torch.Tensor:
        """uint8-range images [N, 3, H, W] augmented as `draws` says (a new float tensor)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [N, 3, H, W], got {tuple(images.shape)}")
        if len(draws) != len(images):
            raise ValueError(f"{len(draws)} photometric draws for {len(images)} images")
        device = images.device
        out = images.float()
        if self.vflip > 0:
            out = torch.where(draws.vflip.to(device).view(-1, 1, 1, 1), out.flip(-2), out)
        if any(self.color_jitter):
            out = self._jitter(out, draws)
        if self.gaussian_noise > 0:
            out = (out + self.gaussian_noise * channel_shared_noise(out, draws.noise_seed)
                   ).clamp_(0, _MAX)
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.sample(len(images), generator))

    def _jitter(self, images: torch.Tensor, draws: PhotometricDraws) -> torch.Tensor:
        # Per-image order: at each step, each op runs once on the images whose step it is, so
        # the cost is four ops per image whatever the orders (the indices stay on the CPU).
        out = images.clone()
        for step in range(4):
            for op, strength in enumerate(self.color_jitter):
                if strength == 0:  # off in torchvision too (its factor would be the identity)
                    continue
                rows = torch.nonzero(draws.order[:, step] == op).flatten()
                if len(rows):
                    factor = draws.factors[rows, op].to(out.device, out.dtype)
                    rows = rows.to(out.device)
                    out[rows] = _JITTER_FNS[op](out[rows], factor)
        return out


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_brightness (blend with black) with a factor per image."""
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, _MAX)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_contrast (blend with the grayscale mean) with a factor per image."""
    mean = F.rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_saturation (blend with grayscale) with a factor per image."""
    return _blend(images, F.rgb_to_grayscale(images), factor)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue (hue rotated by `shift` turns in HSV) with a shift per image."""
    hsv = _rgb_to_hsv(images / _MAX)
    hue = (hsv[:, :1] + shift.view(-1, 1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)) * _MAX


def channel_shared_noise(images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise [N, 1, H, W], one plane per image from its own seed, drawn on the images'
    device (so a share of a batch gets the same noise as in the whole batch; CPU and CUDA
    generators give different, equally distributed numbers)."""
    height, width = images.shape[-2:]
    planes = []
    for seed in seeds.tolist():
        generator = torch.Generator(device=images.device).manual_seed(seed)
        planes.append(torch.randn(1, height, width, generator=generator, device=images.device,
                                  dtype=images.dtype))
    return torch.stack(planes) if planes else images.new_zeros(0, 1, height, width)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (images * factor + other * (1 - factor)).clamp_(0, _MAX)


_JITTER_FNS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
