"""A key set where the recipe's other settings never read it is refused, naming what reads it
(`decay_epochs` under a cosine schedule trains exactly as without it); a key inherited through
`extends` is not, since a table row may switch off its parent's feature."""

from __future__ import annotations

import pytest
import yaml

from vipnb.engine.recipe import _READ_ONLY_WHEN, default_value, from_dict, load_recipe
from vipnb.errors import VipnbError

# For each key: a valid value other than its default, and the setting that makes it read.
SET_AND_READER = {
    "gate_k": (1, {"architecture": "mtl_moe", "experts": 2}),
    "box_task": (False, {"architecture": "mtl_moe", "experts": 2}),
    "box_loss_weight": (2.0, {"architecture": "mtl_moe", "experts": 2}),
    "class_subset": ((0, 1), {"architecture": "mtl_moe", "experts": 2}),
    "box_val_per_class": (5, {"architecture": "mtl_moe", "experts": 2}),
    "pretrained_file": ("resnet50.pth", {"architecture": "mtl_moe", "experts": 2}),
    "moco_dim": (64, {"stage": "moco"}),
    "moco_queue": (256, {"stage": "moco"}),
    "moco_momentum": (0.99, {"stage": "moco"}),
    "moco_temperature": (0.1, {"stage": "moco"}),
    "shared_stages": (1, {"experts": 2}),
    "diversity_weight": (0.1, {"experts": 2}),
    "distill_label_weight": (0.3, {"teacher": "moe_regnety160"}),
    "center_loss_alpha": (0.1, {"center_loss_weight": 0.01}),
    "hierarchy": ("wordnet", {"tree_loss_weight": 0.01}),
    "decay_epochs": (10, {"sched": "step"}),
    "decay_rate": (0.5, {"sched": "step"}),
    "warmup_lr": (1e-4, {"warmup_epochs": 2}),
    "mixup_prob": (0.5, {"cutmix_alpha": 1.0}),
    "mixup_off_epochs": (2, {"mixup_alpha": 0.2}),
    "mixup_switch_prob": (0.3, {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}),
}


def test_every_rule_has_a_case_here():
    assert set(SET_AND_READER) == {key for keys in _READ_ONLY_WHEN for key in keys}


@pytest.mark.parametrize("key", sorted(SET_AND_READER))
def test_a_key_nothing_reads_is_refused_and_its_reader_accepts_it(key):
    value, reader = SET_AND_READER[key]
    assert value != default_value(key)
    with pytest.raises(VipnbError, match=rf"r.yaml: {key}=.* is set, but only .* reads it"):
        from_dict({"name": "r", key: value}, source="r.yaml")
    assert getattr(from_dict({"name": "r", key: value, **reader}), key) == value


def test_an_override_is_refused_and_named_as_one():
    with pytest.raises(VipnbError, match=r"override of .*decay_epochs=10 is set, but only "
                                         r"sched: step reads it"):
        load_recipe("baseline_resnet", "smoke", {"decay_epochs": 10})
    recipe = load_recipe("baseline_resnet", "smoke")
    with pytest.raises(VipnbError, match="gate_k=1 is set, but only architecture: mtl_moe"):
        recipe.replace(gate_k=1)
    assert recipe.replace(sched="step", decay_epochs=10).decay_epochs == 10


def test_a_row_may_switch_off_the_feature_its_parent_configured(tmp_path):
    parent = {"name": "parent", "base": {"warmup_epochs": 3, "warmup_lr": 1e-4},
              "profiles": {p: {} for p in ("smoke", "cpu", "paper")}}
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump(parent))
    child = {"name": "child", "extends": str(tmp_path / "parent.yaml"),
             "base": {"warmup_epochs": 0}}
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    assert load_recipe(tmp_path / "child.yaml", "cpu").warmup_lr == 1e-4
    child["base"]["warmup_lr"] = 1e-3  # written by the row itself: refused
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    with pytest.raises(VipnbError, match=r"child.yaml \(profile cpu\): warmup_lr=0.001 is set"):
        load_recipe(tmp_path / "child.yaml", "cpu")
