"""The `paper` profile is the papers' recipes: one test per paper loads its recipes at `paper`
and checks them against what the paper states, quoting it; beside them, the checks that the
MoCo initialisation (MoE paper) and the ImageNet backbone file (MTL-MoE poster) load."""

from __future__ import annotations

import dataclasses
import shutil
from types import SimpleNamespace
from unittest import mock

import pytest
import timm
import torch
from timm.layers import BlurPool2d

import vipnb.models  # noqa: F401  (registers the papers' models in timm)
from vipnb.engine import build
from vipnb.engine.recipe import (
    from_dict,
    load_recipe,
    paper_reference,
    read_recipe_file,
    recipe_files,
)
from vipnb.engine.tasks.mtl import MtlTask
from vipnb.errors import VipnbError
from vipnb.study.plan import moco_ablation


def rows(prefix: str, source: str) -> list[str]:
    """The recipes named `prefix*` whose `paper` block cites `source` (a table's row)."""
    return [name for name in sorted(recipe_files()) if name.startswith(prefix)
            and source in paper_reference(name).get("source", "")]


# -- MoE with distillation, diversity and fusion (VIPriors 2nd challenge) ----------------------

MOE_ROWS = rows("moe_", "Table")
# §3.1: "'bilinear' is appilied [in SENet and ResNeSt], and 'bicubic' is used in SKNet,
# EfficientNet, EfficientNet-V2 and RegNet."
BICUBIC = ("efficientnet", "regnet")


def test_moe_paper():
    """MoE paper §3.1: "Each model would be self-supervised pretrained by MOVO-v2 on training
    data, and then used for parameters initialization in training. All of models are training
    with 360/720 epochs. Learning rate warms up in the first 25 epochd from 0.0001 to 0.4. Then
    cosine scheduler is applied in the rest epochs. [...] After 300/640 epochs training, mixup
    and cutmix will be disabled in the last 60/80 epochs [...]. Original AutoAugment,
    horizontal flip randomly, erasing randomly with prob 0.2, dropout with prob 0.2, label
    smoothing with value 0.1, stochastic depth with prob 0.2 are used from first to last. And
    after 360/720 epochs training, there are 10 epochs to cool down the model with a learning
    rate of le-5. And weight decay is set to 0.0001. [...] the input image size of model is
    set to 352*352 and would be cropped randomly to 320*320." §2.2: "In this paper, λ is set
    to 0.2." Table 1: "RS-SD" is the ResNeSt with stochastic depth ("RS-50", "RS-101": without).
    """
    assert len(MOE_ROWS) == 40  # Tables 1-3 (Table 1's "+ Fusion" rows of N=1 have no number)
    moco_of_model: dict[str, set[str]] = {}
    for name in MOE_ROWS:
        recipe = load_recipe(name, "paper")
        bicubic = recipe.model.startswith(BICUBIC)
        assert recipe.interpolation == ("bicubic" if bicubic else "bilinear"), name
        if recipe.fusion:  # §2.3: "all of parameters in M_fusion are fixed": the experts' run
            assert recipe.init_from == name.replace("_fusion", ""), name
            continue
        long = name.endswith("_e720")
        expected = {
            # 360/720 epochs of training + 10 of cool-down, Mixup off from 300/640 to the end
            "epochs": 730 if long else 370, "mixup_off_epochs": 90 if long else 70,
            "warmup_epochs": 25, "warmup_lr": 1e-4, "lr": 0.4, "sched": "cosine",
            "cooldown_epochs": 10, "min_lr": 1e-5, "weight_decay": 1e-4,
            "auto_augment": "original", "hflip": 0.5, "random_erasing": 0.2, "drop_rate": 0.2,
            "label_smoothing": 0.1, "cache_size": 352, "input_size": 320,
            "drop_path_rate": 0.0 if name in ("moe_rs50", "moe_rs101") else 0.2,
            "diversity_weight": 0.2 if recipe.experts > 1 and "nodiv" not in name else 0.0,
        }
        assert {key: getattr(recipe, key) for key in expected} == expected, name
        assert recipe.scale == pytest.approx(((320 / 352) ** 2,) * 2, abs=1e-4)
        assert recipe.mixup_alpha > 0 and recipe.cutmix_alpha > 0, name
        moco = recipe.dependency("init_from")
        assert (moco.stage, moco.init_from, moco.experts) == ("moco", "", 1), name
        same_input = ("model", "model_kwargs", "interpolation", "cache_size", "input_size",
                      "mean", "std", "dataset")
        assert ({key: getattr(moco, key) for key in same_input}
                == {key: getattr(recipe, key) for key in same_input}), name
        moco_of_model.setdefault(recipe.model, set()).add(moco.name)
    # one MoCo run per backbone architecture, shared by the rows built on it
    assert all(len(runs) == 1 for runs in moco_of_model.values()), moco_of_model
    assert len(moco_of_model) == 12


