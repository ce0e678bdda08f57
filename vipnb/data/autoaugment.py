"""AutoAugment (Cubuk et al. 2019, "AutoAugment: Learning Augmentation Strategies from Data",
ImageNet policy) on whole uint8 batches.

The policy and its ops are torchvision's (`transforms.v2.AutoAugment`, NEAREST interpolation,
fill 0). Image by image it costs a Python loop and a few small tensor ops per image, so the
random choices are drawn for the whole batch first and each op then runs once on all the
images that drew it (3-5x faster on CPU for 32-64 px images). Each sub-policy has fixed magnitudes: an image's only randomness is the
sub-policy, whether each of its two ops fires, and the sign of signed ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, InterpolationMode

NUM_MAGNITUDE_BINS = 10  # the bins of torchvision's AutoAugment.forward


@dataclass(frozen=True)
class AutoAugmentDraws:
    """Random choices for `len(self)` images; `draws[positions]` keeps a share of them."""

    policy: torch.Tensor  # [n] int64, index of the sub-policy
    fire: torch.Tensor  # [n, 2] bool, whether the first/second op is applied
    negate: torch.Tensor  # [n, 2] bool, whether a signed op's magnitude is negated

    def __len__(self) -> int:
        return len(self.policy)

    def __getitem__(self, positions) -> AutoAugmentDraws:
        return AutoAugmentDraws(self.policy[positions], self.fire[positions],
                                self.negate[positions])


class BatchAutoAugment:
    """torchvision's AutoAugment, drawn per image and applied per group of equal ops."""

    def __init__(self, policy: AutoAugmentPolicy = AutoAugmentPolicy.IMAGENET):
        self._torchvision = AutoAugment(policy, interpolation=InterpolationMode.NEAREST, fill=None)
        self.policies = self._torchvision._policies
        self.probabilities = torch.tensor([[p for _, p, _ in sub] for sub in self.policies])
        # The same op with the same magnitude bin in several sub-policies is one op: its
        # images are augmented together.
        self.ops = sorted({(name, bin_) for sub in self.policies for name, _, bin_ in sub},
                          key=str)
        self._op_index = torch.tensor([[self.ops.index((name, bin_)) for name, _, bin_ in sub]
                                       for sub in self.policies])
        self._signed = torch.tensor([[self._torchvision._AUGMENTATION_SPACE[name][1]
                                      for name, _, _ in sub] for sub in self.policies])

    def sample(self, n: int, generator: torch.Generator) -> AutoAugmentDraws:
        """Per image: a uniform sub-policy, each op fired with its probability and a fair sign
        (the tests `torch.rand(()) <= p` of torchvision's AutoAugment.forward)."""
        policy = torch.randint(len(self.policies), (n,), generator=generator)
        fire = torch.rand(n, 2, generator=generator) <= self.probabilities[policy]
        negate = torch.rand(n, 2, generator=generator) <= 0.5
        return AutoAugmentDraws(policy, fire, negate)

    def apply(self, images: torch.Tensor, draws: AutoAugmentDraws) -> torch.Tensor:
        """uint8 images [N, C, H, W] augmented as `draws` says (a new tensor)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"AutoAugment needs uint8 images, got {images.dtype}")
        if len(draws) != len(images):
            raise ValueError(f"{len(draws)} AutoAugment draws for {len(images)} images")
        height, width = images.shape[-2:]
        out = images.clone()
        for slot in range(2):
            for (op, negate), indices in self._groups(draws, slot):
                name, magnitude_bin = self.ops[op]
                magnitude = self._magnitude(name, magnitude_bin, negate, height, width)
                indices = indices.to(images.device)
                out[indices] = self._torchvision._apply_image_or_video_transform(
                    out[indices], name, magnitude, interpolation=self._torchvision.interpolation,
                    fill=self._torchvision._fill)
        return out

    def _groups(self, draws: AutoAugmentDraws,
                slot: int) -> list[tuple[tuple[int, bool], torch.Tensor]]:
        """((op, negate), image indices) of each distinct op fired in `slot` (0 or 1)."""
        negate = draws.negate[:, slot] & self._signed[draws.policy, slot]
        code = self._op_index[draws.policy, slot] * 2 + negate.long()
        fired = torch.nonzero(draws.fire[:, slot]).flatten()
        code, order = torch.sort(code[fired], stable=True)
        keys, counts = torch.unique_consecutive(code, return_counts=True)
        return [((key // 2, bool(key % 2)), indices)
                for key, indices in zip(keys.tolist(), fired[order].split(counts.tolist()),
                                        strict=True)]

    def _magnitude(self, name: str, magnitude_bin: int | None, negate: bool, height: int,
                   width: int) -> float:
        """The magnitude torchvision's AutoAugment.forward passes for this op."""
        magnitudes_fn, signed = self._torchvision._AUGMENTATION_SPACE[name]
        magnitudes = magnitudes_fn(NUM_MAGNITUDE_BINS, height, width)
        if magnitudes is None:
            return 0.0
        magnitude = float(magnitudes[magnitude_bin])
        return -magnitude if signed and negate else magnitude
