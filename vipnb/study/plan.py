"""`vipnb plan`: what a notebook would train at a profile, and what that costs, before it starts.

A notebook trains the recipes it names and the runs they start from (`teacher`, `init_from`,
`hierarchy_from`); a run whose folder under the runs root holds its summary is reused
(vipnb.engine.training.train). The plan lists every run still to train with its epochs
(cooldown included), the images it sees (the trainer's whole batches × epochs) and an estimate
of device-hours:

- measured: the throughput table (`reports/bench/throughput.csv`, written by
  `vipnb bench --save`) has this device's training rate for the recipe's model at its input
  size: hours = images seen ÷ images per second;
- reported: otherwise, where the notebook's committed reports (`reports/<notebook>/runs.csv`)
  hold runs of the recipe at this profile with the same settings: their median seconds per
  epoch (training and its validations, as `vipnb run` trained them on the machine the reports'
  provenance names, several at a time) × this run's epochs; the final scoring at the rate
  that implies, as for a measured rate;
- FLOPs: otherwise, the model's forward FLOPs per image (torch's FlopCounterMode on the model
  as the trainer builds it), × 3 for forward + backward, over `ASSUMED_FLOPS_PER_S`.

Scoring during training (the validation split at each validation, the test split at the end)
is forward only and counted at a third of a training step's cost per view. Re-scoring after
training (a notebook's own TTA tables) is not counted. Where the data is not on this machine
(ImageNet, CUB), the split sizes are the papers'.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from vipnb.atomic import write_text_atomic
from vipnb.engine.recipe import DEPENDENCY_KEYS, Recipe, load_recipe
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.report.header import format_duration, machine_description
from vipnb.report.runs_table import settings_beyond_shipped

# -- the recipes each notebook trains -------------------------------------------------------
# Declared here so that a plan needs no notebook to run. The notebooks (notebooks/0*.py) must
# keep these in step: tests/test_plan.py checks that every recipe named here exists and that
# the notebook's source names it.
_MOE_TABLE_1 = (
    "moe_rs50", "moe_rs_sd50", "moe_rs_sd50_distill", "moe_rs_sd50_n3", "moe_rs_sd50_n3_distill",
    "moe_rs_sd50_n3_distill_fusion", "moe_rs_sd50_n5", "moe_rs_sd50_n5_distill",
    "moe_rs_sd50_n5_distill_e720", "moe_rs_sd50_n5_distill_fusion",
    "moe_rs_sd50_n5_distill_fusion_e720", "moe_rs101", "moe_rs_sd101", "moe_rs_sd101_distill",
    "moe_rs_sd101_n3_nodiv", "moe_rs_sd101_n3", "moe_rs_sd101_n3_distill",
    "moe_rs_sd101_n3_distill_e720", "moe_rs_sd101_n3_distill_fusion",
    "moe_rs_sd101_n3_distill_fusion_e720", "moe_rs_sd200", "moe_rs_sd200_distill")
_MOE_TABLE_2 = tuple(f"moe_regnety{s}{d}" for s in ("080", "120", "160", "320")
                     for d in ("", "_distill"))
_MOE_TABLE_3 = tuple(f"moe_effnet{k}{d}" for k in ("b4", "b5", "b6", "v2s", "v2m")
                     for d in ("", "_distill"))


def moco_ablation(profile: str) -> tuple[str, str]:
    """MoE §3.1's MoCo-v2 initialisation as two recipes that differ in it only: (random start,
    MoCo start). moe_rs_sd50 is the one side: where it starts from its MoCo run (paper) the
    other is moe_rs_sd50_scratch, where it starts at random (cpu, smoke) moe_rs_sd50_moco."""
    if load_recipe("moe_rs_sd50", profile).init_from:
        return "moe_rs_sd50_scratch", "moe_rs_sd50"
    return "moe_rs_sd50", "moe_rs_sd50_moco"


RECIPES_02 = ("mtl_moe_cls_e1", "mtl_moe_cls_e6", "mtl_moe_cls_e3", "mtl_moe_e1", "mtl_moe_e3",
              "mtl_moe_e6", "mtl_transfer_direct", "mtl_transfer_frozen", "mtl_transfer_full")
_VIPF_ROWS = (
    "vipf_resnext50", "vipf_d_resnext50", "vipf_sk_resnext50_noaa", "vipf_sk_resnext50",
    "vipf_dsk_resnext50", "vipf_dsk_resnext50_pcl", "vipf_dsk_resnext50_pcl_cl",
    "vipf_dsk_resnext50_pcl_cl_swapped",
    *(f"vipf_effnet_b{n}{t}" for n in (3, 5, 6) for t in ("", "_tsl")),
    "vipf_resnest101", "vipf_resnest101_tsl", "vipf_resnest101_tsl_g1", "vipf_resnest200",
    "vipf_resnest200_tsl", "vipf_final_dsk50_224", "vipf_final_dsk50_320",
    "vipf_final_dsk101_224", "vipf_final_dsk101_320", "vipf_cutmix_p0", "vipf_cutmix_p03",
    "vipf_cutmix_p05", "vipf_cutmix_p07", "vipf_cutmix_p10", "vipf_t5_resnext50",
    "vipf_t5_dual_pool", "vipf_t5_label_smooth", "vipf_t5_dropout02", "vipf_t5_dropout04",
    "vipf_t5_all")
# VIPF §4.2's ensemble: "16 models including EfficientNet-b5, EfficientNet-b6, ResNeSt-101,
# ResNeSt-200, DSK-ResNeXt50, DSK-ResNeXt101": the final rows of Tables 2 and 3 of those six
# families, with and without TSL and at both sizes (12; the paper does not name its other four).
VIPF_FINAL_MODELS = (*(f"vipf_effnet_b{n}{t}" for n in (5, 6) for t in ("", "_tsl")),
                     *(f"vipf_resnest{d}{t}" for d in (101, 200) for t in ("", "_tsl")),
                     *(f"vipf_final_dsk{d}_{s}" for d in (50, 101) for s in (224, 320)))
_FC_BACKBONES = ("resnest101e", "tresnet_xl", "mixnet_xxl", "resnest200e", "densenet161",
                 "skresnext50", "seresnet152d", "seresnet101", "seresnext101", "rexnet200",
                 "regnetx120", "inception_resnet_v2")
_FC_ROBUST = ("resnest101e", "tresnet_xl", "mixnet_xxl", "resnest200e", "densenet161")
_FC_STAND_INS = ("resnest101e", "seresnet101", "skresnext50", "densenet161", "regnetx120")
_FC_COVERAGE = {"paper": ("resnet101", "rexnet200", "inception_v4", "efficientnet_b4",
                          "resnest200e", "resnext101"),
                "other": ("resnet101", "resnest200e", "resnext101")}


NOTEBOOKS = ("00_data_and_baseline", "01_moe_distillation", "02_mtl_moe_cub", "03_vipf_dsknet",
             "04_fusion_and_coverage")


@dataclass(frozen=True)
class NotebookRecipes:
    """The recipes a notebook trains at one profile; `coverage`: those it trains on the hard
    classes it finds while it runs (`coverage_classes`), so their run names are not known
    before."""

    recipes: tuple[str, ...]
    coverage: tuple[str, ...] = ()


def notebook_recipes(notebook: str, profile: str) -> NotebookRecipes:
    """What `notebook` (a stem or its number, e.g. "01") trains at `profile`."""
    stem = notebook_stem(notebook)
    if stem == "00_data_and_baseline":
        return NotebookRecipes(("baseline_resnet",))
    if stem == "01_moe_distillation":
        moco_row = next(n for n in moco_ablation(profile) if n not in _MOE_TABLE_1)
        return NotebookRecipes((*_MOE_TABLE_1, *_MOE_TABLE_2, *_MOE_TABLE_3, moco_row,
                                "moe_matched_baseline", "baseline_resnet"))
    if stem == "02_mtl_moe_cub":
        return NotebookRecipes(RECIPES_02)
    if stem == "03_vipf_dsknet":
        return NotebookRecipes((*_VIPF_ROWS, "vipf_matched_baseline", "baseline_resnet"))
    backbones = _FC_BACKBONES if profile == "paper" else _FC_STAND_INS
    rows = [f"fc_{b}_{loss}" for loss in ("ce", "taylor", "bitempered") for b in backbones
            if loss == "ce" or b in _FC_ROBUST]
    coverage = _FC_COVERAGE["paper" if profile == "paper" else "other"]
    return NotebookRecipes((*rows, "baseline_resnet"), tuple(f"fc_cov_{c}" for c in coverage))


def notebook_stem(notebook: str) -> str:
    """`01` or `01_moe_distillation` (or its .py/.ipynb path) → `01_moe_distillation`."""
    name = Path(notebook).stem
    matches = [n for n in NOTEBOOKS if name in (n, n.split("_")[0])]
    if len(matches) != 1:
        raise VipnbError(f"no notebook {notebook!r} to plan; name one of {', '.join(NOTEBOOKS)} "
                         "(or its number, e.g. 01)")
    return matches[0]


# -- the data's size --------------------------------------------------------------------------
# The papers' splits, for data not on this machine. VIPriors: 1000 ImageNet classes, 50 train
# and 50 val images each, ImageNet's 50,000 val images as test. CUB-200-2011: 5,994 train and
# 5,794 test images of 200 species.
VIPRIORS_SIZE = {"classes": 1000, "train_per_class": 50, "val_per_class": 50, "test": 50_000}
CUB_SIZE = {"classes": 200, "train": 5994, "test": 5794}
# Fusion-coverage paper §III.E: 136 of the 1000 classes were hard. The coverage runs' classes
# are chosen while notebook 04 runs; the plan assumes the same share.
PAPER_HARD_SHARE = 136 / 1000


@dataclass(frozen=True)
class SplitSizes:
    """Images per class of each split (class index → count), and where they were counted."""

    train: dict[int, int]
    val: dict[int, int]
    test: dict[int, int]
    source: str  # "dataset" | "paper size"


def split_sizes(recipe: Recipe, coverage: bool = False,
                counted: dict | None = None) -> SplitSizes:
    """The recipe's splits as its run would load them: counted in the dataset when it is on
    this machine, else the paper's sizes; then `val_into_train`, the limits and the coverage
    resampling (`coverage`: a coverage run whose hard classes are not chosen yet) applied as
    vipnb.data.sources.load_run_data applies them. `counted`: the datasets already counted,
    by root, kept across calls (one plan lists each dataset once, not once per run)."""
    sizes = _dataset_sizes(recipe, {} if counted is None else counted) or _paper_sizes(recipe)
    train, val, test = dict(sizes.train), dict(sizes.val), dict(sizes.test)
    if recipe.val_into_train:  # vipnb.data.val_into_train: every class keeps one val image
        for c, n in val.items():
            moved = min(math.ceil(recipe.val_into_train * n), n - 1)
            train[c], val[c] = train.get(c, 0) + moved, n - moved
    train = _first_per_class(train, recipe.train_limit)
    val = _first_per_class(val, recipe.eval_limit)
    test = _first_per_class(test, recipe.test_limit or recipe.eval_limit)
    if recipe.coverage_classes or coverage:
        hard = len(recipe.coverage_classes) or max(1, round(PAPER_HARD_SHARE * len(train)))
        train = {**dict.fromkeys(range(hard), recipe.coverage_per_hard),
                 hard: recipe.coverage_per_other * (len(train) - hard)}
    return SplitSizes(train, val, test, sizes.source)


def _first_per_class(counts: dict[int, int], limit: int) -> dict[int, int]:
    """vipnb.data.sources._first_per_class: about `limit` images, every class kept."""
    if not limit:
        return counts
    per_class = max(1, limit // max(1, len(counts)))
    return {c: min(n, per_class) for c, n in counts.items()}


def _counts(labels) -> dict[int, int]:
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _dataset_sizes(recipe: Recipe, counted: dict) -> SplitSizes | None:
    """The splits counted on disk (file lists only, nothing decoded); None when the data is
    not on this machine. A built-in dataset is built on first use, as training would."""
    from vipnb.data.registry import dataset_entry

    entry = dataset_entry(recipe)
    try:
        root = entry.root(recipe)
    except VipnbError:
        return None
    if not Path(root).is_dir():
        return None
    key = (str(root), tuple(recipe.class_subset) if entry.boxes else ())
    if key not in counted:
        counted[key] = _count_on_disk(root, entry.boxes, recipe.class_subset)
    return counted[key]


def _count_on_disk(root, boxes: bool, class_subset) -> SplitSizes:
    if boxes:
        from vipnb.data.cub import read_cub

        index = read_cub(root, check_images=False)
        subset = list(class_subset) or list(range(len(index.classes)))
        split = {s: [c for c in index.split(s).labels.tolist() if c in subset]
                 for s in ("train", "test")}
        return SplitSizes(_counts(split["train"]), {}, _counts(split["test"]), "dataset")
    from vipnb.data.layout import scan_split

    return SplitSizes(*(_counts(scan_split(root, s).labels) for s in ("train", "val", "test")),
                      source="dataset")


def _paper_sizes(recipe: Recipe) -> SplitSizes:
    if recipe.dataset == "folder":
        v = VIPRIORS_SIZE
        per_class = v["test"] // v["classes"]
        return SplitSizes(*({c: n for c in range(v["classes"])}
                            for n in (v["train_per_class"], v["val_per_class"], per_class)),
                          source="paper size")
    if recipe.dataset == "cub":
        subset = list(recipe.class_subset) or list(range(CUB_SIZE["classes"]))
        train, test = (_spread(CUB_SIZE[s], CUB_SIZE["classes"]) for s in ("train", "test"))
        return SplitSizes({c: train[c] for c in subset}, {}, {c: test[c] for c in subset},
                          "paper size")
    raise VipnbError(f"recipe {recipe.name}: its data ({recipe.dataset}) is not on this machine "
                     "and the plan knows no paper size for it; pass -p data_root=DIR")


def _spread(total: int, classes: int) -> dict[int, int]:
    """`total` images over `classes` as evenly as they go (CUB: 29 or 30 per class)."""
    return {c: total // classes + (c < total % classes) for c in range(classes)}


# -- the cost per image -----------------------------------------------------------------------
# The assumed sustained rate where nothing was measured: 35 % of an NVIDIA A100's 312 dense
# bf16 TFLOPS, what convolutional networks sustain in mixed precision (FLOPs here count a
# multiply-add as two).
A100_BF16_FLOPS_PER_S = 312e12
SUSTAINED_SHARE = 0.35
ASSUMED_FLOPS_PER_S = SUSTAINED_SHARE * A100_BF16_FLOPS_PER_S
ASSUMPTION = (f"{SUSTAINED_SHARE:.0%} of an A100's {A100_BF16_FLOPS_PER_S / 1e12:.0f} bf16 "
              f"TFLOPS = {ASSUMED_FLOPS_PER_S / 1e12:.0f} TFLOPS sustained")
# A training step is a forward and a backward pass; the backward costs about twice the forward
# (a gradient for the inputs and one for the weights of every layer): 3 forward passes.
STEP_IN_FORWARDS = 3


# The settings that make a model (what `forward_flops` keeps its counts by).
_MODEL_KEYS = ("architecture", "stage", "model", "model_kwargs", "experts", "shared_stages",
               "fusion", "global_pool", "gate_k", "box_task")
_FORWARD_FLOPS: dict[tuple[str, int, int], int] = {}


def forward_flops(recipe: Recipe, num_classes: int) -> int:
    """FLOPs of one image's forward pass through the recipe's model at its input size, built
    as the trainer builds it (vipnb.engine.build; the MTL-MoE and MoCo tasks' own models)."""
    settings = json.dumps({k: getattr(recipe, k) for k in _MODEL_KEYS}, sort_keys=True,
                          default=list)
    key = (settings, num_classes, recipe.input_size)
    if key not in _FORWARD_FLOPS:
        _FORWARD_FLOPS[key] = _count_forward_flops(recipe, num_classes)
    return _FORWARD_FLOPS[key]


def _count_forward_flops(recipe: Recipe, num_classes: int) -> int:
    """Counted on the meta device (shapes only: no memory, no arithmetic), or on the CPU for
    a model the meta device cannot run."""
    with torch.random.fork_rng(devices=[]):  # building draws weights: the caller's RNG stays
        for device in ("meta", "cpu"):
            try:
                with torch.device(device), torch.no_grad():
                    model = _build(recipe, num_classes).eval()
                    image = torch.zeros(1, 3, recipe.input_size, recipe.input_size)
                    with FlopCounterMode(display=False) as counter:
                        model(image)
                return int(counter.get_total_flops())
            except (RuntimeError, NotImplementedError):
                if device == "cpu":
                    raise
    raise AssertionError("unreachable")


def _build(recipe: Recipe, num_classes: int) -> torch.nn.Module:
    if recipe.stage == "moco":  # the MoCo task's encoder: the backbone, no classifier
        import timm

        return timm.create_model(recipe.model, pretrained=False, num_classes=0,
                                 **recipe.model_kwargs)
    if recipe.architecture == "mtl_moe":
        from vipnb.engine.tasks.mtl import build_mtl_moe

        return build_mtl_moe(recipe, num_classes)
    if recipe.architecture != "timm":
        raise VipnbError(f"recipe {recipe.name}: the plan counts the FLOPs of the timm and "
                         f"mtl_moe architectures, not {recipe.architecture!r}; measure it with "
                         "`vipnb bench --save` instead")
    from vipnb.engine.build import build_model

    return build_model(recipe, num_classes)


def train_step_flops(recipe: Recipe, num_classes: int) -> int:
    """FLOPs of one training image: forward + backward of what trains, and the forward of
    what only scores (a distillation teacher, MoCo's key encoder, frozen experts)."""
    forward = forward_flops(recipe, num_classes)
    if recipe.stage == "moco":  # the key encoder, a momentum copy, forwards only
        return (STEP_IN_FORWARDS + 1) * forward
    # `fusion`: the experts are frozen and only the linear fusion head learns
    step = forward if recipe.fusion else STEP_IN_FORWARDS * forward
    if recipe.teacher:
        step += forward_flops(recipe.dependency("teacher"), num_classes)
    return step


def scored_views(recipe: Recipe) -> float:
    """The forward passes that score one image, in inputs of `input_size`: 1 for the center
    view, 2 for flip, 10 for ten crops, more pixels for larger scales."""
    if recipe.stage == "moco" or recipe.architecture != "timm" or recipe.eval_views == "center":
        return 1.0
    from vipnb.eval.tta import tta_views

    size = recipe.input_size
    views = tta_views(torch.zeros(1, 3, size, size), recipe.eval_views, size,
                      mean=recipe.mean, std=recipe.std)
    return sum(view.shape[-2] * view.shape[-1] for view in views) / size**2


# -- measured throughput ----------------------------------------------------------------------
THROUGHPUT_COLUMNS = ("device", "model", "input_size", "images_per_s", "source")


def device_kind() -> str:
    """What `vipnb bench` measures on: the GPU's name, else the CPU and its usable cores."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return machine_description()


def read_throughput(path: str | Path) -> dict[tuple[str, str, int], float]:
    """(device, model, input_size) → training images per second, from the throughput table
    (`vipnb bench --save` writes it); an absent table has no entries."""
    rows = _throughput_rows(Path(path))
    return {(row["device"], row["model"], int(row["input_size"])): float(row["images_per_s"])
            for row in rows}


def record_throughput(path: str | Path, device: str, model: str, input_size: int,
                      images_per_s: float, source: str) -> Path:
    """Add this measurement to the throughput table, replacing the entry of the same device,
    model and input size."""
    path = Path(path)
    key = (device, model, str(input_size))
    rows = [row for row in _throughput_rows(path)
            if (row["device"], row["model"], row["input_size"]) != key]
    rows.append(dict(zip(THROUGHPUT_COLUMNS, (*key, f"{images_per_s:.1f}", source),
                         strict=True)))
    text = io.StringIO()
    writer = csv.DictWriter(text, THROUGHPUT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text.getvalue())


def _throughput_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    if tuple(reader.fieldnames or ()) != THROUGHPUT_COLUMNS:
        raise VipnbError(f"{path}: the columns are {reader.fieldnames}, not "
                         f"{', '.join(THROUGHPUT_COLUMNS)}; fix its first line, or delete the "
                         "file and measure again with `vipnb bench --save`")
    rows = list(reader)
    for line, row in enumerate(rows, 2):
        try:
            if int(row["input_size"]) < 1 or float(row["images_per_s"]) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise VipnbError(f"{path}, line {line}: input_size {row['input_size']!r} and "
                             f"images_per_s {row['images_per_s']!r} must be positive numbers; "
                             "fix or delete the line") from None
    return rows


# -- times reported ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportedTimes:
    """What the runs behind a notebook's committed reports took: (recipe, profile, settings
    beyond the shipped recipe) → median seconds per epoch, training and its validations, on
    the machine the reports name."""

    runs_csv: Path
    machine: str
    seconds_per_epoch: dict[tuple[str, str, str], float]


# Coverage runs are told their hard classes while the notebook runs: a plan cannot know them.
_CHOSEN_WHILE_RUNNING = ("coverage_classes",)


def _settings_key(overrides: dict | None) -> str:
    """A run's settings beyond its shipped recipe (`runs.csv`'s overrides), as one string."""
    if overrides is None:
        return "not shipped"
    return json.dumps({k: v for k, v in overrides.items() if k not in _CHOSEN_WHILE_RUNNING},
                      sort_keys=True)


def reported_times(report_dir: str | Path) -> ReportedTimes | None:
    """The times in `report_dir/runs.csv` (vipnb.report.runs_table); None where there is none."""
    runs_csv = Path(report_dir) / "runs.csv"
    if not runs_csv.exists():
        return None
    per_epoch = defaultdict(list)
    reader = csv.DictReader(io.StringIO(runs_csv.read_text(encoding="utf-8")))
    for line, row in enumerate(reader, 2):
        try:
            epochs, seconds = int(row["epochs"]), float(row["wall_time_s"])
            overrides = json.loads(row["overrides"]) if row["overrides"] else None
            key = (row["recipe"], row["profile"], _settings_key(overrides))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise VipnbError(
                f"{runs_csv}, line {line}: epochs {row.get('epochs')!r}, wall_time_s "
                f"{row.get('wall_time_s')!r} and overrides {row.get('overrides')!r} are not a "
                "whole number, seconds and a JSON object (or empty); restore the file "
                f"(`git checkout -- {runs_csv}`) or regenerate it with `vipnb run`") from None
        if epochs > 0 and seconds > 0:
            per_epoch[key].append(seconds / epochs)
    provenance = Path(report_dir) / "provenance.json"
    try:
        machine = json.loads(provenance.read_text(encoding="utf-8"))["machine"]
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: times still hold
        machine = "a machine the report does not name"
    return ReportedTimes(runs_csv, machine,
                         {key: statistics.median(values) for key, values in per_epoch.items()})


# -- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """Images per second of a run: in training, and scored (forward only, with its views);
    a reported training rate holds its validations."""

    train: float
    score: float
    source: str  # "measured" | "reported" | "FLOPs"


@dataclass(frozen=True)
class PlannedRun:
    """One run still to train, with what it costs."""

    recipe: Recipe
    train_images: int  # per epoch: the trainer's whole batches
    val_images: int  # scored at each validation (MoCo: the kNN bank too; MTL-MoE: test)
    validations: int
    final_images: int  # scored once at the end
    data: str  # "dataset" | "paper size"
    rate: Rate
    needed_for: str = ""  # "" for the notebook's own runs, else e.g. "teacher of moe_rs_sd50"
    note: str = ""

    @property
    def epochs(self) -> int:
        return self.recipe.total_epochs

    @property
    def images_seen(self) -> int:
        return self.train_images * self.epochs

    @property
    def train_seconds(self) -> float:
        return self.images_seen / self.rate.train

    @property
    def score_seconds(self) -> float:
        validations = 0 if self.rate.source == "reported" else self.validations
        scored = self.val_images * validations + self.final_images
        return scored / self.rate.score

    @property
    def hours(self) -> float:
        return (self.train_seconds + self.score_seconds) / 3600


@dataclass(frozen=True)
class Plan:
    notebook: str
    profile: str
    seeds: tuple[int, ...]
    runs: tuple[PlannedRun, ...]
    reused: int  # runs the notebook trains that are finished already
    device: str
    throughput: Path | None
    runs_root: Path
    reported: ReportedTimes | None = None

    @property
    def hours(self) -> float:
        return sum(run.hours for run in self.runs)

    @property
    def images_seen(self) -> int:
        return sum(run.images_seen for run in self.runs)

    def hours_by_source(self, source: str) -> float:
        return sum(run.hours for run in self.runs if run.rate.source == source)

    def as_text(self) -> str:
        table = [("recipe", "seed", "epochs", "images/epoch", "images seen", "time",
                  "estimate", "for")]
        for run in self.runs:
            table.append((run.recipe.name, str(run.recipe.seed), str(run.epochs),
                          f"{run.train_images:,}", f"{run.images_seen:,}",
                          format_duration(run.hours * 3600),
                          f"{run.rate.source}, {run.rate.train:,.0f} img/s",
                          " · ".join(filter(None, (run.needed_for, run.note)))))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        right = {1, 2, 3, 4, 5}
        lines = [f"vipnb plan · {self.notebook} · profile {self.profile} · seeds "
                 f"{list(self.seeds)}",
                 f"runs folder {self.runs_root}: {self.reused} of the notebook's runs finished "
                 f"(reused), {len(self.runs)} to train; each run's time: training and its scoring",
                 f"estimates: measured where {self.throughput or 'the throughput table'} has "
                 f"an entry of this device ({self.device}) for the model and input size; else "
                 + (f"reported where {self.reported.runs_csv} has the recipe at this profile "
                    f"with the same settings (seconds per epoch on {self.reported.machine}, "
                    "runs trained there several at a time); else "
                    if self.reported else "")
                 + f"forward FLOPs x {STEP_IN_FORWARDS} at {ASSUMPTION}; hours on one such "
                 "device, summed over the runs",
                 ""]
        lines += ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                            for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                  for row in table]
        paper_sized = sum(run.data == "paper size" for run in self.runs)
        lines += ["",
                  f"total: {len(self.runs)} run(s) to train, {self.images_seen:,} images seen, "
                  f"{self.hours:,.1f} device-hours (measured {self.hours_by_source('measured'):,.1f}"
                  f" h, reported {self.hours_by_source('reported'):,.1f} h, from FLOPs "
                  f"{self.hours_by_source('FLOPs'):,.1f} h)"]
        if paper_sized:
            lines.append(f"{paper_sized} runs sized from the papers' splits: their data is not "
                         "on this machine (pass -p data_root=DIR to count it)")
        return "\n".join(lines)


def plan_notebook(notebook: str, profile: str, seeds: Sequence[int], runs_root: str | Path,
                  overrides: dict | None = None, throughput: str | Path | None = None,
                  device: str | None = None, reports_root: str | Path | None = None) -> Plan:
    """The runs `notebook` would train at `profile` for `seeds` that are not finished under
    `runs_root`, dependencies first and each once. `overrides`: the recipe settings the
    notebook passes (`data_dir`, `data_root`); `throughput`: the table of measured rates
    (None: FLOPs only); `device`: whose measured rates to use (default: this machine's);
    `reports_root`: where the notebook's reports, and the times of their runs, are (None: not
    used)."""
    stem = notebook_stem(notebook)
    wanted = notebook_recipes(stem, profile)
    runs_root, overrides = Path(runs_root), dict(overrides or {})
    measured = read_throughput(throughput) if throughput else {}
    reported = reported_times(Path(reports_root) / stem) if reports_root else None
    device = device or device_kind()
    planned: dict[str, PlannedRun] = {}
    reused: set[str] = set()
    counted: dict = {}  # split_sizes: each dataset listed once

    def visit(recipe: Recipe, needed_for: str) -> None:
        name = recipe.run_name
        if name in planned or name in reused:
            return
        if RunDir(runs_root / name).finished:  # train() reuses it, and needs none of its sources
            reused.add(name)
            return
        for key in DEPENDENCY_KEYS:
            if getattr(recipe, key):
                visit(recipe.dependency(key), f"{key} of {recipe.name}")
        planned[name] = _planned(recipe, measured, reported, device, counted, needed_for)

    for name in wanted.recipes:
        for seed in seeds:
            visit(load_recipe(name, profile, {**overrides, "seed": seed}), "")
    for name in wanted.coverage:
        for seed in seeds:
            recipe = load_recipe(name, profile, {**overrides, "seed": seed})
            prefix = f"{recipe.name}-{profile}-s{seed}-"
            if any(RunDir(path).finished for path in runs_root.glob(f"{prefix}*")):
                reused.add(prefix)
                continue
            planned[prefix] = _planned(recipe, measured, reported, device, counted, "",
                                       "hard classes chosen while the notebook runs",
                                       coverage=True)
    return Plan(stem, profile, tuple(seeds), tuple(planned.values()), len(reused), device,
                Path(throughput) if throughput else None, runs_root, reported)


def _planned(recipe: Recipe, measured: dict, reported: ReportedTimes | None, device: str,
             counted: dict, needed_for: str, note: str = "",
             coverage: bool = False) -> PlannedRun:
    sizes = split_sizes(recipe, coverage, counted)
    train, val, test = (sum(s.values()) for s in (sizes.train, sizes.val, sizes.test))
    validations = sum(map(recipe.validates_after, range(1, recipe.total_epochs + 1)))
    if recipe.stage == "moco":  # kNN on features of the train split and the scored split
        val_images, final = train + val, (train + val) + (train + test)
    elif recipe.architecture == "mtl_moe":  # scores test at each validation, reuses the last
        val_images, final = test, 0
    else:  # val at each validation (the last reused), test at the end
        val_images, final = val, test
    train_images = _whole_batches(recipe, train)
    return PlannedRun(recipe, train_images, val_images, validations, final, sizes.source,
                      _rate(recipe, len(sizes.train), train_images, measured, reported, device),
                      needed_for, note)


def _whole_batches(recipe: Recipe, images: int) -> int:
    """The images of an epoch: whole batches only (vipnb.engine.trainer, Task.train_batch_size:
    at most the data, and even where timm's Mixup pairs images)."""
    size = min(recipe.batch_size, images)
    if recipe.architecture != "mtl_moe":
        size = max(2, size - size % 2)
    return images // size * size


def _rate(recipe: Recipe, num_classes: int, train_images: int, measured: dict,
          reported: ReportedTimes | None, device: str) -> Rate:
    """Measured for a plain timm model (what `vipnb bench` trains: the baseline recipe with
    another model), else reported, else from FLOPs."""
    plain = (recipe.architecture == "timm" and recipe.stage == "supervised"
             and recipe.experts == 1 and not recipe.teacher and not recipe.model_kwargs
             and not recipe.global_pool)
    views = scored_views(recipe)
    images_per_s = measured.get((device, recipe.model, recipe.input_size)) if plain else None
    if images_per_s:
        return Rate(images_per_s, images_per_s * STEP_IN_FORWARDS / views, "measured")
    if reported and train_images:
        key = (recipe.name, recipe.profile, _settings_key(settings_beyond_shipped(recipe)))
        seconds_per_epoch = reported.seconds_per_epoch.get(key)
        if seconds_per_epoch:
            # a training image costs what train_step_flops counts: 3 forwards, 1 for a fusion
            # head on frozen experts, more with a teacher
            forwards = (train_step_flops(recipe, num_classes)
                        / forward_flops(recipe, num_classes))
            images_per_s = train_images / seconds_per_epoch
            return Rate(images_per_s, images_per_s * forwards / views, "reported")
    score = forward_flops(recipe, num_classes) * views
    return Rate(ASSUMED_FLOPS_PER_S / train_step_flops(recipe, num_classes),
                ASSUMED_FLOPS_PER_S / score, "FLOPs")


def show_plan(notebook: str, profile: str, seeds: Sequence[int], runs_root: str | Path,
              overrides: dict | None = None, throughput: str | Path | None = None,
              reports_root: str | Path | None = None) -> Plan:
    """Print the plan (a notebook's first cell at `paper` calls this) and return it."""
    plan = plan_notebook(notebook, profile, seeds, runs_root, overrides, throughput,
                         reports_root=reports_root)
    print(plan.as_text())
    return plan
