"""EfficientNet and EfficientNet-V2 scaled to a quarter of their width and depth multipliers,
for the cpu profile's analogues of the MoE paper's Table 3 and the VIPF paper's Table 2
(registered as ``*_quarter``).

The family's own scaling rule is kept: B3/B4/B5/B6 keep their ratios to each other (×1.4/1.8,
×1.6/2.2, ×1.8/2.6 → ×0.35/0.45, ×0.4/0.55, ×0.45/0.65), V2-S and V2-M likewise, so the
rows compare a small, a larger and a largest member as the paper does, on two CPU cores.
"""

from __future__ import annotations

from timm.models import generate_default_cfgs, register_model
from timm.models.efficientnet import (
    EfficientNet,
    _gen_efficientnet,
    _gen_efficientnetv2_m,
    _gen_efficientnetv2_s,
)

QUARTER = 0.25

default_cfgs = generate_default_cfgs({
    name: {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "interpolation": "bicubic",
           "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
           "first_conv": "conv_stem", "classifier": "classifier"}
    for name in ("efficientnet_b3_quarter", "efficientnet_b4_quarter", "efficientnet_b5_quarter",
                 "efficientnet_b6_quarter", "efficientnetv2_s_quarter",
                 "efficientnetv2_m_quarter")
})


def _b(variant: str, width: float, depth: float, kwargs: dict) -> EfficientNet:
    return _gen_efficientnet(variant, channel_multiplier=width * QUARTER,
                             depth_multiplier=depth * QUARTER, **kwargs)


@register_model
def efficientnet_b3_quarter(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _b("efficientnet_b3_quarter", 1.2, 1.4, {"pretrained": pretrained, **kwargs})


@register_model
def efficientnet_b4_quarter(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _b("efficientnet_b4_quarter", 1.4, 1.8, {"pretrained": pretrained, **kwargs})


@register_model
def efficientnet_b5_quarter(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _b("efficientnet_b5_quarter", 1.6, 2.2, {"pretrained": pretrained, **kwargs})


@register_model
def efficientnet_b6_quarter(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _b("efficientnet_b6_quarter", 1.8, 2.6, {"pretrained": pretrained, **kwargs})


@register_model
def efficientnetv2_s_quarter(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _gen_efficientnetv2_s("efficientnetv2_s_quarter", channel_multiplier=QUARTER,
                                 depth_multiplier=QUARTER, pretrained=pretrained, **kwargs)


@register_model
def efficientnetv2_m_quarter(pretrained: bool = False, **kwargs) -> EfficientNet:
    return _gen_efficientnetv2_m("efficientnetv2_m_quarter", channel_multiplier=QUARTER,
                                 depth_multiplier=QUARTER, pretrained=pretrained, **kwargs)
