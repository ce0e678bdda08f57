"""The default config timm keeps beside a registered model: ImageNet preprocessing, no weights."""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def untrained_cfg(first_conv: str, **kwargs) -> dict:
    """timm's ResNet-family defaults for a model this package registers without weights."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv, "classifier": "fc",
        **kwargs,
    }
