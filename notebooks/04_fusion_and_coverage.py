# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Many backbones, robust losses, two-stage fusion and result coverage
#
# A VIPriors image-classification entry that reached **75.178 %** top-1 on the test set
# without a new architecture: many differentiated backbones trained from scratch with three
# losses, fused in two stages, then a targeted second pass over the classes the fusion still
# gets wrong. Its ideas, each a few lines in `vipnb`:
#
# 1. **Backbones** (§II.A, §III.B) from timm, Xavier-initialised, SGD with a 5-epoch warm-up
#    to 0.1 then cosine.
# 2. **Robust losses** (§II.B): cross-entropy, **Taylor cross-entropy** (eq. 3) and the
#    **bi-tempered logistic loss** (eq. 4–5).
# 3. **Augmentation** (§III.A): random resized crops, horizontal and vertical flips, colour
#    jitter, Gaussian noise; **TTA** with flips, colour jitter, noise and rotation, at three
#    test sizes.
# 4. **Two-stage fusion** (§III.D): soft voting within a test size and loss, weighted by the
#    softmax of the models' validation scores; hard voting across the nine results.
# 5. **Result coverage** (§III.E): the classes the fusion gets wrong more often than not are
#    trained again, resampled, with the **DSB focal loss** (eq. 8), and their predictions
#    replace the fused ones.
#
# At the `paper` profile every row of Tables I–III and every coverage model is a recipe with
# the paper's settings for the real data (GPU servers). At `cpu`, a handful of small,
# genuinely different timm backbones stand in for the twelve on **fashion50** (10 classes,
# 50 training and 50 validation images a class; Fashion-MNIST's 10,000 test images, all
# scored with TTA); `make reproduce` runs three seeds, and more where a claim is wide.

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper
seeds = [0]  # the cpu profile of `make reproduce` runs three seeds
data_root = None  # paper profile: the imagenet_50 folder (recipes fuse train + val); None: fashion50
recipe_overrides = {}  # recipe keys set for every run, e.g. {"accum_steps": 4}
processes = None  # runs trained and scored at once; None: one single-threaded process per core at cpu
max_seeds = None  # claims wider than ±1.5 pp train their rows on more seeds, up to this many;
# None: 10 at cpu, none at smoke and paper (each seed is a whole training run)
out_dir = None  # reports folder; None: build/interactive-reports/<profile>/ (vipnb run: reports/)
command = None  # set by vipnb run: the command line the report headers name

# %%
import time
from pathlib import Path

import numpy as np
import torch
from IPython.display import Image, Markdown, display

import vipnb
from vipnb import paths
from vipnb.bench import throughput_table
from vipnb.engine import load_recipe
from vipnb.engine.parallel import default_processes, train_many
from vipnb.engine.recipe import paper_reference
from vipnb.eval.coverage import coverage_classes
from vipnb.eval.metrics import confusion_matrix, hard_classes, label_changes, per_class_accuracy
from vipnb.losses import bi_tempered_logistic_loss, taylor_cross_entropy
from vipnb.report.ablations import write_ablations, write_claims
from vipnb.report.header import make_header
from vipnb.report.plots import confusion_heatmap, per_class_accuracy_plot
from vipnb.report.runs_table import write_runs_table
from vipnb.report.tables import ResultRow, write_hard_classes, write_table
from vipnb.study.claims import Claim, Result, against_baselines, assess
from vipnb.study.fusion import fuse, run_coverage, tta_score_many, tta_scores
from vipnb.study.more_seeds import add_seeds_where_wide
from vipnb.study.plan import show_plan
from vipnb.study.seed_groups import common_seeds, on_common_seeds, train_seed_groups

started = time.perf_counter()
out_dir = Path(out_dir or paths.report_dir("04_fusion_and_coverage", profile))
# where the built-in datasets are built and images decoded ($VIPNB_DATA or ./data), passed down
overrides = {**paths.data_places(), **({"data_root": data_root} if data_root else {}),
             **recipe_overrides}
runs_root = paths.runs_root()  # where runs live ($VIPNB_RUNS or ./runs), passed down
if profile == "paper":  # what this notebook would train and its cost, before it starts
    show_plan("04_fusion_and_coverage", profile, seeds, runs_root, overrides, throughput_table())