@pytest.mark.parametrize("profile", ["paper", "cpu", "smoke"])
def test_moco_ablation_sides_differ_in_their_initialisation_only(profile):
    """The paper gives no ablation of §3.1's MoCo-v2 start; notebook 01 measures one with two
    recipes that differ in `init_from` alone, each trained once (at paper moe_rs_sd50 itself
    starts from MoCo, so moe_rs_sd50_moco would train it again)."""
    without, with_moco = (load_recipe(name, profile) for name in moco_ablation(profile))
    assert without.init_from == "" and with_moco.dependency("init_from").stage == "moco"
    assert "moe_rs_sd50" in (without.name, with_moco.name)
    differ = {k for k, v in dataclasses.asdict(without).items()
              if getattr(with_moco, k) != v} - {"name", "description", "init_from"}
    assert not differ


def _on_meta(recipe):
    """The recipe's model and a MoCo backbone of it (the `backbone` its checkpoint saves),
    built without memory on the meta device."""
    with torch.device("meta"):
        backbone = timm.create_model(recipe.model, num_classes=0,
                                     drop_path_rate=recipe.drop_path_rate, **recipe.model_kwargs)
        return build.build_model(recipe, 1000), backbone.state_dict()


# Loading onto the meta device copies nothing; torch says so for every BatchNorm counter.
quiet_meta = pytest.mark.filterwarnings("ignore:.*to a meta parameter")
MOCO_RUN = SimpleNamespace(path="runs/moe_moco_...")  # named by initialise_from's error


@quiet_meta
def test_moco_backbones_load_into_every_single_backbone_row():
    """`init_from` of a MoCo run loads its backbone into the row's model (the classifier stays
    as initialised), for each of the 12 architectures at paper size."""
    checked = set()
    for name in MOE_ROWS:
        recipe = load_recipe(name, "paper")
        if not recipe.init_from or recipe.fusion or recipe.model in checked:
            continue
        model, backbone = _on_meta(recipe)
        with mock.patch.object(build, "trained_weights", lambda run, weights=backbone: weights):
            build.initialise_from(model, MOCO_RUN)
        checked.add(recipe.model)
    assert len(checked) == 12


@quiet_meta
def test_a_moco_backbone_loads_into_the_rows_with_experts():
    """The N = 3/5 rows start from their backbone's MoCo run too: its stem and stages 1-2
    become the shared trunk, its stages 3-4 every expert's."""
    recipe = load_recipe("moe_rs_sd50_n3", "paper")
    assert load_recipe(recipe.init_from, "paper").stage == "moco"
    model, backbone = _on_meta(recipe)
    with mock.patch.object(build, "trained_weights", lambda run: backbone):
        build.initialise_from(model, MOCO_RUN)


def test_the_backbone_lands_in_the_trunk_and_in_every_expert():
    recipe = from_dict({"name": "r", "model": "resnet10t", "experts": 3, "shared_stages": 2})
    model = build.build_model(recipe, 5)
    backbone = timm.create_model("resnet10t", num_classes=0).state_dict()
    with mock.patch.object(build, "trained_weights", lambda run: backbone):
        build.initialise_from(model, MOCO_RUN)
    state = model.state_dict()
    assert torch.equal(state["trunk.0.0.weight"], backbone["conv1.0.weight"])
    assert torch.equal(state["trunk.5.0.conv1.weight"], backbone["layer2.0.conv1.weight"])
    for n in range(3):
        assert torch.equal(state[f"experts.{n}.layer4.0.conv2.weight"],
                           backbone["layer4.0.conv2.weight"])
    heads = [state[f"experts.{n}.fc.weight"] for n in range(3)]
    assert not torch.equal(heads[0], heads[1])  # each expert's own draw breaks the symmetry


