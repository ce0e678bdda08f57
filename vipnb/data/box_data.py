"""The data of a box-regression run: uint8 images with their class and normalised object box,
from CUB-200-2011 or its built-in stand-in fashion-boxes (the same file format)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vipnb.data.build_folder import refuse_interrupted_build
from vipnb.data.cub import decode_cub, read_cub
from vipnb.data.registry import dataset_entry, dataset_names
from vipnb.errors import VipnbError


@dataclass(frozen=True)
class BoxSplit:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]
    boxes: torch.Tensor  # float32 [N, 4], x1 y1 x2 y2 in [0, 1]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BoxData:
    train: BoxSplit
    test: BoxSplit
    classes: list[str]
    val: BoxSplit | None = None  # held out of train (`box_val_per_class`); None: no validation


# Draws which training images are held out as validation: a constant, not the run's seed, so
# every seed of a recipe validates on the same images and never trains on them.
VAL_DRAW_SEED = 0


def box_data_root(recipe) -> Path:
    """Where the recipe's images and boxes live, in CUB's layout (vipnb.data.registry)."""
    entry = dataset_entry(recipe)
    if not entry.boxes:
        raise VipnbError(f"recipe {recipe.name}: a box model trains on a dataset with boxes "
                         f"({', '.join(dataset_names(boxes=True))}), not {recipe.dataset!r}")
    root = entry.root(recipe)
    refuse_interrupted_build(root)
    return root


def load_box_data(recipe) -> BoxData:
    """Both splits decoded at `cache_size`, restricted to `class_subset` (relabelled 0..n-1 in
    the subset's order) when the recipe names one; with `box_val_per_class` N, N training
    images of each class become the validation split."""
    index = read_cub(box_data_root(recipe))
    subset = list(recipe.class_subset) or list(range(len(index.classes)))
    unknown = [c for c in subset if not 0 <= c < len(index.classes)]
    if unknown:
        raise VipnbError(f"recipe {recipe.name}: class_subset names classes {unknown}, but the "
                         f"data has {len(index.classes)} (0-based indices)")
    relabel = np.full(len(index.classes), -1)
    relabel[subset] = np.arange(len(subset))
    parts = {split: index.split(split) for split in ("train", "test")}
    parts = {split: part.subset(relabel[part.labels] >= 0) for split, part in parts.items()}
    if recipe.box_val_per_class:
        held_out = held_out_for_val(parts["train"].labels, recipe.box_val_per_class,
                                    index.classes, recipe.name)
        parts["val"] = parts["train"].subset(held_out)
        parts["train"] = parts["train"].subset(~held_out)
    splits = {}
    for split, part in parts.items():
        images, boxes = decode_cub(part, recipe.cache_size)
        labels = torch.from_numpy(relabel[part.labels]).long()
        splits[split] = BoxSplit(images, labels, boxes.float())
    return BoxData(splits["train"], splits["test"], [index.classes[c] for c in subset],
                   splits.get("val"))


def held_out_for_val(labels: np.ndarray, per_class: int, classes: list[str],
                     recipe_name: str) -> np.ndarray:
    """A boolean mask over training images (`labels` index `classes`): `per_class` of each
    class, at least one of each left to train on. Each class draws from its own generator, so
    its images are held out whatever `class_subset` keeps of the others."""
    held_out = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= per_class:
            raise VipnbError(f"recipe {recipe_name}: box_val_per_class={per_class} would hold "
                             f"out every training image of class {classes[label]} (it has "
                             f"{len(members)}); ask for fewer than {len(members)}")
        rng = np.random.default_rng([VAL_DRAW_SEED, int(label)])
        held_out[rng.choice(members, size=per_class, replace=False)] = True
    return held_out
