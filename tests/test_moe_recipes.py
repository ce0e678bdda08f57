"""The MoE paper's recipes state its numbers and hyperparameters (§3.1, Tables 1-3)."""

import pytest

from vipnb.engine import load_recipe
from vipnb.engine.recipe import paper_reference

# Table 1-3 of the paper: recipe → (top-1 %, model, experts, stochastic depth, teacher).
TABLES = {
    "moe_rs50": (67.14, "resnest50d_aa", 1, 0.0, ""),
    "moe_rs_sd50": (68.66, "resnest50d_aa", 1, 0.2, ""),
    "moe_rs_sd50_distill": (69.54, "resnest50d_aa", 1, 0.2, "moe_rs_sd50"),
    "moe_rs_sd50_n3": (70.14, "resnest50d_aa", 3, 0.2, ""),
    "moe_rs_sd50_n3_distill": (71.21, "resnest50d_aa", 3, 0.2, "moe_rs_sd50_n3"),
    "moe_rs_sd50_n3_distill_fusion": (71.46, "resnest50d_aa", 3, 0.2, ""),
    "moe_rs_sd50_n5": (70.55, "resnest50d_aa", 5, 0.2, ""),
    "moe_rs_sd50_n5_distill": (71.17, "resnest50d_aa", 5, 0.2, "moe_rs_sd50_n5"),
    "moe_rs_sd50_n5_distill_e720": (71.67, "resnest50d_aa", 5, 0.2, "moe_rs_sd50_n5"),
    "moe_rs_sd50_n5_distill_fusion": (71.50, "resnest50d_aa", 5, 0.2, ""),
    "moe_rs_sd50_n5_distill_fusion_e720": (71.87, "resnest50d_aa", 5, 0.2, ""),
    "moe_rs101": (69.47, "resnest101e_aa", 1, 0.0, ""),
    "moe_rs_sd101": (70.71, "resnest101e_aa", 1, 0.2, ""),
    "moe_rs_sd101_distill": (71.84, "resnest101e_aa", 1, 0.2, "moe_rs_sd101"),
    "moe_rs_sd101_n3_nodiv": (70.88, "resnest101e_aa", 3, 0.2, ""),
    "moe_rs_sd101_n3": (71.44, "resnest101e_aa", 3, 0.2, ""),
    "moe_rs_sd101_n3_distill": (72.05, "resnest101e_aa", 3, 0.2, "moe_rs_sd101_n3"),
    "moe_rs_sd101_n3_distill_e720": (72.52, "resnest101e_aa", 3, 0.2, "moe_rs_sd101_n3"),
    "moe_rs_sd101_n3_distill_fusion": (72.50, "resnest101e_aa", 3, 0.2, ""),
    "moe_rs_sd101_n3_distill_fusion_e720": (72.67, "resnest101e_aa", 3, 0.2, ""),
    "moe_rs_sd200": (71.12, "resnest200e_aa", 1, 0.2, ""),
    "moe_rs_sd200_distill": (72.02, "resnest200e_aa", 1, 0.2, "moe_rs_sd200"),
    "moe_regnety080": (69.51, "regnety_080", 1, 0.2, ""),
    "moe_regnety080_distill": (70.17, "regnety_080", 1, 0.2, "moe_regnety080"),
    "moe_regnety120": (69.76, "regnety_120", 1, 0.2, ""),
    "moe_regnety120_distill": (70.44, "regnety_120", 1, 0.2, "moe_regnety120"),
    "moe_regnety160": (70.04, "regnety_160", 1, 0.2, ""),
    "moe_regnety160_distill": (70.87, "regnety_160", 1, 0.2, "moe_regnety160"),
    "moe_regnety320": (70.02, "regnety_320", 1, 0.2, ""),
    "moe_regnety320_distill": (70.90, "regnety_320", 1, 0.2, "moe_regnety320"),
    "moe_effnetb4": (67.27, "efficientnet_b4", 1, 0.2, ""),
    "moe_effnetb4_distill": (68.48, "efficientnet_b4", 1, 0.2, "moe_effnetb4"),
    "moe_effnetb5": (68.29, "efficientnet_b5", 1, 0.2, ""),
    "moe_effnetb5_distill": (69.90, "efficientnet_b5", 1, 0.2, "moe_effnetb5"),
    "moe_effnetb6": (69.01, "efficientnet_b6", 1, 0.2, ""),
    "moe_effnetb6_distill": (70.26, "efficientnet_b6", 1, 0.2, "moe_effnetb6"),
    "moe_effnetv2s": (68.54, "efficientnetv2_s", 1, 0.2, ""),
    "moe_effnetv2s_distill": (69.29, "efficientnetv2_s", 1, 0.2, "moe_effnetv2s"),
    "moe_effnetv2m": (69.66, "efficientnetv2_m", 1, 0.2, ""),
    "moe_effnetv2m_distill": (70.06, "efficientnetv2_m", 1, 0.2, "moe_effnetv2m"),
}
# † values: ten crops at a larger test size (on the 720-epoch model where the row has one).
TEN_CROP = {"moe_rs_sd50_n5_distill_fusion": 73.11, "moe_rs_sd101_distill": 72.73,
            "moe_rs_sd101_n3_distill": 73.47, "moe_rs_sd101_n3_distill_fusion": 74.03,
            "moe_rs_sd200_distill": 73.17, "moe_regnety120_distill": 71.92,
            "moe_regnety160_distill": 72.12, "moe_regnety320_distill": 72.21,
            "moe_effnetb4_distill": 69.67, "moe_effnetb5_distill": 71.00,
            "moe_effnetb6_distill": 71.38, "moe_effnetv2s_distill": 70.47,
            "moe_effnetv2m_distill": 71.20}
