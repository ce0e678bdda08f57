"""Recipes: one YAML file per experiment (a row of a paper's table), with profiles.

A recipe file has the keys `name`, `description`, `paper` (the number the paper reports,
for the report table), `base` (settings shared by all profiles), `profiles` (`smoke`,
`cpu`, `paper`: settings that override `base`) and optionally `extends` (another recipe
whose settings and description this one starts from: a table row that adds one thing to
another row). Resolving a file for one profile gives a validated, flat `Recipe`; its hash
names the run directory, so a finished run is reused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vipnb.data.fingerprint import data_fingerprint
from vipnb.data.registry import dataset_names
from vipnb.engine.task_registry import architecture_names
from vipnb.errors import VipnbError
from vipnb.eval.tta import check_view
from vipnb.losses.registry import head_loss_names, loss_keys, unused_loss_keys

PROFILES = ("smoke", "cpu", "paper")
# The shipped recipes, one folder per paper; `register_recipe_folder` adds another paper's.
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
_recipe_folders: list[Path] = [RECIPES_DIR]
# Keys that change where or how fast a run goes, never its numbers: left out of the hash.
# (`data_root` and `data_dir` are replaced by a digest of the data's content:
# vipnb.data.fingerprint; `compile_scoring` changes only re-scores, whose files name it.)
_NOT_HASHED = {"data_root", "data_dir", "cache_dir", "wordnet_dir", "workers", "description",
               "overrides", "compile_scoring"}
# Keys added after runs were trained: they enter the hash only when set, so adding a key never
# renames the runs that did not use it.
_HASHED_WHEN_SET = {"loss_kwargs", "pretrained_file", "hierarchy", "dataset_options",
                    "box_val_per_class"}
# Keys that change how a run is computed, not what: the evaluation batch, and the accumulation
# steps that keep the global batch on fewer processes (the number of processes is not in the
# name either; both change BatchNorm's micro-batch alike). They entered run names before this
# was settled, so they are hashed at their default: a run trained with `-p accum_steps=4` is
# the notebook's run, and no earlier run is renamed.
_HASHED_AT_DEFAULT = {"accum_steps", "eval_batch_size"}
# Enters every run name. Bump it in a change that alters what a run computes for the same
# recipe and data (the trainer's order of draws, a model's initialisation, an evaluation), so
# that no finished run of the old code is reused, and regenerate the reports: the report
# staleness test (tests/test_report_freshness.py) then names every report that used old runs.
RESULTS_VERSION = 2
# Enters the run names of MTL-MoE recipes (`architecture: mtl_moe`) only, beside
# RESULTS_VERSION: bump it in a change that alters what MTL-MoE runs compute and no other run,
# so that only those train again. 1: the one training loop honours the recipe's
# `decay_epochs`, `decay_rate` and `cooldown_epochs` (the MTL loop used timm's defaults: a
# step schedule ×0.1 every 90 epochs, seen only by the 100-epoch paper profile) and sets
# deterministic kernels; smoke and cpu runs compute the same logits as before.
MTL_RESULTS_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    name: str
    profile: str = "cpu"
    description: str = ""
    # What the caller set over the recipe file (`-p`, a notebook's overrides): the part of it
    # that is not the recipe's own model or loss reaches the runs this one starts from.
    overrides: dict = field(default_factory=dict)
    # data
    dataset: str = "fashion50"  # a registered dataset (vipnb.data.registry): fashion50 | folder | …
    # | fashion_boxes | cub: images with one object box each (CUB-200-2011's file format)
    data_root: str | None = None  # the dataset's folder; None: the built-in's under data_dir
    # A built-in dataset's build options (fashion_boxes: vipnb.data.fashion_boxes.OPTIONS);
    # a build with options set lives in its own folder under data_dir.
    dataset_options: dict = field(default_factory=dict)
    # Where the built-in datasets are built (fashion50/, fashion_boxes/): resolved at the edge
    # (the CLI, the notebooks: $VIPNB_DATA or ./data) and passed down, never looked up below.
    data_dir: str | None = None
    # Where `data_cache: memory` keeps the decoded images (vipnb.data.cache), passed down as
    # data_dir is (the CLI: <data_dir>/.cache); None: in the dataset folder, if it is writable.
    cache_dir: str | None = None
    data_cache: str = "memory"  # memory: decoded uint8 tensors | stream: DataLoader workers
    cache_size: int = 32  # every image is resized to cache_size × cache_size once
    interpolation: str = "bilinear"
    skip_bad_images: bool = False
    class_subset: tuple[int, ...] = ()  # box data: train and test on these classes only
    # box data: N training images a class held out as validation (the same N images for every
    # seed), so choices are made without the test set; 0: train and test only
    box_val_per_class: int = 0
    val_into_train: float = 0.0  # fraction of each val class moved into training (final models)
    train_limit: int = 0  # 0: all; else the first N training images (smoke runs)
    eval_limit: int = 0  # 0: all; else the first N val and test images (smoke runs)
    test_limit: int = 0  # 0: all (or eval_limit); else the first N test images, N/C per class
    workers: int | str = "auto"  # stream's DataLoader workers; auto: this process's CPU share
    # A WordNet 3.0 database folder (data.noun) for `hierarchy: wordnet`; None: $WNSEARCHDIR,
    # else /usr/share/wordnet (Debian's wordnet-base), looked up by vipnb.report.wordnet_names.
    wordnet_dir: str | None = None
    # model
    architecture: str = "timm"  # a registered task (vipnb.engine.task_registry): timm | mtl_moe
    model: str = "resnet18"
    model_kwargs: dict = field(default_factory=dict)
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    experts: int = 1  # > 1: a mixture of experts on a shared trunk (vipnb.models.moe)
    shared_stages: int = 2  # stages of the trunk the experts share
    fusion: bool = False  # train only a linear fusion of the experts (needs init_from)
    init_from: str = ""  # a recipe whose finished run (same profile and seed) gives the weights
    init: str = "timm"  # timm: the model's own initialisation | xavier: Glorot on conv and linear
    gate_k: int = 2  # mtl_moe: experts each image is routed to (noisy top-k gating)
    box_task: bool = True  # mtl_moe: a second gate and tower regress the object box
    box_loss_weight: float = 1.0  # weight of the complete-IoU box loss beside cross-entropy
    freeze: str = ""  # "" | experts: fine-tune `init_from` with experts and condense layer frozen
    global_pool: str = ""  # "": the model's own | catavgmax: VIPF's "dual pool" (avg ‖ max)
    pretrained_file: str = ""  # mtl_moe: a local timm state dict the backbone starts from
    # augmentation
    input_size: int = 32
    crop_pct: float = 1.0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    hflip: float = 0.5
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    auto_augment: str = ""  # "" | original: AutoAugment's ImageNet policy, batched
    vflip: float = 0.0  # probability of a vertical flip
    color_jitter: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue
    gaussian_noise: float = 0.0  # amplitude (uint8 levels) of per-pixel noise shared by channels
    random_erasing: float = 0.0  # probability per image (timm's RandomErasing, pixel mode)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_off_epochs: int = 0  # Mixup/CutMix switched off for the last K epochs
    label_smoothing: float = 0.0
    # loss
    loss: str = "soft_ce"  # a registered head loss (vipnb.losses.registry): soft_ce | ...
    loss_kwargs: dict = field(default_factory=dict)  # the settings of a registered loss
    taylor_order: int = 2  # t of the Taylor cross-entropy
    bi_tempered_t1: float = 0.8  # temperatures of the bi-tempered logistic loss
    bi_tempered_t2: float = 1.2
    focal_gamma: float = 2.0  # γ of the (DSB) focal loss
    semantic_scale_store: int = 64  # features kept per class to measure its semantic scale
    diversity_weight: float = 0.0  # λ of the experts' diversity loss
    # VIPF eq. 3: L = α·`loss` + β·center loss + γ·tree supervision loss
    loss_weight: float = 1.0  # α
    center_loss_weight: float = 0.0  # β (0: off)
    center_loss_alpha: float = 0.5  # Wen et al.'s centre learning rate
    tree_loss_weight: float = 0.0  # γ (0: off); needs `hierarchy_from` or `hierarchy: wordnet`
    hierarchy_from: str = ""  # a recipe whose finished run's classifier induces the hierarchy
    hierarchy: str = "induced"  # induced: from `hierarchy_from` | wordnet: the classes' hypernyms
    teacher: str = ""  # a recipe whose finished run (same profile and seed) distils into this
    distill_label_weight: float = 0.5  # weight of the labels beside the teacher's softmax
    # result coverage: train on the hard classes (resampled) plus one "other" class
    coverage_classes: tuple[int, ...] = ()
    coverage_per_hard: int = 500  # images per hard class after resampling
    coverage_per_other: int = 5  # images from every other class, pooled into "other"
    # self-supervised stage
    stage: str = "supervised"  # supervised | moco (MoCo-v2 pretraining of the backbone)
    moco_dim: int = 128
    moco_queue: int = 4096
    moco_momentum: float = 0.999
    moco_temperature: float = 0.2
    # optimisation
    epochs: int = 40  # epochs trained, cooldown_epochs included
    batch_size: int = 64  # the global batch: split over processes and accumulation steps
    accum_steps: int = 1  # gradient accumulation: keep the global batch on fewer GPUs
    optimizer: str = "sgd"  # sgd | adamw | adam
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sched: str = "cosine"  # cosine | step
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    cooldown_epochs: int = 0
    decay_epochs: int = 30  # step schedule: divide by 1/decay_rate every decay_epochs
    decay_rate: float = 0.1
    ema_decay: float = 0.0  # 0: no EMA; else evaluate an EMA of the weights
    # compute
    amp: str = "auto"  # auto: bf16 where the hardware has it (CUDA, AVX512-BF16/AMX CPUs) | bf16 | none
    channels_last: bool = True
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA)
    compile: bool = False
    seed: int = 0
    deterministic: bool = True
    eval_batch_size: int = 500
    eval_views: str = "center"  # test-time augmentation: center | flip | ten_crop | ...
    val_every: int = 1  # validate every k epochs and after the last (learning-curve points)
    # re-scoring (vipnb.engine.rescore) under torch.compile: chosen per model by measurement
    compile_scoring: bool = False

    @property
    def total_epochs(self) -> int:
        """The epochs trained: `epochs`, the cool-down at the end included."""
        return self.epochs

    def validates_after(self, epoch: int) -> bool:
        """Whether training validates (the MTL task: scores the test set) after its `epoch`-th
        epoch, counted from 1: every `val_every` epochs and after the last."""
        return epoch % max(1, self.val_every) == 0 or epoch == self.total_epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        hashed = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED
                  and not (k in _HASHED_WHEN_SET and v == default_value(k))}
        hashed.update({key: default_value(key) for key in _HASHED_AT_DEFAULT})
        for key in DEPENDENCY_KEYS:
            if hashed[key]:
                hashed[key] = self.dependency(key).run_name
        if "pretrained_file" in hashed:  # its content names the run, not where it lies
            hashed["pretrained_file"] = _file_digest(self.pretrained_file, self.name)
        hashed["data"] = data_fingerprint(self)
        hashed["results_version"] = RESULTS_VERSION
        if self.architecture == "mtl_moe":
            hashed["mtl_results_version"] = MTL_RESULTS_VERSION
        if self.cooldown_epochs:  # runs of the old reading (cool-down after `epochs`) differ
            hashed["epochs_include_cooldown"] = True
        return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def run_name(self) -> str:
        return f"{self.name}-{self.profile}-s{self.seed}-{self.digest()}"

    def dependency(self, key: str) -> Recipe:
        """The recipe named by `teacher`, `init_from` or `hierarchy_from`, at this profile,
        seed and data, with this recipe's overrides except those of its own model and loss
        (`-p epochs=1` shortens the teacher too; `-p model=...` names this recipe's model)."""
        carried = {k: getattr(self, k) for k in ("seed", "data_root", "data_dir", "cache_dir",
                                                    "workers", "data_cache")}
        flowing = {k: v for k, v in self.overrides.items() if k not in _OWN_KEYS}
        return load_recipe(getattr(self, key), self.profile, {**carried, **flowing},
                           inherited=True)

    def grouped(self, changed_only: bool = False) -> dict[str, dict[str, Any]]:
        """The settings by concern (`CONCERNS`); `changed_only`: those away from the default."""
        values = self.to_dict()
        return {concern: {key: values[key] for key in keys
                          if not changed_only or values[key] != default_value(key)}
                for concern, keys in CONCERNS.items()}

    def replace(self, **changes: Any) -> Recipe:
        return from_dict({**self.to_dict(), **changes}, source="override", written=changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}
# The keys by concern, as the Recipe lists them: what `vipnb recipe` shows under each heading
# and what an unknown key's error lists. (The dataclass stays flat: its fields name the runs.)
CONCERNS: dict[str, tuple[str, ...]] = {
    "run": ("name", "profile", "description", "overrides"),
    "data": ("dataset", "data_root", "dataset_options", "data_dir", "cache_dir", "data_cache",
             "cache_size", "interpolation", "skip_bad_images", "class_subset",
             "box_val_per_class", "val_into_train", "train_limit", "eval_limit", "test_limit",
             "workers", "wordnet_dir"),
    "model": ("architecture", "model", "model_kwargs", "drop_rate", "drop_path_rate", "experts",
              "shared_stages", "fusion", "init_from", "init", "gate_k", "box_task",
              "box_loss_weight", "freeze", "global_pool", "pretrained_file"),
    "augmentation": ("input_size", "crop_pct", "scale", "ratio", "hflip", "mean", "std",
                     "auto_augment", "vflip", "color_jitter", "gaussian_noise", "random_erasing",
                     "mixup_alpha", "cutmix_alpha", "mixup_prob", "mixup_switch_prob",
                     "mixup_off_epochs", "label_smoothing"),
    "loss": ("loss", "loss_kwargs", "taylor_order", "bi_tempered_t1", "bi_tempered_t2",
             "focal_gamma", "semantic_scale_store", "diversity_weight", "loss_weight",
             "center_loss_weight", "center_loss_alpha", "tree_loss_weight", "hierarchy_from",
             "hierarchy", "teacher", "distill_label_weight", "coverage_classes",
             "coverage_per_hard", "coverage_per_other"),
    "self-supervision": ("stage", "moco_dim", "moco_queue", "moco_momentum", "moco_temperature"),
    "optimisation": ("epochs", "batch_size", "accum_steps", "optimizer", "lr", "momentum",
                     "weight_decay", "sched", "warmup_epochs", "warmup_lr", "min_lr",
                     "cooldown_epochs", "decay_epochs", "decay_rate", "ema_decay"),
    "compute": ("amp", "channels_last", "sync_bn", "compile", "seed", "deterministic"),
    "evaluation": ("eval_batch_size", "eval_views", "val_every", "compile_scoring"),
}
_CHOICES = {
    "profile": PROFILES,
    "data_cache": ("memory", "stream"),
    "freeze": ("", "experts"),
    "interpolation": ("bilinear", "bicubic", "nearest"), "optimizer": ("sgd", "adamw", "adam"),
    "sched": ("cosine", "step"), "amp": ("auto", "bf16", "none"),
    "global_pool": ("", "avg", "max", "avgmax", "catavgmax"),
    "stage": ("supervised", "moco"), "auto_augment": ("", "original"), "init": ("timm", "xavier"),
    "hierarchy": ("induced", "wordnet"),
}
# Keys whose values a registry holds: the names registered so far, and how to add one.
_REGISTRIES = {
    "loss": (head_loss_names, "vipnb.losses.registry.register_head_loss"),
    "architecture": (architecture_names, "vipnb.engine.task_registry.register_task"),
    "dataset": (dataset_names, "vipnb.data.registry.register_dataset"),
}
_PATH_KEYS = ("data_root", "data_dir", "cache_dir", "wordnet_dir")  # a folder, or None
_AUTO_KEYS = ("workers",)  # a whole number, or `auto`
# Keys that describe a recipe itself: an override of one stays with the recipe it was given to.
_OWN_KEYS = {*CONCERNS["run"], *CONCERNS["model"], *CONCERNS["loss"]}
# Keys naming other recipes whose runs this one starts from: their run names enter the hash.
DEPENDENCY_KEYS = ("teacher", "init_from", "hierarchy_from")
# Keys that only one choice of another setting reads: what reads them, and when it does. A
# recipe file's own settings or an override that sets one where nothing reads it is refused
# (a key inherited through `extends` is not: a table row may switch off its parent's feature).
# The coverage keys are not here: notebook 04 fills `coverage_classes` when it trains.
_READ_ONLY_WHEN: dict[tuple[str, ...], tuple[str, Callable[[Recipe], bool]]] = {
    ("gate_k", "box_task", "box_loss_weight", "class_subset", "box_val_per_class",
     "pretrained_file"):
        ("architecture: mtl_moe", lambda r: r.architecture == "mtl_moe"),
    ("moco_dim", "moco_queue", "moco_momentum", "moco_temperature"):
        ("stage: moco", lambda r: r.stage == "moco"),
    ("shared_stages", "diversity_weight"): ("experts > 1", lambda r: r.experts > 1),
    ("distill_label_weight",): ("a teacher", lambda r: bool(r.teacher)),
    ("center_loss_alpha",): ("center_loss_weight > 0", lambda r: r.center_loss_weight > 0),
    ("hierarchy",): ("tree_loss_weight > 0", lambda r: r.tree_loss_weight > 0),
    ("decay_epochs", "decay_rate"): ("sched: step", lambda r: r.sched == "step"),
    ("warmup_lr",): ("warmup_epochs > 0", lambda r: r.warmup_epochs > 0),
    ("mixup_prob", "mixup_off_epochs"):
        ("mixup_alpha > 0 or cutmix_alpha > 0", lambda r: r.mixup_alpha > 0 or r.cutmix_alpha > 0),
    ("mixup_switch_prob",):
        ("mixup_alpha > 0 and cutmix_alpha > 0", lambda r: r.mixup_alpha > 0 and r.cutmix_alpha > 0),
}


@dataclass(frozen=True)
class _Range:
    """The finite numbers from `low` to `high`; an open end leaves that end out."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        return (math.isfinite(value)
                and (self.low < value if self.open_low else self.low <= value)
                and (value < self.high if self.open_high else value <= self.high))

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return (f"{'(' if self.open_low else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.open_high else ']'}")


AT_LEAST_ONE = _Range(1)
POSITIVE = _Range(0, open_low=True)
NON_NEGATIVE = _Range(0)
PROBABILITY = _Range(0, 1)
FRACTION = _Range(0, 1, open_high=True)  # 1 would leave nothing (smoothing, EMA, momentum)
SHARE = _Range(0, 1, open_low=True)  # a non-empty part of the whole (crop, scale, decay)
# The allowed values of each numeric key. A tuple of ranges: that many items, one range each;
# a single range for a tuple key: any number of items, each in it. Keys not listed are
# names checked by _CHOICES or by the code that uses them (model, eval_views, model_kwargs).
_RANGES: dict[str, _Range | tuple[_Range, ...]] = {
    **dict.fromkeys(("cache_size", "input_size", "experts", "gate_k", "taylor_order",
                     "semantic_scale_store", "coverage_per_hard", "coverage_per_other",
                     "moco_dim", "moco_queue", "epochs", "batch_size", "accum_steps",
                     "decay_epochs", "eval_batch_size", "val_every"), AT_LEAST_ONE),
    **dict.fromkeys(("lr", "moco_temperature", "bi_tempered_t2"), POSITIVE),
    # seed >= 0: numpy's generators refuse negative seeds.
    **dict.fromkeys(("train_limit", "eval_limit", "test_limit", "workers", "shared_stages",
                     "seed", "class_subset", "box_val_per_class", "coverage_classes",
                     "box_loss_weight", "gaussian_noise", "mixup_alpha", "cutmix_alpha",
                     "mixup_off_epochs", "focal_gamma", "diversity_weight", "loss_weight",
                     "center_loss_weight", "tree_loss_weight", "weight_decay", "warmup_epochs",
                     "warmup_lr", "min_lr", "cooldown_epochs"), NON_NEGATIVE),
    **dict.fromkeys(("val_into_train", "drop_rate", "drop_path_rate", "label_smoothing",
                     "momentum", "moco_momentum", "ema_decay"), FRACTION),
    # bi_tempered_t1 <= 1: the loss is bounded only there (Amid et al. 2019), and 2 divides by 0.
    **dict.fromkeys(("hflip", "vflip", "random_erasing", "mixup_prob", "mixup_switch_prob",
                     "distill_label_weight", "center_loss_alpha", "bi_tempered_t1"),
                    PROBABILITY),
    **dict.fromkeys(("crop_pct", "decay_rate"), SHARE),
    "scale": (SHARE, SHARE), "ratio": (POSITIVE, POSITIVE),
    "mean": (PROBABILITY,) * 3, "std": (POSITIVE,) * 3,  # of RGB pixels scaled to [0, 1]
    # brightness, contrast, saturation; hue turns at most half the colour wheel
    "color_jitter": (NON_NEGATIVE,) * 3 + (_Range(0, 0.5),),
}
_ORDERED = ("scale", "ratio")  # (low, high) ranges that timm samples from
# A recipe's name becomes a run folder's name, so it may hold no path.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def from_dict(values: dict[str, Any], source: str = "recipe",
              overridden: Collection[str] = (), written: Collection[str] | None = None) -> Recipe:
    """Validate `values` against the Recipe keys; an unknown key or bad value names itself,
    and as coming from an override when its key is in `overridden`. The keys in `written`
    (default: all of `values`) must be read by the recipe's other settings (`_READ_ONLY_WHEN`)."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        by_concern = "; ".join(f"{concern}: {', '.join(keys)}"
                               for concern, keys in CONCERNS.items())
        raise VipnbError(f"{source}: unknown recipe key(s) {', '.join(unknown)}. "
                         f"Valid keys by concern: {by_concern}")
    if "name" not in values:
        raise VipnbError(f"{source}: a recipe needs a `name`")

    def where(key: str) -> str:
        return f"override of {source}" if key in overridden else source

    typed = {key: _coerce(key, value, where(key)) for key, value in values.items()}
    for key, choices in _CHOICES.items():
        if key in typed and typed[key] not in choices:
            raise VipnbError(f"{where(key)}: {key}={typed[key]!r} is not one of "
                             f"{', '.join(choices)}")
    for key, (names, register) in _REGISTRIES.items():
        value = typed.get(key, getattr(Recipe, key))
        if value not in names():
            raise VipnbError(f"{where(key)}: {key}={value!r} is not one of "
                             f"{', '.join(names())}; a new one registers with {register}")
    _check_loss_keys(typed, where)
    if "eval_views" in typed:
        try:
            check_view(typed["eval_views"].strip())
        except VipnbError as e:
            raise VipnbError(f"{where('eval_views')}: eval_views={typed['eval_views']!r}: "
                             f"{e}") from None
    for key, value in typed.items():
        _check_range(key, value, where(key))
    _check_names(typed, where)
    recipe = Recipe(**typed)
    _check_read(recipe, typed if written is None else written, where)
    _check_schedule(recipe, where)
    if recipe.architecture == "mtl_moe" and recipe.gate_k > recipe.experts:
        raise VipnbError(f"{where('gate_k')}: gate_k={recipe.gate_k} routes each image to more "
                         f"than the experts={recipe.experts} there are; choose gate_k <= experts")
    if recipe.hierarchy == "wordnet" and recipe.hierarchy_from:  # its run would train unread
        raise VipnbError(f"{where('hierarchy')}: hierarchy='wordnet' takes the tree from WordNet, "
                         f"but hierarchy_from={recipe.hierarchy_from!r} names a run to induce it "
                         "from; set hierarchy_from: '' or hierarchy: induced")
    return recipe