print("vipnb", vipnb.__version__, "| profile", profile, "| seeds", seeds)

# %% [markdown]
# ## 1 · Robust losses
#
# With $p_y$ the softmax probability of the labelled class:
#
# - **Cross-entropy** $-\log p_y$ grows without bound when a (possibly mislabelled) example is
#   confidently predicted as another class.
# - **Taylor cross-entropy** (eq. 3) keeps the first $t$ terms of the series
#   $-\log p_y = \sum_k (1-p_y)^k / k$: $L = \sum_{k=1}^{t} (1-p_y)^k / k$, bounded by
#   $\sum_k 1/k$ (1.5 for $t = 2$). The paper does not give $t$; the `paper` recipes use 2,
#   the `cpu` ones 8, chosen on validation (at 2 they barely learn in 40 epochs: eq. 3's
#   gradient is $1-(1-p_y)^t$ times cross-entropy's; the measurements are in the recipes).
# - **Bi-tempered logistic loss** (eq. 4–5, Amid et al. 2019) replaces log and exp by
#   $\log_t x = (x^{1-t} - 1)/(1-t)$ and $\exp_t x = [1 + (1-t)x]_+^{1/(1-t)}$: a
#   temperature $t_1 < 1$ bounds the loss, $t_2 > 1$ gives the softmax heavier tails. It is
#   numerically equal to Google's reference implementation (its own test values are in
#   `tests/test_robust_losses.py`). The paper does not give $t_1, t_2$; the recipes use
#   0.8 and 1.2.
#
# One example whose label says class 1 while the logits say class 0 ever more confidently:

# %% tags=["nbval-check-output"]
label = torch.tensor([1])
print(f"{'logit gap':>9s} {'CE':>7s} {'Taylor t=2':>10s} {'Taylor t=8':>10s} {'bi-tempered':>11s}")
for gap in (0.0, 2.0, 5.0, 10.0):
    logits = torch.tensor([[gap, 0.0, 0.0]])
    ce = torch.nn.functional.cross_entropy(logits, label)
    taylor = [taylor_cross_entropy(logits, label, order=t).item() for t in (2, 8)]
    bitempered = bi_tempered_logistic_loss(logits, label, t1=0.8, t2=1.2)
    print(f"{gap:9.1f} {ce.item():7.3f} {taylor[0]:10.3f} {taylor[1]:10.3f} {bitempered.item():11.3f}")

# %% [markdown]
# **DSB focal loss** (eq. 8) weighs each class's sigmoid focal loss (eq. 7) by $1/S_i$,
# $S_i$ the class's *semantic scale*. The paper withheld how $S_i$ is measured; its authors
# published it later (Ma et al., *Delving into Semantic Scale Imbalance*, ICLR 2023), and
# `vipnb` follows that **later definition**: the volume of the class's feature set,
# $S = \tfrac12 \log_2 \det(I + \tfrac{d}{m} Z Z^\top)$ for the $m$ most recent centred,
# L2-normalised $d$-dimensional features $Z$ of the class, kept in a feature store during
# training and turned into weights $\propto 1/S_i$ (mean 1) at every epoch.
#
# ## 2 · The recipes
#
# One YAML file per row. The `paper` profile states §III: Xavier initialisation, SGD
# momentum 0.9, lr 0.1 with a 5-epoch linear warm-up then cosine, weight decay 1e-4, crops of
# 8–100 % area and aspect 3/4–4/3, flips p = 0.5 both ways, colour jitter 0.5–1.5 and hue
# ±0.1, Gaussian noise of amplitude 20, AutoAugment, Mixup, CutMix, bf16. What the paper
# leaves out (epochs, batch size, Mixup/CutMix strengths, t of the Taylor loss, t1/t2, γ)
# is chosen and said in the recipe files. The `cpu` profile departs from it where validation
# said so (measured, in `fc_resnest101e_ce.yaml`): crops and horizontal flips only, as
# vertical flips, colour jitter and noise cost 5.6 points of validation top-1 on fashion50's
# upright grey garments, and AutoAugment and Mixup 20–30 more (measured on test, in an
# earlier calibration); 80 epochs, where every stand-in's validation learning curve stops
# rising by more than its seed spread (at the 40 trained before, each family stopped 0.9–3.4
# points short); and, as §III.C says, training on train + 80 % of val (900 images), the other
# 100 val images kept to weigh the fusion and find the hard classes.

