"""Every row of the VIPF paper's Tables 1-5 has a recipe whose `paper` profile states the
paper's settings, and whose `paper` block holds the paper's number."""

import pytest

from vipnb.engine import load_recipe
from vipnb.engine.recipe import paper_reference
from vipnb.study.plan import VIPF_FINAL_MODELS, notebook_recipes

# recipe: (paper top-1, epochs, input size, model) as Tables 1-5 and §4.1 give them.
PAPER = {
    "vipf_resnext50": (52.01, 360, 224, "resnext50_32x4d"),
    "vipf_d_resnext50": (54.45, 360, 224, "d_resnext50_32x4d"),
    "vipf_sk_resnext50_noaa": (54.06, 360, 224, "sk_resnext50_32x4d_dsk_noaa"),
    "vipf_sk_resnext50": (54.37, 360, 224, "sk_resnext50_32x4d_dsk"),
    "vipf_dsk_resnext50": (55.97, 360, 224, "dsk_resnext50_32x4d"),
    "vipf_dsk_resnext50_pcl": (56.48, 360, 224, "dsk_resnext50_32x4d"),
    "vipf_dsk_resnext50_pcl_cl": (57.51, 360, 224, "dsk_resnext50_32x4d"),
    "vipf_effnet_b3": (62.42, 720, 320, "efficientnet_b3"),
    "vipf_effnet_b3_tsl": (63.15, 720, 320, "efficientnet_b3"),
    "vipf_effnet_b5": (65.43, 720, 320, "efficientnet_b5"),
    "vipf_effnet_b5_tsl": (65.85, 720, 320, "efficientnet_b5"),
    "vipf_effnet_b6": (65.67, 720, 320, "efficientnet_b6"),
    "vipf_effnet_b6_tsl": (66.26, 720, 320, "efficientnet_b6"),
    "vipf_resnest101": (65.96, 720, 320, "resnest101e"),
    "vipf_resnest101_tsl": (67.15, 720, 320, "resnest101e"),
    "vipf_resnest200": (67.40, 720, 320, "resnest200e"),
    "vipf_resnest200_tsl": (67.81, 720, 320, "resnest200e"),
    "vipf_final_dsk50_224": (67.35, 540, 224, "dsk_resnext50_32x4d"),
    "vipf_final_dsk50_320": (69.20, 540, 320, "dsk_resnext50_32x4d"),
    "vipf_final_dsk101_224": (68.02, 540, 224, "dsk_resnext101_32x4d"),
    "vipf_final_dsk101_320": (69.59, 540, 320, "dsk_resnext101_32x4d"),
    "vipf_cutmix_p0": (45.23, 90, 320, "resnext50_32x4d"),
    "vipf_cutmix_p03": (45.73, 90, 320, "resnext50_32x4d"),
    "vipf_cutmix_p05": (46.25, 90, 320, "resnext50_32x4d"),
    "vipf_cutmix_p07": (45.85, 90, 320, "resnext50_32x4d"),
    "vipf_cutmix_p10": (44.35, 90, 320, "resnext50_32x4d"),
    "vipf_t5_resnext50": (50.56, 360, 224, "resnext50_32x4d"),
    "vipf_t5_dual_pool": (50.87, 360, 224, "resnext50_32x4d"),
    "vipf_t5_label_smooth": (50.70, 360, 224, "resnext50_32x4d"),
    "vipf_t5_dropout02": (50.90, 360, 224, "resnext50_32x4d"),
    "vipf_t5_dropout04": (50.84, 360, 224, "resnext50_32x4d"),
    "vipf_t5_all": (51.82, 360, 224, "resnext50_32x4d"),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_profile_states_the_papers_row(name):
    top1, epochs, size, model = PAPER[name]
    recipe = load_recipe(name, "paper")
    assert paper_reference(name)["top1"] == top1
    assert (recipe.epochs, recipe.input_size, recipe.model) == (epochs, size, model)
    # §4.1: 16 GPUs × 64, warm-up 5 epochs from 1e-4, cosine from 0.1, weight decay 1e-4,
    # random resized crop and flip, CutMix with probability 0.5 unless the row varies it.
    assert recipe.batch_size == 16 * 64
    assert (recipe.warmup_epochs, recipe.warmup_lr, recipe.lr) == (5, 1e-4, 0.1)
    assert (recipe.sched, recipe.weight_decay) == ("cosine", 1e-4)
    assert recipe.hflip == 0.5 and recipe.mixup_alpha == 0
    if "cutmix" not in name:
        assert (recipe.cutmix_alpha, recipe.mixup_prob) == (1.0, 0.5)
    if name.startswith("vipf_t5_"):  # Table 5 adds its tricks to a plain ResNeXt
        return
    # §4.1's recipe: dropout 0.2 and label smoothing; dual pool is Table 5's only.
    assert (recipe.drop_rate, recipe.label_smoothing, recipe.global_pool) == (0.2, 0.1, "")


def test_tables_vary_exactly_what_their_rows_name():
    assert [load_recipe(f"vipf_cutmix_p{k}", "paper").mixup_prob for k in ("03", "05", "07", "10")
            ] == [0.3, 0.5, 0.7, 1.0]
    assert load_recipe("vipf_cutmix_p0", "paper").cutmix_alpha == 0
    t5 = {n: load_recipe(f"vipf_t5_{n}", "paper") for n in
          ("resnext50", "dual_pool", "label_smooth", "dropout02", "dropout04", "all")}
    assert (t5["resnext50"].global_pool, t5["resnext50"].label_smoothing,
            t5["resnext50"].drop_rate) == ("avg", 0.0, 0.0)
    assert t5["dual_pool"].global_pool == "catavgmax"
    assert t5["label_smooth"].label_smoothing == 0.1
    assert (t5["dropout02"].drop_rate, t5["dropout04"].drop_rate) == (0.2, 0.4)
    assert (t5["all"].global_pool, t5["all"].label_smoothing, t5["all"].drop_rate) == (
        "catavgmax", 0.1, 0.2)


def test_eq3_weights_follow_the_literal_reading():
    """§4.1: "α, γ and β are set to 1, 0.0005 and 1": PCL 1, tree 0.0005, center 1."""
    pcl_cl = load_recipe("vipf_dsk_resnext50_pcl_cl", "paper")
    assert (pcl_cl.loss, pcl_cl.loss_weight, pcl_cl.center_loss_weight) == ("positive_class",
                                                                            1.0, 1.0)
    for name in ("vipf_effnet_b3_tsl", "vipf_resnest101_tsl", "vipf_resnest200_tsl"):
        recipe = load_recipe(name, "paper")
        assert recipe.tree_loss_weight == 0.0005
        # §3.2's semantic (WordNet) tree at paper (tests/test_wordnet_hierarchy.py); the cpu
        # analogue on fashion50 induces it from the row without TSL
        assert recipe.hierarchy == "wordnet"
        assert load_recipe(name, "cpu").hierarchy_from == name.removesuffix("_tsl")


def test_final_models_train_on_most_of_val_and_test_ten_crops():
    for name in PAPER:
        recipe = load_recipe(name, "paper")
        final = name.startswith(("vipf_final_", "vipf_effnet_", "vipf_resnest"))
        assert recipe.val_into_train == (0.9 if final else 0.0), name
        assert recipe.eval_views == ("ten_crop" if final else "center"), name


@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_row_has_a_small_cpu_analogue(name):
    recipe = load_recipe(name, "cpu")
    assert recipe.dataset == "fashion50" and recipe.input_size <= 40
    # every row keeps the paper's epochs at a sixth (360 -> 60, 720 -> 120, 540 -> 90, 90 -> 15)
    assert 6 * recipe.epochs == load_recipe(name, "paper").epochs


def test_the_ensemble_is_the_final_models_of_the_six_families_section_4_2_names():
    # §4.2: "16 models including EfficientNet-b5, EfficientNet-b6, ResNeSt-101, ResNeSt-200,
    # DSK-ResNeXt50, DSK-ResNeXt101"; no ablation row (b3, γ = 1, the induced tree) joins them
    families = {load_recipe(name, "paper").model for name in VIPF_FINAL_MODELS}
    assert families == {"efficientnet_b5", "efficientnet_b6", "resnest101e", "resnest200e",
                        "dsk_resnext50_32x4d", "dsk_resnext101_32x4d"}
    assert len(set(VIPF_FINAL_MODELS)) == 12
    assert set(VIPF_FINAL_MODELS) <= set(notebook_recipes("03_vipf_dsknet", "paper").recipes)
    for name in VIPF_FINAL_MODELS:
        recipe = load_recipe(name, "paper")
        assert recipe.val_into_train == 0.9 and recipe.eval_views == "ten_crop", name
