"""The default config timm keeps beside a registered model: ImageNet preprocessing, no weights."""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def untrained_cfg(first_conv: str, **kwargs) -> dict:
    """timm's defaults for a stride-32 CNN this package registers without weights: ImageNet mean
    and std, 224 px in, a 7x7 final feature map (``pool_size``), no ``url`` (timm then raises
    its RuntimeError for ``pretrained=True`` unless ``pretrained_cfg_overlay`` names a file)."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": first_conv, "classifier": "fc",
        **kwargs,
    }