# §3.1, the same for every supervised model.
SECTION_3_1 = {"warmup_epochs": 25, "warmup_lr": 1e-4, "lr": 0.4, "sched": "cosine",
               "cooldown_epochs": 10, "min_lr": 1e-5, "weight_decay": 1e-4, "momentum": 0.9,
               "auto_augment": "original", "hflip": 0.5, "random_erasing": 0.2,
               "drop_rate": 0.2, "label_smoothing": 0.1, "cache_size": 352, "input_size": 320,
               "amp": "auto", "loss": "positive_class", "dataset": "folder"}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_paper_profile_states_the_papers_hyperparameters(name):
    top1, model, experts, drop_path, teacher = TABLES[name]
    recipe = load_recipe(name, "paper")
    assert paper_reference(name)["top1"] == top1
    assert (recipe.model, recipe.experts, recipe.drop_path_rate) == (model, experts, drop_path)
    assert recipe.interpolation == ("bilinear" if model.startswith("resnest") else "bicubic")
    if "fusion" in name:  # the fusion module trains on frozen experts: its own short schedule
        assert recipe.fusion and recipe.init_from == name.replace("_fusion", "")
        return
    assert recipe.teacher == teacher
    for key, value in SECTION_3_1.items():
        assert getattr(recipe, key) == value, key
    long = name.endswith("_e720")
    # §3.1: 360/720 epochs + 10 of cool-down (`epochs` count it), Mixup off after 300/640
    assert (recipe.epochs, recipe.mixup_off_epochs) == ((730, 90) if long else (370, 70))
    assert recipe.scale == pytest.approx(((320 / 352) ** 2,) * 2, abs=1e-4)
    assert recipe.diversity_weight == (0.0 if experts == 1 or "nodiv" in name else 0.2)


@pytest.mark.parametrize("name", sorted(TEN_CROP))
def test_ten_crop_values_are_recorded(name):
    reference = paper_reference(name)
    assert TEN_CROP[name] in (reference.get("top1_ten_crop"),
                              reference.get("top1_720_epochs_ten_crop"))


@pytest.mark.parametrize("name", sorted(TABLES))
@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_cpu_and_smoke_profiles_are_scaled_analogues_on_fashion50(name, profile):
    recipe = load_recipe(name, profile)
    assert recipe.dataset == "fashion50" and recipe.input_size <= 32
    assert recipe.experts == TABLES[name][2]


def test_cpu_analogues_keep_the_depth_order_of_the_paper():
    depths = [load_recipe(name, "cpu").model for name in ("moe_rs50", "moe_rs101", "moe_rs_sd200")]
    assert depths == ["resnest14d_aa", "resnest26d_aa", "resnest50d_aa"]


@pytest.mark.parametrize("long", ["moe_rs_sd50_n5_distill_e720", "moe_rs_sd101_n3_distill_e720"])
def test_cpu_720_epoch_rows_train_twice_the_epochs(long):
    assert load_recipe(long, "cpu").epochs == 2 * load_recipe(long.removesuffix("_e720"), "cpu").epochs
