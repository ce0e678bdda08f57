"""EfficientNet, EfficientNet-V2 and RegNetY scaled to a quarter of their width and depth,
for the cpu profile's analogues of the MoE paper's Tables 2 and 3 and the VIPF paper's Table 2
(registered as ``*_quarter``).

The family's own scaling rule is kept: B3/B4/B5/B6 keep their ratios to each other (×1.4/1.8,
×1.6/2.2, ×1.8/2.6 → ×0.35/0.45, ×0.4/0.55, ×0.45/0.65), V2-S and V2-M likewise, so the
rows compare a small, a larger and a largest member as the paper does, on two CPU cores.
A quarter RegNetY keeps its model's four stages: a quarter of each stage's width (and group
width) and of its depth, rounded up, so RegNetY-080 < 120 < 160 < 320 stay in order; its stem
has 16 channels (RegNet's 32 halved, as wide as the cpu ResNeSts' stem).
"""

from __future__ import annotations

import math
from dataclasses import replace

from timm.layers import calculate_drop_path_rates
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.efficientnet import (
    EfficientNet,
    _gen_efficientnet,
    _gen_efficientnetv2_m,
    _gen_efficientnetv2_s,
)
from timm.models.regnet import RegNet, adjust_widths_groups_comp, model_cfgs

from vipnb.models._default_cfg import untrained_cfg

QUARTER = 0.25

default_cfgs = generate_default_cfgs({
    name: untrained_cfg("conv_stem", classifier="classifier", interpolation="bicubic")
    for name in ("efficientnet_b3_quarter", "efficientnet_b4_quarter", "efficientnet_b5_quarter",
                 "efficientnet_b6_quarter", "efficientnetv2_s_quarter",
                 "efficientnetv2_m_quarter")
} | {
    f"regnety_{size}_quarter": untrained_cfg(
        "stem.conv", classifier="head.fc", interpolation="bicubic")
    for size in ("080", "120", "160", "320")
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


class QuarterRegNet(RegNet):
    """A RegNet whose stages are those of the full-size configuration, each at a quarter of
    its width, group width and depth (depth rounded up, widths re-quantised to the groups)."""

    def _get_stage_args(self, cfg, default_stride=2, output_stride=32, drop_path_rate=0.0):
        stages, common = super()._get_stage_args(cfg, default_stride, output_stride, 0.0)
        depths = [math.ceil(stage["depth"] * QUARTER) for stage in stages]
        widths, groups = adjust_widths_groups_comp(
            [stage["out_chs"] * QUARTER for stage in stages], [stage["bottle_ratio"] for stage in stages],
            [max(8, round(stage["group_size"] * QUARTER)) for stage in stages])
        rates = calculate_drop_path_rates(drop_path_rate, depths, stagewise=True)
        for stage, depth, width, group, rate in zip(stages, depths, widths, groups, rates, strict=True):
            stage.update(depth=depth, out_chs=width, group_size=group, drop_path_rates=rate)
        return stages, common


def _quarter_regnety(size: str, pretrained: bool, kwargs: dict) -> RegNet:
    cfg = model_cfgs[f"regnety_{size}"]
    return build_model_with_cfg(QuarterRegNet, f"regnety_{size}_quarter", pretrained,
                                model_cfg=replace(cfg, stem_width=cfg.stem_width // 2), **kwargs)


@register_model
def regnety_080_quarter(pretrained: bool = False, **kwargs) -> RegNet:
    return _quarter_regnety("080", pretrained, kwargs)


@register_model
def regnety_120_quarter(pretrained: bool = False, **kwargs) -> RegNet:
    return _quarter_regnety("120", pretrained, kwargs)


@register_model
def regnety_160_quarter(pretrained: bool = False, **kwargs) -> RegNet:
    return _quarter_regnety("160", pretrained, kwargs)


@register_model
def regnety_320_quarter(pretrained: bool = False, **kwargs) -> RegNet:
    return _quarter_regnety("320", pretrained, kwargs)