# %% tags=["nbval-check-output"]
keys = ["model", "init", "epochs", "warmup_epochs", "lr", "scale", "vflip", "color_jitter",
        "gaussian_noise", "auto_augment", "mixup_alpha", "input_size"]
paper_recipe, this_recipe = (load_recipe("fc_resnest101e_ce", p) for p in ("paper", profile))
print(f"{'fc_resnest101e_ce':18s} {'paper':>22s} {profile:>22s}")
for key in keys:
    print(f"{key:18s} {str(getattr(paper_recipe, key)):>22s} {str(getattr(this_recipe, key)):>22s}")

# %% [markdown]
# ## 3 · Training every model
#
# The paper's rows: 12 backbones with cross-entropy, 5 of them also with the Taylor and the
# bi-tempered loss (22 models). At `cpu`, five families stand in: ResNeSt for the ResNeSts,
# SE-ResNet for the SE-ResNe(X)ts, SK-ResNet for SK-ResNeXt-50, DenseNet for DenseNet-161
# and RegNetX-200MF's design rule for RegNetX-12GF, narrowed to train in minutes; the
# ResNeSt and DenseNet stand-ins also train with the two robust losses (9 models per seed),
# `processes` runs at a time. TResNet, MixNet, ReXNet and Inception-ResNet have no member
# small enough to train on 28 px images in minutes here: their rows have recipes for the
# `paper` profile and no `cpu` result.

# %%
BACKBONES = {"resnest101e": "resnest101", "tresnet_xl": "TresnetXL", "mixnet_xxl": "mixnetXXL",
             "resnest200e": "resnest200", "densenet161": "densenet161",
             "skresnext50": "skresnext50", "seresnet152d": "seresnet152", "seresnet101": "seresnet101",
             "seresnext101": "seresnext101", "rexnet200": "rexnet200", "regnetx120": "regnetx120",
             "inception_resnet_v2": "inceptionresnetV2"}
ROBUST = ["resnest101e", "tresnet_xl", "mixnet_xxl", "resnest200e", "densenet161"]
STAND_INS = ["resnest101e", "seresnet101", "skresnext50", "densenet161", "regnetx120"]
# Paper rows whose family is trained once at cpu, under another row's name.
SAME_FAMILY = {"resnest200e": "resnest101e", "seresnet152d": "seresnet101",
               "seresnext101": "seresnet101"}
LOSSES = {"ce": ("table1", "Table I", "cross-entropy"), "taylor": ("table2", "Table II", "Taylor CE"),
          "bitempered": ("table3", "Table III", "bi-tempered")}
COVERAGE = (["resnet101", "rexnet200", "inception_v4", "efficientnet_b4", "resnest200e",
             "resnext101"] if profile == "paper" else ["resnet101", "resnest200e", "resnext101"])
backbones = list(BACKBONES) if profile == "paper" else STAND_INS
models = {f"fc_{b}_{loss}": (b, loss) for loss in LOSSES for b in backbones
          if loss == "ce" or b in ROBUST}
rows = list(models)
BASELINE = "baseline_resnet"
loss_of = {row: loss for row, (_, loss) in models.items()}


workers = processes or default_processes(profile)
# Section 9's plain baseline (notebook 00's full-width ResNet, the longest runs) is listed
# first so it starts first in the same pool (runs of equal epochs start in the order given),
# and no core idles at the end while its last seed trains alone.
groups = train_seed_groups([BASELINE, *rows], profile, seeds, overrides, workers,
                           runs_root=runs_root)
runs = {(row, seed): run for row in rows
        for seed, run in zip(seeds, groups[row].runs, strict=True)}
training_s = sum(run.summary()["wall_time_s"] for run in runs.values())
print(f"{len(rows)} models x {len(seeds)} seed(s); training time: {training_s / 60:.1f} min")