def _check_loss_keys(typed: dict[str, Any], where) -> None:
    """No setting of another loss is changed from its default (a run's saved recipe lists
    every key), nor is a `loss_kwargs` key set that the chosen loss does not read."""
    loss = typed.get("loss", Recipe.loss)
    unread_kwargs = set(typed.get("loss_kwargs", {})) - set(loss_keys(loss))
    changed = {key for key, value in typed.items() if key in _FIELDS
               and value != default_value(key)}
    unused = sorted(unread_kwargs) + unused_loss_keys(loss, changed)
    if unused:
        raise VipnbError(f"{where(unused[0])}: {', '.join(unused)} set, but loss={loss!r} does "
                         f"not read them (it reads: {', '.join(loss_keys(loss)) or 'none'}); "
                         "remove them or choose the loss that does")


def _check_read(recipe: Recipe, written: Collection[str], where) -> None:
    """No key in `written` is set away from its default where the recipe's other settings
    leave it unread (`decay_epochs` under a cosine schedule, `gate_k` outside MTL-MoE)."""
    for keys, (reader, reads) in _READ_ONLY_WHEN.items():
        for key in keys:
            if (key in written and getattr(recipe, key) != default_value(key)
                    and not reads(recipe)):
                raise VipnbError(f"{where(key)}: {key}={getattr(recipe, key)!r} is set, but only "
                                 f"{reader} reads it, which this recipe does not have; remove "
                                 f"{key} or set {reader}")


