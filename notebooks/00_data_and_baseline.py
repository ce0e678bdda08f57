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
# # 00 · The VIPriors setting and the challenge baseline
#
# The VIPriors image-classification challenge asks how far a network gets **from scratch on
# little data**: 1000 ImageNet classes, **50 training and 50 validation images per class**
# drawn from ImageNet-2012's training set, the 50,000 ImageNet validation images as the test
# set, **no pretrained weights and no extra data**. The organisers' baseline is a ResNet-50
# trained for 90 epochs with the hyperparameters of the PyTorch ImageNet example; it reaches
# 26.39 % (same-conv) and 31.16 % (full-conv) top-1 on the test set.
#
# This notebook walks through that setting and trains the baseline:
#
# * at the `paper` profile, on the real data built by `vipnb data vipriors`, with the
#   toolkit's settings (ResNet-50, 90 epochs, SGD lr 0.1 ÷10 every 30 epochs, batch 256);
# * at the `cpu` profile, on **fashion50**, the built-in stand-in: the same "50 + 50 per
#   class from the training set, test = the official test set" recipe applied to
#   Fashion-MNIST (10 classes), with a small timm ResNet, in minutes on two CPU cores;
# * at the `smoke` profile, in seconds, to prove the code path (its numbers mean nothing).

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | paper
seeds = [0]  # the cpu profile of `make reproduce` runs three seeds
data_root = None  # paper profile: the imagenet_50 folder; None: fashion50 under ./data
recipe_overrides = {}  # recipe keys set for every run, e.g. {"accum_steps": 4}
out_dir = None  # reports folder; None: build/interactive-reports/<profile>/ (vipnb run: reports/)
command = None  # set by vipnb run: the command line the report headers name

# %%
import time
from pathlib import Path

from IPython.display import Image, Markdown, display

import vipnb
from vipnb import paths
from vipnb.bench import throughput_table
from vipnb.data.layout import scan_split
from vipnb.data.sources import dataset_root
from vipnb.engine import load_recipe, train
from vipnb.engine.recipe import paper_reference
from vipnb.eval.submission import score_submission, write_submission
from vipnb.report.group_reports import write_group_reports
from vipnb.report.header import make_header
from vipnb.report.plots import image_grid
from vipnb.report.runs_table import write_runs_table
from vipnb.report.tables import ResultRow, write_table
from vipnb.study.plan import show_plan
from vipnb.study.seed_groups import SeedGroup

started = time.perf_counter()
out_dir = Path(out_dir or paths.report_dir("00_data_and_baseline", profile))
# where the built-in datasets are built and images decoded ($VIPNB_DATA or ./data), passed down
overrides = {**paths.data_places(), **({"data_root": data_root} if data_root else {}),
             **recipe_overrides}
runs_root = paths.runs_root()  # where runs live ($VIPNB_RUNS or ./runs), passed down
if profile == "paper":  # what this notebook would train and its cost, before it starts
    show_plan("00_data_and_baseline", profile, seeds, runs_root, overrides, throughput_table())
recipes = [load_recipe("baseline_resnet", profile, {**overrides, "seed": s}) for s in seeds]
print("vipnb", vipnb.__version__, "| profile", profile, "| seeds", seeds)

# %% [markdown]
# ## The data
#
# Every dataset lives in the VIPriors on-disk layout — `train/<class>/*`, `val/<class>/*`,
# `test/imgs/img_<i>.*` and a ground-truth `test/labels.csv` — so one loader serves the
# challenge data and the built-in sets. Class indices follow the sorted class-folder names
# (for ImageNet, the wnid order of timm's `imagenet_synsets.txt`).

# %% tags=["nbval-check-output"]
root = dataset_root(recipes[0])
splits = {name: scan_split(root, name) for name in ("train", "val", "test")}
classes = splits["train"].classes
print(f"{len(classes)} classes:", ", ".join(classes))
for name, files in splits.items():
    per_class = len(files) / len(classes) if name != "test" else None
    print(f"{name:5s} {len(files):6d} images" + (f" ({per_class:.0f} per class)" if per_class else ""))

# %% [markdown]
# Fifty images per class is very little: here are five training images of every class.

# %%
samples = image_grid(splits["train"], out_dir / "train_samples.png",
                     make_header(profile, time.perf_counter() - started, command))
display(Image(str(samples)))