# -- Fusion and result coverage --------------------------------------------------------------

# §III.B, in timm's names: (model, loss) of the 22 models.
FC_MODELS = {
    *((model, loss) for model in ("resnest101e", "tresnet_xl", "mixnet_xxl", "resnest200e",
                                  "densenet161")
      for loss in ("soft_ce", "taylor_ce", "bi_tempered")),
    *((model, "soft_ce") for model in ("skresnext50_32x4d", "seresnet152", "seresnet101",
                                       "seresnext101_32x4d", "rexnet_200", "regnetx_120",
                                       "inception_resnet_v2")),
}


def test_fusion_coverage_paper():
    """Fusion-coverage paper §III.B: "We trained a total of 22 models [...] namely resnest101
    wtih ce, taylor_ce and bi_tempered_logistic loss, TresnetXL with ce, taylor_ce and
    bi_tempered_logistic loss, mixnetXXL with ce, taylor_ce and bi_tempered_logistic loss,
    resnest200 wtih ce, taylor_ce and bi_tempered_logistic loss, densenet161 with ce, taylor_ce
    and bi_tempered_logistic loss, skresnext50_32*4d with ce loss, seresnet152 with ce loss,
    seresnet101 with ce loss, seresnext101 with ce loss, rexnet200 with ce loss, regnetx120 with
    ce loss and inceptionresnetV2 with ce loss. [...] we use Xavier algorithm to initialize the
    convolution and fully connected layers. The optimizer we choose to use SGD and set the
    momentum to 0.9. The initialization learning rate we set to 0.1 and use warm up to
    linearly increase to the preset learning rate in the first 5 epochs and then decay
    according to the cos function value and the weight decay is set to 0.0001."
    §II.B.1 "Label Smoothing [...] q_i = 1 − ε if i = y, ε/(K − 1) otherwise, where ε is a small
    constant" (no number given: timm's usual 0.1). §III.A: "aspect ratio is randomly sampled in
    [3/4,4/3] and area randomly sampled in [8%,100%], then resize the cropped region into a
    224-by-224 square image", "flipped horizontally and vertically based on a probability of
    0.5", "brightness, contrast, saturation and hue with parameters [0.5, 1.5], [0.5, 1.5],
    [0.5, 1.5], [-0.1, 0.1]", "Gaussian noise with parameter settings of 0, 1, 20".
    §III.E: "each category was resampled to 500 data. For the other categories, we randomly
    selected 5 samples [...] using resent101, rexnet200, inveptionv4, efficientnetb4,
    resnest200 and resnext101 [...] we used the DSBfocalloss".
    """
    table_rows = rows("fc_", "Table")
    recipes = {name: load_recipe(name, "paper") for name in table_rows}
    assert {(r.model, r.loss) for r in recipes.values()} == FC_MODELS and len(recipes) == 22
    coverage = {name: load_recipe(name, "paper") for name in rows("fc_cov_", "§III.E")}
    assert {r.model for r in coverage.values()} == {"resnet101", "rexnet_200", "inception_v4",
                                                    "efficientnet_b4", "resnest200e",
                                                    "resnext101_32x4d"}
    expected = {"label_smoothing": 0.1, "init": "xavier", "optimizer": "sgd", "momentum": 0.9,
                "lr": 0.1, "warmup_epochs": 5, "sched": "cosine", "weight_decay": 1e-4,
                "scale": (0.08, 1.0), "input_size": 224, "hflip": 0.5, "vflip": 0.5,
                "color_jitter": (0.5, 0.5, 0.5, 0.1), "gaussian_noise": 20.0}
    for name, recipe in {**recipes, **coverage}.items():
        assert {key: getattr(recipe, key) for key in expected} == expected, name
        assert recipe.ratio == pytest.approx((3 / 4, 4 / 3), abs=1e-4), name
    for name, recipe in coverage.items():
        assert (recipe.loss, recipe.coverage_per_hard, recipe.coverage_per_other) == (
            "dsb_focal", 500, 5), name


# -- VIPF: DSK-net, positive-class, center and tree losses -----------------------------------