# %% [markdown]
# ## 4 · Tables I–III: every model at three test sizes, with TTA
#
# The paper tests each model on the whole image resized to 224, 320 and 380 px (trained on
# 224 px crops) under four TTA transforms; the probabilities of the views are averaged. At
# `cpu` the sizes scale with the input: 28, 40 and 48 px for 28 px training crops. TTA here
# is the centre view, its mirror, colour jitter, Gaussian noise and a rotation of up to 10°
# (deterministic, so a re-score gives the same numbers). Validation scores (all of val: 100
# images at `cpu`, 10 a class) pick fusion weights and hard classes; the test column is all
# of test (its first `TEST_IMAGES` at `smoke`).
#
# Then power where it is missing: each step of section 5 whose paired 95 % interval is wider
# than ±1.5 pp trains its rows on more seeds, as many as its spread asks for, up to
# `max_seeds` (10 at `cpu`; `vipnb.study.more_seeds`). So do section 9's claims on the
# stage-2 fusion and the best single model (against each other and the two baselines): they
# compare every row, so a wide one trains every row and notebook 00's ResNet on more seeds.
# A table row averages all of its seeds; fusion and coverage (sections 6–9) use every seed
# that all rows and the ResNet share. Coverage's own claims are not widened: its models
# follow each seed's hard classes, known only after the fusion.
#
# The paper's networks end at a 7×7 map at 224 px, 10×10 at 320 and 12×12 at 380. At stride
# 32 a 28 px input would end at 1×1 and 40/48 px at 2×2, a change of regime the paper does
# not have; so at `cpu` the last two stages are dilated (timm's `output_stride=8`; the
# DenseNet keeps two dense blocks and ends at 3×3 at 28 px), and the last map grows 4×4 →
# 5×5 → 6×6. That keeps most members within a point or two at 40 px; at 48 px some still
# lose several points (the steps below).

# %%
PAPER_SIZES = (224, 320, 380)
input_size = load_recipe(rows[0], profile).input_size
TEST_SIZES = dict(zip(PAPER_SIZES, (round(input_size * s / 224) for s in PAPER_SIZES),
                      strict=True))
# All 10,000 test images at cpu, as at paper: a sample makes much of some claims' spread
# (CE -> Taylor CE on the DenseNet stand-in read ±5.0 pp on 500 images with TTA, ±1.4 pp on
# all 10,000 without). Scoring 15 views of each is about as costly as training the model.
TEST_IMAGES = {"smoke": 100, "cpu": 0, "paper": 0}[profile]  # 0: all
mid = TEST_SIZES[320]


def paper_at(row, paper_size):
    return paper_reference(row)["top1_by_test_size"][paper_size]


def top1_at(group, size):
    """Test top-1 (%) of each run of `group` at `size` under TTA."""
    return [100 * tta_scores(run, size, TEST_IMAGES).test.top1 for run in group.runs]


def claims_of(groups):
    """Section 5's steps as claims over the seeds their runs share, with the rows they
    compare: each robust loss against cross-entropy, each test size against the training
    size."""
    tta_score_many([run for row in rows for run in groups[row].runs], TEST_SIZES.values(),
                   TEST_IMAGES, workers)  # the runs not scored yet
    claims = []
    for b in (b for b in backbones if b in ROBUST):
        for loss, name in (("taylor", "CE"), ("bitempered", "CE")):
            ce, robust = on_common_seeds(groups[f"fc_{b}_ce"], groups[f"fc_{b}_{loss}"])
            claims.append((Claim(f"{name} → {LOSSES[loss][2]} ({BACKBONES[b]}, 320 px)",
                                 paper_at(f"fc_{b}_ce", 320), paper_at(f"fc_{b}_{loss}", 320),
                                 top1_at(ce, mid), top1_at(robust, mid), test_images=test_images),
                           (ce.name, robust.name)))
    for row in rows:
        for ps in (320, 380):
            claims.append((Claim(f"test size 224 → {ps} px ({row})", paper_at(row, 224),
                                 paper_at(row, ps), top1_at(groups[row], TEST_SIZES[224]),
                                 top1_at(groups[row], TEST_SIZES[ps]), test_images=test_images),
                           (row,)))
    return claims