def _check_schedule(recipe: Recipe, where) -> None:
    """Warm-up, cool-down and the Mixup-free end fit inside `epochs` (a run of `-p epochs=1`
    trains one epoch, not a warm-up of 25)."""
    if recipe.warmup_epochs + recipe.cooldown_epochs >= recipe.epochs and recipe.warmup_epochs:
        raise VipnbError(f"{where('epochs')}: warmup_epochs={recipe.warmup_epochs} + "
                         f"cooldown_epochs={recipe.cooldown_epochs} leave no epoch of the schedule "
                         f"in epochs={recipe.epochs}; shorten them (e.g. -p warmup_epochs=0)")
    if recipe.cooldown_epochs >= recipe.epochs:
        raise VipnbError(f"{where('epochs')}: cooldown_epochs={recipe.cooldown_epochs} is not "
                         f"shorter than epochs={recipe.epochs} (which include it); shorten it "
                         "(e.g. -p cooldown_epochs=0)")
    if ((recipe.mixup_alpha or recipe.cutmix_alpha)
            and recipe.mixup_off_epochs >= recipe.epochs):
        raise VipnbError(f"{where('epochs')}: mixup_off_epochs={recipe.mixup_off_epochs} switch "
                         f"Mixup/CutMix off for all of epochs={recipe.epochs}; shorten it (e.g. "
                         "-p mixup_off_epochs=0) or set mixup_alpha and cutmix_alpha to 0")