VIPF_ROWS = rows("vipf_", "VIPF paper, Table")
# §3.1 "In DSK, 3x3 filter is applied in max pooling and strided convolution"; Table 1 has
# "SK-ResNeXt50_32x4d without anti-aliasing" beside "SK-ResNeXt50_32x4d".
def anti_aliased(name: str) -> bool:
    return name == "vipf_sk_resnext50" or name.startswith(("vipf_dsk_", "vipf_final_"))
# Table 5: "ResNeXt50_32x4d+dual pool", "ResNeXt50_32x4d+dual pool+label smooth+dropout with
# prob=0.2"; §4.1's recipe does not list dual pool.
DUAL_POOL = ("vipf_t5_dual_pool", "vipf_t5_all")


def test_vipf_paper():
    """VIPF paper §4.1: "random resize and crop, random horizontal flip and CutMix(with a
    probability of 0.5). And all models are trained with 16 GPUs and 64 samples per CPU. In
    the training stage, warm up with initial lr of 0.0001 in 5 epochs, cosine learning rate
    with initial lr of 0.1, dropout with probability of 0.2, weight decay of 0.0001 and label
    smooth are used for learning. For coefficients in Eq.6, α, γ and β are set to 1, 0.0005
    and 1." (read as written: center loss β = 1, tree loss γ = 0.0005; the swapped reading is
    vipf_*_swapped / _g1, not rows). Table 1: "Models are trained with 360 epochs"; Table 2:
    "trained with 720 epochs"; Table 3: "trained with 540 epochs"; Table 4: "Input size is
    320x320, training epoch is 90"; "For final prediction, Test Time Augmentation(TTA) with
    10-crop was used." Dual pool and anti-aliasing only on the rows that name them (above).
    """
    assert len(VIPF_ROWS) == 32
    blur_of: dict[tuple, bool] = {}
    for name in VIPF_ROWS:
        recipe = load_recipe(name, "paper")
        table = paper_reference(name)["source"].removeprefix("VIPF paper, ")
        assert (recipe.batch_size, recipe.warmup_epochs, recipe.warmup_lr, recipe.lr,
                recipe.sched, recipe.weight_decay) == (16 * 64, 5, 1e-4, 0.1, "cosine", 1e-4)
        assert (recipe.hflip, recipe.scale, recipe.mixup_alpha) == (0.5, (0.08, 1.0), 0.0)
        if table != "Table 4":
            assert (recipe.cutmix_alpha, recipe.mixup_prob) == (1.0, 0.5), name
        if table != "Table 5":
            assert (recipe.drop_rate, recipe.label_smoothing) == (0.2, 0.1), name
        epochs = {"Table 1": 360, "Table 2": 720, "Table 3": 540, "Table 4": 90, "Table 5": 360}
        assert recipe.epochs == epochs[table], name
        final = table in ("Table 2", "Table 3")
        assert recipe.eval_views == ("ten_crop" if final else "center"), name
        assert (recipe.global_pool == "catavgmax") == name.startswith(DUAL_POOL), name
        with_center_loss = name.endswith("_pcl_cl") or table == "Table 3"
        assert recipe.center_loss_weight == (1.0 if with_center_loss else 0.0), name
        assert recipe.tree_loss_weight == (0.0005 if name.endswith("_tsl") else 0.0), name
        key = (recipe.model, tuple(sorted(recipe.model_kwargs.items())))
        if key not in blur_of:
            with torch.device("meta"):
                model = timm.create_model(recipe.model, **recipe.model_kwargs)
            blur_of[key] = any(isinstance(m, BlurPool2d) for m in model.modules())
        assert blur_of[key] == anti_aliased(name), name


# -- MTL-MoE on CUB-200-2011 -----------------------------------------------------------------