MATCHED = "fc_resnest101e_ce"  # section 9's matched baseline
paper_single = max(v for row in rows
                   for v in paper_reference(row).get("top1_by_test_size", {}).values())


def fused(groups):
    """Per seed that every row and notebook 00's ResNet have: the rows' TTA scores at the
    three test sizes and their two-stage fusion (section 6)."""
    common = common_seeds(*(groups[name] for name in [*rows, BASELINE]))
    scores = {s: {(row, size): tta_scores(groups[row].of_seeds([s]).runs[0], size, TEST_IMAGES)
                  for row in rows for size in TEST_SIZES.values()} for s in common}
    return scores, {s: fuse(scores[s], loss_of) for s in common}


def best_single(seed_scores):
    """The model and test size with the best validation top-1 among one seed's scores."""
    return max(seed_scores, key=lambda key: seed_scores[key].val.top1)


def accuracy(labels_per_seed):
    return [100 * float((labels[known] == test_labels[known]).mean()) for labels in labels_per_seed]


def final_results(scores, fusions):
    """The best single model (by validation) and the stage-2 fusion, per seed."""
    return [Result("best single model", paper_single,
                   [100 * scores[s][best_single(scores[s])].test.top1 for s in scores],
                   test_images),
            Result("stage-2 fusion", 72.4, accuracy(fusions[s].stage2_test for s in fusions),
                   test_images)]


def baseline_results(groups, seeds):
    """Section 9's two baselines on `seeds` and on the finals' test images."""
    resnet = groups[BASELINE].of_seeds(seeds)
    return [Result(f"the matched plain ResNeSt ({MATCHED}, {input_size} px)",
                   paper_at(MATCHED, 224), top1_at(groups[MATCHED].of_seeds(seeds), input_size),
                   test_images),
            Result("notebook 00's plain ResNet", 26.39, resnet.top1("test", test_ids),
                   resnet.scored_images("test", test_ids))]


def final_claims(finals, baselines):
    """Every final against both baselines, and the fusion against the best single model."""
    return [*against_baselines(finals, baselines),
            Claim("stage-2 fusion vs best single model", paper_single, 72.4, finals[0].ours,
                  finals[1].ours, test_images=test_images)]


def widened_claims(groups):
    """What more seeds can narrow: section 5's steps, and the claims on the finals before
    coverage (every row and the ResNet compared)."""
    step_claims = claims_of(groups)  # scores the new runs first
    scores, fusions = fused(groups)
    claims = final_claims(final_results(scores, fusions), baseline_results(groups, list(scores)))
    return [*step_claims, *((claim, [*rows, BASELINE]) for claim in claims)]


tta_score_many(list(runs.values()), TEST_SIZES.values(), TEST_IMAGES, workers)
first = tta_scores(runs[rows[0], seeds[0]], input_size, TEST_IMAGES)
test_labels, val_labels, classes = first.test.labels, first.val.labels, first.test.classes
test_ids, known = first.test.ids, first.test.labels >= 0
test_images = int(known.sum())
# More seeds, up to max_seeds, for the rows of each claim wider than ±1.5 pp.
groups = add_seeds_where_wide(groups, widened_claims, seeds, max_seeds, profile, overrides,
                              workers, runs_root=runs_root)
scores, fusions = fused(groups)
fusion_seeds = list(scores)
print("fusion and coverage over seeds", fusion_seeds)
header = make_header(profile, time.perf_counter() - started, command)  # after the new seeds


def size_rows(backbone, loss):
    """The paper's row at its three test sizes, beside the run that stands in for it."""
    paper = paper_reference(f"fc_{backbone}_{loss}")["top1_by_test_size"]
    ran = f"fc_{SAME_FAMILY.get(backbone, backbone)}_{loss}"
    note = ("no stand-in at this profile: paper profile only" if ran not in models
            else "" if ran == f"fc_{backbone}_{loss}" else f"{ran} stands in")
    if ran not in models:
        return [ResultRow(f"{BACKBONES[backbone]} · {ps} px ({size} px)", paper[ps], [], profile,
                          note) for ps, size in TEST_SIZES.items()]
    return [ResultRow(f"{BACKBONES[backbone]} · {ps} px ({size} px)", paper[ps],
                      top1_at(groups[ran], size), profile, note,
                      test_images=test_images)
            for ps, size in TEST_SIZES.items()]