# %% [markdown]
# ## The baseline recipe
#
# A recipe is a YAML file with one block per profile. The `paper` block states the
# toolkit's hyperparameters exactly; the `cpu` block is the scaled analogue trained below.
# Its comments say what was measured to choose it: fashion50's items are centred and fill
# the frame, so the cpu recipe flips but does not crop, and it averages each test image's
# prediction with its mirror image's (`eval_views: flip`).

# %% tags=["nbval-check-output"]
paper_recipe = load_recipe("baseline_resnet", "paper")
keys = ["model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
        "sched", "decay_epochs", "decay_rate", "input_size", "crop_pct", "scale", "eval_views"]
print(f"{'key':14s} {'paper':>12s} {profile:>12s}")
for key in keys:
    print(f"{key:14s} {str(getattr(paper_recipe, key)):>12s} {str(getattr(recipes[0], key)):>12s}")

# %% [markdown]
# ## Training
#
# `vipnb.engine.train` trains one recipe and writes a run directory named by the recipe's
# hash (recipe, per-epoch metrics, logits on val and test, checkpoint). A finished run is
# reused, so re-running this notebook only trains what changed.

# %%
runs = [train(recipe, runs_root) for recipe in recipes]
baseline = SeedGroup("baseline_resnet", runs)
for run in runs:
    summary = run.summary()
    print(f"{run.path.name}: val {summary['val_top1']:.4f} · test {summary['test_top1']:.4f}"
          f" · {summary['wall_time_s']:.0f} s on {summary['device']}")

# %% [markdown]
# ## Results beside the paper's numbers
#
# The paper column holds the toolkit's ImageNet numbers; at the `cpu` profile ours are on
# fashion50, a different (and much easier) 10-class problem, so the two columns share the
# protocol, not the task.

# %%
reference = paper_reference("baseline_resnet")
header = make_header(profile, time.perf_counter() - started, command)
top1 = baseline.top1("test")
test_images = baseline.scored_images("test")
rows = [
    ResultRow(f"ResNet baseline, same-conv ({recipes[0].model}, {recipes[0].dataset})",
              reference["top1_same_conv"], top1, profile,
              "paper: ResNet-50 on the ImageNet-50 test set; ours: test top-1 over seeds",
              reference["source"], test_images),
    ResultRow(f"score average of the {len(runs)} seeds above (not the baseline)", None,
              [baseline.ensemble_top1("test")], profile, "computed from the saved logits",
              test_images=test_images),
    ResultRow("ResNet-50 baseline, full-conv", reference["top1_full_conv"], [], profile,
              "full-conv ResNets (Kayhan & van Gemert, CVPR 2020) are not in vipnb",
              reference["source"]),
]
_, table_md = write_table(rows, out_dir, "results", header, title="00 · Challenge baseline")
display(Markdown(table_md.read_text()))

# %% [markdown]
# ## Which classes are hard?
#
# Per-class test accuracy, averaged over seeds, and the classes below 0.5 (the threshold
# the fusion-and-coverage paper uses to pick its hard classes) together with the three
# worst. On Fashion-MNIST the upper-body garments (shirt, T-shirt, pullover, coat) are
# the ones a model mixes up.

# %%
files = write_group_reports(baseline, out_dir, header)
display(Image(str(files["per_class"])), Image(str(files["confusion"])))
print(files["hard_classes"].read_text())

# %% [markdown]
# ## A submission in the official format
#
# The challenge server scores a CSV `Image IDs,Predictions` with the toolkit's
# `evaluate_classification.py`; `vipnb` writes the same file and scores it by the same rule.

# %%
test = runs[0].logits("test")
submission = write_submission(out_dir / "submission_seed0.csv", test.ids, test.predictions)
score = score_submission(root / "test" / "labels.csv", submission)
print(f"{submission.name}: top-1 {score.top1:.4f} over {score.matched} images")

# %% [markdown]
# ## The runs behind these reports
#
# `runs.csv` lists every run behind a number above, and the runs those started from: the recipe, profile, seed and
# overrides that name it, its validation top-1 (what selects models), its test top-1 (one
# value per seed), epochs and wall time.

# %%
runs_csv, _ = write_runs_table(out_dir, make_header(profile, time.perf_counter() - started, command))
print(f"{len(runs_csv.read_text().splitlines()) - 1} runs → {runs_csv.name}")