def _file_digest(path: str, recipe: str) -> str:
    """sha256 of the file a recipe names (`pretrained_file`), computed once while the file
    keeps its size and modification time."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise VipnbError(f"{recipe}: pretrained_file={path!r} is not a file; give the path of a "
                         "local state dict file, or leave it empty")
    stat = file.stat()
    return _sha256(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_value(key: str) -> Any:
    """The default of a Recipe key."""
    field = _FIELDS[key]
    return field.default_factory() if callable(field.default_factory) else field.default


def _check_range(key: str, value: Any, where: str) -> None:
    allowed = _RANGES.get(key)
    if allowed is None or (key in _AUTO_KEYS and value == "auto"):
        return
    if isinstance(allowed, tuple):
        fits = len(value) == len(allowed) and all(v in r for v, r in zip(value, allowed, strict=True))
        rule = (f"{len(allowed)} values, each {allowed[0]}" if len(set(allowed)) == 1
                else f"{len(allowed)} values: {', '.join(map(str, allowed))}")
        if key in _ORDERED:
            fits, rule = fits and value[0] <= value[1], f"{rule}, the first <= the second"
    elif isinstance(value, tuple):
        fits, rule = all(v in allowed for v in value), f"each item {allowed}"
    else:
        fits, rule = value in allowed, str(allowed)
    if not fits:
        shown = list(value) if isinstance(value, tuple) else value
        raise VipnbError(f"{where}: {key}={shown!r} is out of range; allowed: {rule}")


def _check_names(typed: dict[str, Any], where) -> None:
    """`name` is a safe name; a dependency is one too or a path to a recipe file."""
    def safe(name: str) -> bool:
        return bool(_SAFE_NAME.fullmatch(name)) and ".." not in name

    rule = "letters, digits, '_', '.', '-', starting with a letter or digit, no '..'"
    if not safe(typed["name"]):
        raise VipnbError(f"{where('name')}: name={typed['name']!r} is not a safe name (it names "
                         f"the run folder); use {rule}")
    for key in DEPENDENCY_KEYS:
        value = typed.get(key, "")
        if value and not safe(value) and Path(value).suffix not in (".yaml", ".yml"):
            raise VipnbError(f"{where(key)}: {key}={value!r} is neither a recipe name ({rule}) "
                             "nor the path of a .yaml recipe file")


def _coerce(key: str, value: Any, source: str) -> Any:
    default = default_value(key)
    if default is dataclasses.MISSING:  # `name`
        default = ""
    if key in _AUTO_KEYS:
        if value in ("auto", None):  # None: YAML's empty value keeps the default
            return "auto"
        default = 0  # else a whole number
    try:
        if value is None:  # YAML's empty value: "" for text keys
            if isinstance(default, str) or key in _PATH_KEYS:
                return "" if isinstance(default, str) else None
            raise ValueError("the value is empty; write one, or delete the line to keep "
                             f"the default {default!r}")
        if key in _PATH_KEYS:
            return str(value)
        if isinstance(default, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, bool):
                return value
            raise ValueError("expected true or false")
        if isinstance(default, (int, float)) and isinstance(value, bool):
            raise ValueError("expected a number, not true/false")  # YAML reads yes/no as bools
        if isinstance(default, int):
            if float(value) != int(float(value)):
                raise ValueError("expected a whole number")
            return int(float(value))
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            items = yaml.safe_load(value) if isinstance(value, str) else value
            if any(isinstance(v, bool) for v in items):  # YAML reads yes/no as bools
                raise ValueError("expected numbers, not true/false")
            item_type = int if "int" in str(_FIELDS[key].type) else float
            if item_type is int and any(float(v) != int(float(v)) for v in items):
                raise ValueError("expected whole numbers")
            return tuple(item_type(float(v)) for v in items)
        if isinstance(default, dict):
            items = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(items, dict):
                raise ValueError("expected a mapping")
            return dict(items)
        return str(value)
    except (TypeError, ValueError, OverflowError, yaml.YAMLError) as e:  # Overflow: int(inf)
        raise VipnbError(f"{source}: bad value {value!r} for recipe key `{key}`: {e}") from None


def register_recipe_folder(folder: str | Path) -> None:
    """Make the recipes under `folder` (a paper's, outside vipnb) findable by name, `extends`
    included."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise VipnbError(f"recipe folder {folder} does not exist; give a folder of .yaml recipes")
    if folder not in _recipe_folders:
        _recipe_folders.append(folder)


def recipe_files() -> dict[str, Path]:
    """Every recipe findable by name: `<name>.yaml` anywhere under a recipe folder (scanned
    on each call, 2 ms: a file added in a running notebook is found)."""
    found: dict[str, Path] = {}
    for folder in _recipe_folders:
        for path in sorted(folder.rglob("*.yaml")):
            if path.stem in found:
                raise VipnbError(f"two recipes are named {path.stem!r}: {found[path.stem]} and "
                                 f"{path}; rename one (a recipe's name is its file's stem)")
            found[path.stem] = path
    return found


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe by path, or by name among the registered recipe folders (`vipnb/recipes/`)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    known = recipe_files()
    if str(name_or_path) in known:
        return known[str(name_or_path)]
    raise VipnbError(f"no recipe {name_or_path!r}: not a file, nor one of: "
                     f"{', '.join(sorted(known))}")


def parse_yaml(text: str) -> Any:
    """A YAML document, with libyaml's safe loader when PyYAML has it: recipes load ~3x faster
    (the same documents)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    path = find_recipe(path)
    try:
        document = parse_yaml(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise VipnbError(f"{path}: cannot read this recipe file ({e.strerror or e}); "
                         "give the path of a readable .yaml file") from None
    except UnicodeDecodeError as e:
        raise VipnbError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                         "save the recipe as UTF-8 YAML") from None
    except yaml.YAMLError as e:
        raise VipnbError(f"{path}: not valid YAML: {e}\nFix the line shown (indentation, "
                         "a missing ':' or an unclosed quote or bracket)") from None
    allowed = {"name", "description", "paper", "extends", "base", "profiles"}
    if not isinstance(document, dict) or set(document) - allowed:
        extra = sorted(set(document or {}) - allowed) if isinstance(document, dict) else []
        raise VipnbError(
            f"{path}: a recipe file is a mapping with keys {', '.join(sorted(allowed))}"
            + (f"; unknown: {', '.join(extra)}" if extra else "")
        )
    _check_sections(path, document)
    missing_profiles = [p for p in PROFILES if p not in (document.get("profiles") or {})]
    if missing_profiles and "extends" not in document:
        raise VipnbError(f"{path}: profiles {', '.join(missing_profiles)} missing under `profiles`")
    return document


def _check_sections(path: Path, document: dict[str, Any]) -> None:
    """Each part of a recipe file has the shape `_settings` reads."""
    if document.get("name") in (None, ""):
        raise VipnbError(f"{path}: no `name`; add `name: {path.stem}` at the top")
    if not isinstance(document.get("extends", ""), str):
        raise VipnbError(f"{path}: `extends` is {document['extends']!r}; give one recipe name "
                         "or .yaml path")
    profiles = document.get("profiles") or {}
    sections = {"base": document.get("base"), "paper": document.get("paper"),
                "profiles": profiles,
                **({f"profiles.{p}": s for p, s in profiles.items()}
                   if isinstance(profiles, dict) else {})}
    for section, settings in sections.items():
        if settings is not None and not isinstance(settings, dict):
            raise VipnbError(f"{path}: `{section}` is {type(settings).__name__} {settings!r}; "
                             "write it as a mapping of `key: value` lines")
    unknown = sorted(map(str, set(profiles) - set(PROFILES)))
    if unknown:
        raise VipnbError(f"{path}: unknown profile(s) {', '.join(unknown)} under `profiles`; "
                         f"valid profiles: {', '.join(PROFILES)}")


def load_recipe(name_or_path: str | Path, profile: str = "cpu",
                overrides: dict[str, Any] | None = None, inherited: bool = False) -> Recipe:
    """Resolve a recipe file for `profile`: base ← profiles[profile] ← overrides.

    `inherited`: the overrides come from a recipe that depends on this one; a key among them
    that this recipe does not read is not refused (its dependent reads it)."""
    if profile not in PROFILES:
        raise VipnbError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    path = find_recipe(name_or_path)
    document = read_recipe_file(path)
    overrides = dict(overrides or {})
    values = {"name": document["name"], **_settings(path, profile), "profile": profile,
              **overrides, "overrides": overrides}
    own = {**(document.get("base") or {}), **((document.get("profiles") or {}).get(profile) or {})}
    recipe = from_dict(values, source=f"{path} (profile {profile})", overridden=set(overrides),
                       written={*own, *({} if inherited else overrides)})
    # the overrides as the recipe typed them (a Path as text, a list as a tuple)
    return dataclasses.replace(recipe, overrides={key: getattr(recipe, key) for key in overrides
                                                  if key != "overrides"})


def _settings(path: Path, profile: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """description, base ← profiles[profile] of a recipe file, on top of those of the file
    it `extends`."""
    if path in seen:
        chain = " → ".join(str(p.name) for p in (*seen, path))
        raise VipnbError(f"{path}: `extends` goes round in a circle: {chain}")
    document = read_recipe_file(path)
    inherited = {"description": ""}
    if "extends" in document:
        inherited = _settings(find_recipe(document["extends"]), profile, (*seen, path))
    own = {"description": document["description"]} if document.get("description") else {}
    profiles = document.get("profiles") or {}
    return {**inherited, **own, **(document.get("base") or {}),
            **(profiles.get(profile) or {})}


def paper_reference(name_or_path: str | Path) -> dict[str, Any]:
    """The `paper` block of a recipe file: the number the paper reports and its source."""
    return dict(read_recipe_file(name_or_path).get("paper") or {})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings from the command line → a dict (values parsed as YAML scalars)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise VipnbError(f"bad override {pair!r}: write key=value, e.g. -p epochs=5")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or e
            raise VipnbError(f"bad override -p {pair!r}: its value is not valid YAML ({problem}); "
                             "close brackets and quotes, e.g. -p scale=[0.5,1.0]") from None
    return overrides