for loss, (stem, table, loss_name) in LOSSES.items():
    table_rows = [r for b in BACKBONES if loss == "ce" or b in ROBUST for r in size_rows(b, loss)]
    _, table_md = write_table(table_rows, out_dir, stem, header,
                              title=f"04 · {table} · {loss_name}, with TTA")
    display(Markdown(table_md.read_text()))

# %% [markdown]
# ## 5 · Losses and test sizes, step by step
#
# For each robust loss against cross-entropy on the same backbone, and for each test size
# against the training size, the paper's difference beside ours (the paired difference over
# seeds with its 95 % interval and the smallest detectable effect; section 9 gives the
# verdicts over all of this notebook's claims).

# %%
steps = [claim for claim, _ in claims_of(groups)]
_, steps_md = write_ablations(assess(steps), out_dir, "steps", header,
                             title="04 · Losses and test sizes, measured")
display(Markdown(steps_md.read_text()))

# %% [markdown]
# ## 6 · Two-stage fusion (paper: 72.4 %)
#
# **Stage 1**: for each test size and loss, the models' probabilities are averaged with
# weights softmax(validation top-1) — with scores as fractions, as the paper says, so the
# weights are nearly uniform (0.66 vs 0.68 gives 0.495 vs 0.505). **Stage 2**: a hard vote
# over the nine stage-1 results; a tie goes to the class with the larger summed stage-1
# probability (the paper does not say). One fusion per seed, from that seed's runs (computed
# in section 4, on every seed that all rows share).

# %%
finals = final_results(scores, fusions)
print("best single model per seed (by validation):",
      [best_single(scores[s]) for s in fusion_seeds])
fusion_rows = [ResultRow("best single model (by validation), with TTA", None, finals[0].ours,
                         profile, test_images=test_images)]
for key in sorted(fusions[fusion_seeds[0]].stage1_test):
    size, loss = key
    fusion_rows.append(ResultRow(f"stage 1: {LOSSES[loss][2]} models at {size} px (soft vote)",
                                 None, accuracy(fusions[s].stage1_test[key].argmax(1)
                                                for s in fusion_seeds), profile,
                                 test_images=test_images))
fusion_rows.append(ResultRow("stage 2: hard vote over the stage-1 results", 72.4,
                             accuracy(fusions[s].stage2_test for s in fusion_seeds), profile, "",
                             "fusion-coverage paper, §III.D", test_images))
_, fusion_md = write_table(fusion_rows, out_dir, "fusion", header, title="04 · Two-stage fusion")
display(Markdown(fusion_md.read_text()))

# %% [markdown]
# ## 7 · Result coverage (paper: 74.5 % best single, 75.178 % final)
#
# The classes whose **validation** accuracy under the stage-2 fusion is below 0.5 are hard
# (136 of 1000 in the paper). A new training set holds each hard class resampled to 500
# images (at `cpu` 250, for the 90 training images a class has with train + val) and one
# extra class, "other", of 5 random images from every other class. Coverage models train on
# it with the DSB focal loss. The paper then keeps "the labels of the other 864 classes from
# the previous fusion results" and covers the rest with the new results. Two readings:
#
# - **literal** (the default): an image whose fused label is an easy class keeps it; an
#   image fused into a hard class takes the coverage model's label (and keeps the fused one
#   where the coverage model says "other").
# - **replace**: the coverage model's label wins wherever it names a hard class — the naive
#   coverage the paper says pulled other classes' images into the hard ones.
#
# Each coverage result is scored alone; a hard vote over the coverage models gives the final.
# With a single hard class the literal reading cannot change a label: an image fused into
# that class keeps it whether the coverage model confirms it or says "other". It acts only
# where two or more classes are hard (the paper's 136), moving images between them.
#
# **`cpu` departs here.** The paper's 136 of 1000 classes (13.6 %) are, of fashion50's 10, one
# class: below 0.5 each seed of the 9f1bef3 run had shirt alone or no class, so the literal
# reading measured exactly +0.00. At `cpu` (and `smoke`) the hard set is topped up with the
# next-worst classes on **validation** to two, the fewest at which the literal reading can
# act; the `paper` profile keeps the paper's rule alone.

