"""NBDT's induced hierarchy on a trained fashion50 model groups the classes as a person would:
the footwear together (with at most the bag, the other accessory), and the upper-body
garments apart from the footwear (with at most the other garments and the bag: the model of
the converged 60-epoch recipe puts the bag there, the earlier 12-epoch one did not).

The model trains a quarter of the recipe's 60 epochs (67-70 % test top-1), which the test
needs no more of: for seeds 0, 1 and 2 its tree already puts the three footwear classes alone
in their subtree, and the four upper-body garments alone or with the dress (seed 1)."""

import torch
from conftest import DATA_DIR

from vipnb.data.fashion50 import CLASS_NAMES
from vipnb.engine import load_recipe, train
from vipnb.engine.build import load_trained_model
from vipnb.losses import induce_hierarchy

FOOTWEAR = {5, 7, 9}
ACCESSORIES = FOOTWEAR | {8}
UPPER_BODY = {0, 2, 4, 6}
NOT_FOOTWEAR = UPPER_BODY | {1, 3, 8}


def test_induced_hierarchy_of_a_trained_model_groups_footwear_and_upper_body(tmp_path):
    assert [CLASS_NAMES[c] for c in sorted(FOOTWEAR)] == ["5-sandal", "7-sneaker", "9-ankle_boot"]
    recipe = load_recipe("vipf_t5_resnext50", "cpu", {"seed": 0, "data_dir": DATA_DIR,
                                                        "epochs": 15})
    run = train(recipe, runs_root=tmp_path, progress=False)
    assert run.summary()["test_top1"] > 0.5  # trained, not chance
    model = load_trained_model(recipe, run, len(CLASS_NAMES), torch.device("cpu"))
    tree = induce_hierarchy(model.get_classifier().weight)
    assert FOOTWEAR <= set(tree.smallest_subtree(sorted(FOOTWEAR))) <= ACCESSORIES
    assert UPPER_BODY <= set(tree.smallest_subtree(sorted(UPPER_BODY))) <= NOT_FOOTWEAR
