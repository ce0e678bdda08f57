"""The MTL-MoE poster's recipes state its settings and numbers (Experiment 2's table, Fig. 4,
5 and 7)."""

import pytest

from vipnb.engine import load_recipe
from vipnb.engine.recipe import paper_reference

# The table: experts → (batch size, classification accuracy %, box "CIoU accuracy" %).
TABLE = {"mtl_moe_e1": (1, 16, 79.18, 93.37), "mtl_moe_e3": (3, 16, 80.44, 94.24),
         "mtl_moe_e6": (6, 8, 80.10, 93.91)}
LAST_10 = tuple(range(190, 200))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_table_rows(name):
    experts, batch, top1, box = TABLE[name]
    recipe = load_recipe(name, "paper")
    assert (recipe.architecture, recipe.dataset, recipe.box_task) == ("mtl_moe", "cub", True)
    assert (recipe.experts, recipe.batch_size, recipe.lr, recipe.epochs) == (experts, batch,
                                                                              1e-4, 100)
    assert recipe.class_subset == ()  # all 200 classes
    reference = paper_reference(name)
    assert (reference["top1"], reference["box_ciou_accuracy"]) == (top1, box)


def test_figures_4_and_7_are_single_task_on_the_same_settings():
    for name, experts in (("mtl_moe_cls_e1", 1), ("mtl_moe_cls_e6", 6)):
        recipe = load_recipe(name, "paper")
        assert (recipe.box_task, recipe.experts, recipe.lr) == (False, experts, 1e-4)
        assert recipe.class_subset == tuple(range(10))
    single, multi = (load_recipe(n, "paper").to_dict() for n in ("mtl_moe_cls_e3", "mtl_moe_e3"))
    differ = {key for key in single if single[key] != multi[key]}
    assert differ == {"name", "description", "box_task"}


def test_figure_5_transfers_190_classes_to_the_last_10():
    base = load_recipe("mtl_transfer_base", "paper")
    assert base.class_subset == tuple(range(190)) and base.experts == 6
    for name, init_from, freeze in (("mtl_transfer_direct", "", ""),
                                    ("mtl_transfer_frozen", "mtl_transfer_base", "experts"),
                                    ("mtl_transfer_full", "mtl_transfer_base", "")):
        recipe = load_recipe(name, "paper")
        assert (recipe.class_subset, recipe.init_from, recipe.freeze) == (LAST_10, init_from,
                                                                          freeze)
    cpu = [load_recipe(n, "cpu").class_subset for n in ("mtl_transfer_base", "mtl_transfer_full")]
    assert not set(cpu[0]) & set(cpu[1])  # held-out classes are new to the base model
