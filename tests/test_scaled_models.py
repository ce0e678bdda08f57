"""The cpu stand-ins of vipnb.models.scaled: a quarter RegNetY keeps its model's four stages at a
quarter of their width and depth, and the family's order."""

import math

import pytest
import timm
import torch
from timm.models.regnet import generate_regnet, model_cfgs

import vipnb  # noqa: F401  (registers the models)

SIZES = ("080", "120", "160", "320")


def stages(model):
    return [(len(list(getattr(model, f"s{i}").children())), model.feature_info[i]["num_chs"])
            for i in range(1, 5)]


@pytest.mark.parametrize("size", SIZES)
def test_quarter_regnety_has_the_full_models_stages_at_a_quarter(size):
    cfg = model_cfgs[f"regnety_{size}"]
    widths, _, _ = generate_regnet(cfg.wa, cfg.w0, cfg.wm, cfg.depth, cfg.group_size)
    full = sorted({w: widths.count(w) for w in widths}.items())  # (width, depth) per stage
    model = timm.create_model(f"regnety_{size}_quarter", num_classes=10, drop_path_rate=0.1)
    for (depth, width), (full_width, full_depth) in zip(stages(model), full, strict=True):
        assert depth == math.ceil(full_depth / 4)
        assert abs(width - full_width / 4) <= full_width / 8  # re-quantised to its groups
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_quarter_regnetys_keep_the_familys_order():
    sizes = [sum(p.numel() for p in timm.create_model(f"regnety_{s}_quarter").parameters())
             for s in SIZES]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


@pytest.mark.parametrize("name", timm.list_models("*_quarter"))
def test_quarter_configs_are_complete(name):
    """timm's config test and pretrained_cfg readers need pool_size (a stride-32 map at 224 px)."""
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.pool_size == (7, 7) and cfg.crop_pct and cfg.first_conv and cfg.classifier
