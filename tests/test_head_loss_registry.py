"""The head-loss registry: the built-in losses by name, a name taken twice, and a recipe key
that its chosen loss does not read."""

from __future__ import annotations

import pytest

from vipnb.engine.recipe import from_dict
from vipnb.errors import VipnbError
from vipnb.losses.registry import head_loss_names, register_head_loss, unused_loss_keys


def test_the_built_in_losses_are_registered():
    assert {"soft_ce", "positive_class", "taylor_ce", "bi_tempered",
            "dsb_focal"} <= set(head_loss_names())


def test_a_name_taken_twice_is_refused():
    with pytest.raises(VipnbError, match="'soft_ce' is registered already"):
        register_head_loss("soft_ce")(lambda recipe, num_classes: None)


def test_keys_of_another_loss_are_named():
    assert unused_loss_keys("soft_ce", {"taylor_order", "lr"}) == ["taylor_order"]
    assert unused_loss_keys("taylor_ce", {"taylor_order", "focal_gamma"}) == ["focal_gamma"]


@pytest.mark.parametrize("settings, message", [
    ({"loss": "soft_ce", "bi_tempered_t1": 0.7}, "bi_tempered_t1 set, but loss='soft_ce'"),
    ({"loss": "taylor_ce", "loss_kwargs": {"order": 3}}, "order set, but loss='taylor_ce' "
                                                         r"does not read them \(it reads: "
                                                         r"taylor_order\)"),
    ({"loss": "nonsense"}, "loss='nonsense' is not one of soft_ce"),
])
def test_a_recipe_with_a_key_its_loss_does_not_read_is_refused(settings, message):
    with pytest.raises(VipnbError, match=message):
        from_dict({"name": "r", **settings}, source="r.yaml")


def test_a_loss_key_at_its_own_loss_is_accepted():
    assert from_dict({"name": "r", "loss": "taylor_ce", "taylor_order": 3}).taylor_order == 3
