"""Where a run's data comes from: the dataset root of a recipe, its splits decoded or streamed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from vipnb.data.build_folder import refuse_interrupted_build
from vipnb.data.cache import decode_split
from vipnb.data.coverage import coverage_run_data
from vipnb.data.layout import ImageList, scan_split
from vipnb.data.registry import dataset_entry
from vipnb.data.run_data import RunData, SplitSource
from vipnb.data.val_into_train import move_val_into_train
from vipnb.data.workers import worker_count
from vipnb.errors import VipnbError

log = logging.getLogger(__name__)


def dataset_root(recipe) -> Path:
    """Where the recipe's images live, in the VIPriors layout (vipnb.data.registry)."""
    entry = dataset_entry(recipe)
    if entry.boxes:
        raise VipnbError(f"recipe {recipe.name}: dataset `{recipe.dataset}` holds boxes for "
                         "`architecture: mtl_moe`; a classifier trains on a dataset in the "
                         "VIPriors layout")
    root = entry.root(recipe)
    refuse_interrupted_build(root)
    return root


def cache_folder(recipe, root: Path) -> Path:
    """Where `data_cache: memory` keeps `root`'s decoded images: under the recipe's
    `cache_dir` (one folder per dataset folder name; the file names hold the content's digest),
    else in the dataset folder itself, which must then be writable."""
    if recipe.cache_dir:
        return Path(recipe.cache_dir) / (root.resolve().name or "data")
    if os.access(root, os.W_OK):
        return root / ".vipnb_cache"
    raise VipnbError(f"recipe {recipe.name}: the dataset folder {root} is read-only, so the "
                     "decoded images cannot be cached in it; set the recipe key `cache_dir` to "
                     "a writable folder with room for them (-p cache_dir=DIR; `vipnb train` "
                     "passes <data_dir>/.cache), or `data_cache: stream`")


def load_run_data(recipe) -> RunData:
    root = dataset_root(recipe)
    cache_dir = cache_folder(recipe, root) if recipe.data_cache == "memory" else None
    sources = {}
    split_files = {split: scan_split(root, split) for split in ("train", "val", "test")}
    if recipe.val_into_train:
        split_files["train"], split_files["val"] = move_val_into_train(
            split_files["train"], split_files["val"], recipe.val_into_train)
    for split, files in split_files.items():
        limit = {"train": recipe.train_limit, "val": recipe.eval_limit,
                 "test": recipe.test_limit or recipe.eval_limit}[split]
        if limit:
            files = _first_per_class(files, limit)
        if recipe.data_cache == "memory":
            decoded = decode_split(files, recipe.cache_size, recipe.interpolation,
                                   skip_bad=recipe.skip_bad_images, cache_dir=cache_dir)
            sources[split] = SplitSource(split, decoded.labels, decoded.ids, decoded.classes,
                                         decoded.skipped, images=decoded.images)
        else:
            sources[split] = SplitSource(split, torch.from_numpy(files.labels), files.ids,
                                         files.classes, [], files=files, size=recipe.cache_size,
                                         interpolation=recipe.interpolation,
                                         workers=worker_count(recipe.workers))
        if sources[split].skipped:
            log.warning("%s: skipped %d unreadable images", split, len(sources[split].skipped))
    data = RunData(sources["train"], sources["val"], sources["test"], root)
    if recipe.coverage_classes:  # the fusion-coverage paper's targeted training set (§III.E)
        data = coverage_run_data(data, recipe.coverage_classes, recipe.coverage_per_hard,
                                 recipe.coverage_per_other, recipe.seed)
    return data


def _first_per_class(files: ImageList, total: int) -> ImageList:
    """About `total` images with every class kept (round-robin over classes)."""
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(files.labels.tolist()):
        by_class.setdefault(label, []).append(i)
    per_class = max(1, total // max(1, len(by_class)))
    keep = sorted(i for members in by_class.values() for i in members[:per_class])
    return ImageList(files.split, [files.paths[i] for i in keep], files.labels[keep], files.classes)
