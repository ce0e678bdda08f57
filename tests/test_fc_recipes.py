"""The fusion-coverage paper's recipes state its numbers and hyperparameters (§III, Tables I-III)."""

import dataclasses

import pytest

from vipnb.engine import load_recipe
from vipnb.engine.recipe import paper_reference

# Tables I-III: (backbone, loss) → (timm model, top-1 % at test sizes 224 / 320 / 380).
TABLES = {
    ("resnest101e", "ce"): ("resnest101e", (67.6, 68.02, 66.97)),
    ("tresnet_xl", "ce"): ("tresnet_xl", (66.892, 68.356, 66.562)),
    ("mixnet_xxl", "ce"): ("mixnet_xxl", (66.12, 65.822, 63.734)),
    ("resnest200e", "ce"): ("resnest200e", (68.44, 68.52, 67.138)),
    ("densenet161", "ce"): ("densenet161", (64.218, 65.146, 64.066)),
    ("skresnext50", "ce"): ("skresnext50_32x4d", (63.1, 63.562, 62.774)),
    ("seresnet152d", "ce"): ("seresnet152", (66.174, 66.536, 65.788)),
    ("seresnet101", "ce"): ("seresnet101", (65.938, 67.33, 64.066)),
    ("seresnext101", "ce"): ("seresnext101_32x4d", (66.626, 67.304, 65.112)),
    ("rexnet200", "ce"): ("rexnet_200", (65.992, 66.596, 64.692)),
    ("regnetx120", "ce"): ("regnetx_120", (66.532, 66.292, 64.044)),
    ("inception_resnet_v2", "ce"): ("inception_resnet_v2", (65.55, 66.664, 63.898)),
    ("resnest101e", "taylor"): ("resnest101e", (68.11, 67.33, 66.75)),
    ("tresnet_xl", "taylor"): ("tresnet_xl", (66.968, 68.813, 65.561)),
    ("mixnet_xxl", "taylor"): ("mixnet_xxl", (66.82, 66.33, 64.712)),
    ("resnest200e", "taylor"): ("resnest200e", (68.61, 69.03, 66.65)),
    ("densenet161", "taylor"): ("densenet161", (65.172, 65.536, 65.017)),
    ("resnest101e", "bitempered"): ("resnest101e", (66.744, 67.242, 65.664)),
    ("tresnet_xl", "bitempered"): ("tresnet_xl", (65.711, 67.826, 65.698)),
    ("mixnet_xxl", "bitempered"): ("mixnet_xxl", (65.19, 66.61, 64.925)),
    ("resnest200e", "bitempered"): ("resnest200e", (67.66, 67.09, 66.51)),
    ("densenet161", "bitempered"): ("densenet161", (64.891, 65.55, 64.201)),
}
LOSSES = {"ce": "soft_ce", "taylor": "taylor_ce", "bitempered": "bi_tempered"}
# §III.E: the six coverage models, trained with the DSB focal loss.
COVERAGE = {"resnet101": "resnet101", "rexnet200": "rexnet_200", "inception_v4": "inception_v4",
            "efficientnet_b4": "efficientnet_b4", "resnest200e": "resnest200e",
            "resnext101": "resnext101_32x4d"}
# §III.A-B, the same for every model.
SECTION_3 = {"init": "xavier", "optimizer": "sgd", "momentum": 0.9, "lr": 0.1,
             "weight_decay": 1e-4, "sched": "cosine", "warmup_epochs": 5,
             "scale": (0.08, 1.0), "hflip": 0.5, "vflip": 0.5,
             "color_jitter": (0.5, 0.5, 0.5, 0.1), "gaussian_noise": 20.0,
             "auto_augment": "original", "input_size": 224, "amp": "auto"}


@pytest.mark.parametrize("row", sorted(TABLES), ids=lambda row: "_".join(row))
def test_table_rows_state_the_paper(row):
    backbone, loss = row
    model, top1 = TABLES[row]
    name = f"fc_{backbone}_{loss}"
    recipe = load_recipe(name, "paper")
    assert (recipe.model, recipe.loss) == (model, LOSSES[loss])
    assert {k: getattr(recipe, k) for k in SECTION_3} == SECTION_3
    assert recipe.ratio == pytest.approx((0.75, 4 / 3), abs=1e-4)
    assert recipe.mixup_alpha > 0 and recipe.cutmix_alpha > 0  # §II.C.2-3
    paper = paper_reference(name)["top1_by_test_size"]
    assert (paper[224], paper[320], paper[380]) == top1


@pytest.mark.parametrize("key", sorted(COVERAGE))
def test_coverage_models_train_with_dsb_focal_on_resampled_hard_classes(key):
    recipe = load_recipe(f"fc_cov_{key}", "paper")
    assert (recipe.model, recipe.loss) == (COVERAGE[key], "dsb_focal")
    assert (recipe.coverage_per_hard, recipe.coverage_per_other) == (500, 5)
    assert {k: getattr(recipe, k) for k in SECTION_3} == SECTION_3


def test_every_row_loads_at_every_profile():
    names = [f"fc_{b}_{loss}" for b, loss in TABLES] + [f"fc_cov_{k}" for k in COVERAGE]
    for name in names:
        for profile in ("smoke", "cpu"):
            assert load_recipe(name, profile).dataset == "fashion50"


@pytest.mark.parametrize("profile", ["paper", "cpu"])
@pytest.mark.parametrize("backbone,loss", [(b, loss) for b, loss in TABLES if loss != "ce"])
def test_robust_loss_rows_change_only_the_loss_of_their_cross_entropy_row(backbone, loss, profile):
    """Table II-III's claims compare losses: a row differs from its Table I row in the loss
    and its own parameters only (Taylor's t is 2 at paper, 8 at cpu: chosen on validation)."""
    ce = dataclasses.asdict(load_recipe(f"fc_{backbone}_ce", profile))
    robust = dataclasses.asdict(load_recipe(f"fc_{backbone}_{loss}", profile))
    changed = {k for k in ce if ce[k] != robust[k]} - {"name", "description"}
    loss_keys = {"taylor": {"taylor_order"}, "bitempered": {"bi_tempered_t1", "bi_tempered_t2"}}
    assert changed <= {"loss"} | loss_keys[loss]
    if loss == "taylor":
        assert robust["taylor_order"] == {"paper": 2, "cpu": 8}[profile]