# %%
HARD_THRESHOLD = 0.5
MIN_HARD = 0 if profile == "paper" else 2
hard = {}
for s in fusion_seeds:
    val_accuracy = per_class_accuracy(fusions[s].stage2_val, val_labels, len(classes))
    hard[s] = coverage_classes(val_accuracy, HARD_THRESHOLD, MIN_HARD)
    worst = hard_classes(val_accuracy, classes, HARD_THRESHOLD, k_worst=4)[:4]
    print(f"seed {s}: hard classes {[classes[c] for c in hard[s]]}; fused val accuracy of the "
          "four worst: " + ", ".join(f"{w['class_name']} {w['accuracy']:.2f}" for w in worst))


# every seed's coverage models trained and scored together
coverage_seeds = [s for s in fusion_seeds if hard[s]]
coverage_recipes = [load_recipe(f"fc_cov_{c}", profile,
                                {**overrides, "seed": s, "coverage_classes": hard[s]})
                    for s in coverage_seeds for c in COVERAGE]
coverage_trained = train_many(coverage_recipes, workers, runs_root=runs_root)
tta_score_many(coverage_trained, [input_size], TEST_IMAGES, workers)
coverage_runs = {s: coverage_trained[i * len(COVERAGE):(i + 1) * len(COVERAGE)]
                 for i, s in enumerate(coverage_seeds)}
coverage = {s: run_coverage(fusions[s], hard[s], coverage_runs.get(s, []), input_size,
                            TEST_IMAGES, len(classes)) for s in fusion_seeds}
header = make_header(profile, time.perf_counter() - started, command)
coverage_rows = [ResultRow("stage-2 fusion (before coverage)", 72.4,
                           accuracy(fusions[s].stage2_test for s in fusion_seeds), profile,
                           test_images=test_images)]
for rule in ("literal", "replace"):
    best = [max(accuracy(coverage[s].covered[rule]), default=accuracy([fusions[s].stage2_test])[0])
            for s in fusion_seeds]
    coverage_rows += [
        ResultRow(f"best single coverage result ({rule})", 74.5, best, profile, "",
                  "fusion-coverage paper, §III.E", test_images),
        ResultRow(f"hard vote over {len(COVERAGE)} coverage results ({rule})", 75.178,
                  accuracy(coverage[s].final[rule] for s in fusion_seeds), profile, "",
                  "fusion-coverage paper, §III.E", test_images)]
_, coverage_md = write_table(coverage_rows, out_dir, "coverage", header,
                             title="04 · Result coverage")
display(Markdown(coverage_md.read_text()))
coverage_steps = [Claim(f"coverage, {rule} reading (fusion → final)", 72.4, 75.178,
                        accuracy(fusions[s].stage2_test for s in fusion_seeds),
                        accuracy(coverage[s].final[rule] for s in fusion_seeds),
                        test_images=test_images)
                  for rule in ("literal", "replace")]
_, coverage_steps_md = write_ablations(assess(coverage_steps), out_dir, "coverage_steps", header,
                                       title="04 · What coverage adds, measured")
display(Markdown(coverage_steps_md.read_text()))

# %% [markdown]
# Coverage moves accuracy only through the test labels it changes: up where the coverage
# models tell the hard classes apart better than the fusion did, down where they do worse. Over
# all seeds, the labels each reading changed, fixed (wrong before, right after) and broke:

# %%
for rule in ("literal", "replace"):
    moved = [label_changes(fusions[s].stage2_test[known], coverage[s].final[rule][known],
                           test_labels[known]) for s in fusion_seeds]
    changed, fixed, broke = (sum(m[key] for m in moved) for key in ("changed", "fixed", "broke"))
    print(f"{rule}: {changed} of {test_images * len(fusion_seeds)} test labels changed, "
          f"{fixed} fixed, {broke} broke ({100 * (fixed - broke) / changed if changed else 0:+.0f} "
          "per 100 changed)")