def test_mtl_moe_paper():
    """MTL-MoE poster, Experiment 2 table: "1-Expert MTL-MOE 16 1e-4 200 100", "3-Experts
    MTL-MOE 16 1e-4 200 100", "6-Experts MTL-MOE 8 1e-4 200 100" (batch size, learning rate,
    classes, epochs); METHOD: "the integrated loss between complete-IoU loss in the regression
    task and the Cross-entropy loss in the classification task". Experiment 1: "a single-expert
    model and a MOE model with 6 experts on 10 classes"; the transfer table: 190 classes for
    the base model, 10 to fine-tune, "Freeze parameters in experts and feature condense layer".
    Its 79-80 % on CUB implies an ImageNet-initialised backbone: `pretrained_file` is in the
    paper profile, empty (nothing downloads), for the user to point at such weights.
    """
    for name, experts, batch in (("mtl_moe_e1", 1, 16), ("mtl_moe_e3", 3, 16),
                                 ("mtl_moe_e6", 6, 8)):
        recipe = load_recipe(name, "paper")
        assert (recipe.architecture, recipe.dataset, recipe.class_subset) == ("mtl_moe", "cub",
                                                                              ())
        assert (recipe.experts, recipe.batch_size, recipe.lr, recipe.epochs) == (experts, batch,
                                                                                 1e-4, 100)
        assert (recipe.box_task, recipe.box_loss_weight) == (True, 1.0)
        assert recipe.pretrained_file == ""
    assert "pretrained_file" in read_recipe_file("mtl_moe_e3")["profiles"]["paper"]
    for name, experts in (("mtl_moe_cls_e1", 1), ("mtl_moe_cls_e6", 6)):
        recipe = load_recipe(name, "paper")
        assert (recipe.experts, recipe.box_task, len(recipe.class_subset)) == (experts, False, 10)
    assert load_recipe("mtl_transfer_base", "paper").class_subset == tuple(range(190))
    for name, freeze in (("mtl_transfer_frozen", "experts"), ("mtl_transfer_full", "")):
        recipe = load_recipe(name, "paper")
        assert (recipe.init_from, recipe.freeze) == ("mtl_transfer_base", freeze)
        assert recipe.class_subset == tuple(range(190, 200))


NARROW = {"channels": [16, 32, 64, 128]}  # the cpu profile's ResNet-18 backbone


def _mtl_recipe(pretrained_file: str, **settings):
    return from_dict({"name": "mtl_pretrained", "architecture": "mtl_moe",
                      "dataset": "fashion_boxes", "model": "resnet18", "model_kwargs": NARROW,
                      "experts": 3, "gate_k": 2, "amp": "none", "channels_last": False,
                      "pretrained_file": pretrained_file, **settings})


def _build(recipe):
    data = SimpleNamespace(classes=["a", "b", "c"], val=None)  # BoxData's fields it reads
    task = MtlTask(recipe, data, torch.device("cpu"), None)
    return task.build_model({})


def test_pretrained_file_starts_the_backbone_from_its_weights(tmp_path):
    source = timm.create_model("resnet18", num_classes=7, **NARROW)  # its classifier is dropped
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model = _build(_mtl_recipe(str(tmp_path / "resnet18.pth")))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    fresh = _build(_mtl_recipe(""))
    assert not torch.equal(fresh.backbone.conv1.weight, source.conv1.weight)


def test_a_pretrained_file_that_does_not_fit_is_named(tmp_path):
    wider = tmp_path / "resnet18_wide.pth"
    torch.save(timm.create_model("resnet18").state_dict(), wider)
    with pytest.raises(VipnbError, match=r"resnet18_wide\.pth: its weights do not fit"):
        _build(_mtl_recipe(str(wider)))
    deeper = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", **NARROW).state_dict(), deeper)
    with pytest.raises(VipnbError, match=r"resnet34\.pth: .*unexpected \['layer1\.2"):
        _build(_mtl_recipe(str(deeper)))
    with pytest.raises(VipnbError, match=r"missing\.pth: no such file"):
        _build(_mtl_recipe(str(tmp_path / "missing.pth")))


def test_the_pretrained_files_content_names_the_run(tmp_path):
    first, moved = tmp_path / "a.pth", tmp_path / "elsewhere" / "b.pth"
    torch.save(timm.create_model("resnet18", **NARROW).state_dict(), first)
    moved.parent.mkdir()
    shutil.copy(first, moved)

    def run_name(path: str) -> str:
        return load_recipe("mtl_moe_e3", "paper", {"pretrained_file": path}).run_name

    unset = load_recipe("mtl_moe_e3", "paper").run_name
    assert run_name(str(first)) == run_name(str(moved)) != unset
    assert run_name("") == unset
    torch.save(timm.create_model("resnet18", **NARROW).state_dict(), moved)  # other weights
    assert run_name(str(moved)) != run_name(str(first))
    with pytest.raises(VipnbError, match=r"mtl_moe_e3: pretrained_file='.*nothing\.pth' is not"):
        run_name(str(tmp_path / "nothing.pth"))