# %% [markdown]
# ## 8 · Which classes stay hard?
#
# Per-class test accuracy (mean over seeds) of the best single model, the stage-2 fusion and
# the final coverage result under both readings, and the hard classes of the final result:
# below 0.5, plus the three worst.

# %%
def per_class(labels_per_seed):
    return np.mean([per_class_accuracy(labels[known], test_labels[known], len(classes))
                    for labels in labels_per_seed], axis=0)


series = {
    "best single model": per_class(scores[s][best_single(scores[s])].test.predictions
                                   for s in fusion_seeds),
    "stage-2 fusion": per_class(fusions[s].stage2_test for s in fusion_seeds),
    "coverage (literal)": per_class(coverage[s].final["literal"] for s in fusion_seeds),
    "coverage (replace)": per_class(coverage[s].final["replace"] for s in fusion_seeds),
}
plot = per_class_accuracy_plot(series, classes, out_dir / "per_class_test.png", header,
                               title="Per-class test accuracy: single model, fusion, coverage")
display(Image(str(plot)))
for name, stem in (("stage-2 fusion", "fusion"), ("coverage (literal)", "coverage_literal")):
    hard_list = hard_classes(series[name], classes, k_worst=3)
    csv = write_hard_classes(hard_list, out_dir / f"{stem}_test_hard_classes.csv", header)
    print(name, "→", csv.name)
    print(csv.read_text())
final_confusion = sum(confusion_matrix(coverage[s].final["literal"][known], test_labels[known],
                                       len(classes)) for s in fusion_seeds)
confusion_heatmap(final_confusion, classes, out_dir / "coverage_literal_test_confusion.png",
                  header)

# %%
print(f"notebook wall time: {(time.perf_counter() - started) / 60:.1f} min "
      f"(training time of its runs, cached or not: {training_s / 60:.1f} min)")

# %% [markdown]
# ## 9 · The paper's claims, and what this run can say about them
#
# Every step measured above is one of the paper's claims, and so is each final result (best
# single model, stage-2 fusion, coverage) against two baselines, and the fusion against the
# best single model. The **matched baseline** is the plain timm ResNeSt with cross-entropy,
# `fc_resnest101e_ce`, with the same epochs, augmentation, seeds and TTA as every model here:
# every row of this paper is already a plain timm model, so the paper's own ideas (robust
# losses, fusion, coverage) are what the finals add to it. The second is notebook 00's
# plain ResNet-18 (the same seeds and test images, with its own flip TTA; it trains on the 500
# training images, these models on 900 as §III.C says). The
# paper has no number for the matched baseline; proposing its methods asserts that they beat
# it. Each reads as the paired difference over seeds
# (against the matched baseline, seed s of both sides draws the same data order and the same
# initialisation; notebook 00's ResNet shares only the seed) with its 95 % interval and
# the smallest effect these seeds could have detected; verdicts use Holm's correction over all
# of this notebook's claims. The conclusion under the table is written from the table alone.

# %%
covered = Result("final (coverage, literal)", 75.178,
                 accuracy(coverage[s].final["literal"] for s in fusion_seeds), test_images)
claims = assess([*steps, *coverage_steps,
                 *final_claims([*finals, covered], baseline_results(groups, fusion_seeds))])
_, claims_md, forest = write_claims(claims, out_dir, header, title="04 · The paper's claims")
display(Image(str(forest)))
display(Markdown(claims_md.read_text()))

# %% [markdown]
# ## The runs behind these reports
#
# `runs.csv` lists every run behind a number above, and the runs those started from: the recipe, profile, seed and
# overrides that name it, its validation top-1 (what selects models), its test top-1 (one
# value per seed), epochs and wall time.

# %%
runs_csv, _ = write_runs_table(out_dir, make_header(profile, time.perf_counter() - started, command))
print(f"{len(runs_csv.read_text().splitlines()) - 1} runs → {runs_csv.name}")
