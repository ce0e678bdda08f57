"""Datasets by name, as timm's model registry: a recipe's `dataset` names one, and a paper
outside vipnb adds its own with `@register_dataset("name")` on a function that gives the
folder of a recipe's data (in the VIPriors layout; `boxes=True`: in CUB's layout, for box
tasks).

The built-in datasets resolve here; their builders are imported on first use, so that
checking a recipe's `dataset` (vipnb.engine.recipe) imports no builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vipnb.errors import VipnbError


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    root: Callable[[object], Path]  # recipe → its data folder (built on first use)
    boxes: bool  # CUB's layout with boxes (box tasks), else the VIPriors layout
    options: bool  # built from a recipe's `dataset_options`


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, boxes: bool = False, options: bool = False):
    """Register the decorated `root(recipe) -> Path` under `name`; `options`: it builds the
    data from the recipe's `dataset_options`."""
    def register(root: Callable[[object], Path]):
        if name in _DATASETS:
            raise VipnbError(f"a dataset named {name!r} is registered already; choose another "
                             "name")
        _DATASETS[name] = DatasetEntry(name, root, boxes, options)
        return root
    return register


def dataset_names(boxes: bool | None = None) -> tuple[str, ...]:
    """Every registered dataset, or those with (`True`) or without (`False`) boxes."""
    return tuple(name for name, entry in _DATASETS.items() if boxes in (None, entry.boxes))


def dataset_entry(recipe) -> DatasetEntry:
    if recipe.dataset not in _DATASETS:
        raise VipnbError(f"recipe {recipe.name}: dataset={recipe.dataset!r} is not one of "
                         f"{', '.join(_DATASETS)}; register it with "
                         "vipnb.data.registry.register_dataset")
    return _DATASETS[recipe.dataset]


def dataset_root(recipe) -> Path:
    """Where the recipe's data lives (a built-in dataset is built there on first use)."""
    entry = dataset_entry(recipe)
    if recipe.dataset_options and (not entry.options or recipe.data_root):
        where = (f"data_root={recipe.data_root} is a folder already built"
                 if recipe.data_root else f"dataset {recipe.dataset} is built without options")
        built = ", ".join(name for name, e in _DATASETS.items() if e.options)
        raise VipnbError(f"recipe {recipe.name}: dataset_options={recipe.dataset_options} are "
                         f"for building {built}, but {where}; drop dataset_options (or "
                         "data_root)")
    return entry.root(recipe)


def _given_root(recipe, what: str) -> Path:
    if not recipe.data_root:
        raise VipnbError(f"recipe {recipe.name}: dataset `{recipe.dataset}` needs `data_root`, "
                         f"{what}; pass -p data_root=DIR")
    return Path(recipe.data_root)


def _built_in_folder(recipe, folder: str) -> Path:
    """`data_root`, else `<data_dir>/<folder>`: the edge (CLI, notebooks) gives `data_dir`."""
    if recipe.data_root:
        return Path(recipe.data_root)
    if not recipe.data_dir:
        raise VipnbError(f"recipe {recipe.name}: dataset `{recipe.dataset}` is built under "
                         "`data_dir`, which is not given; pass -p data_dir=DIR (the CLI and the "
                         "notebooks pass $VIPNB_DATA or ./data) or -p data_root=DIR")
    return Path(recipe.data_dir) / folder


@register_dataset("fashion50")
def _fashion50(recipe) -> Path:
    from vipnb.data.fashion50 import build_fashion50

    return build_fashion50(_built_in_folder(recipe, "fashion50"))


@register_dataset("folder")
def _folder(recipe) -> Path:
    return _given_root(recipe, "the folder holding train/ val/ test/ (e.g. imagenet_50 from "
                               "`vipnb data vipriors`)")


@register_dataset("fashion_boxes", boxes=True, options=True)
def _fashion_boxes(recipe) -> Path:
    if recipe.data_root:
        return Path(recipe.data_root)
    from vipnb.data.fashion_boxes import build_fashion_boxes, check_options, folder_name

    options = check_options(recipe.dataset_options, f"recipe {recipe.name}: dataset_options")
    return build_fashion_boxes(_built_in_folder(recipe, folder_name(options)), **options)



@register_dataset("cub", boxes=True)
def _cub(recipe) -> Path:
    return _given_root(recipe, "the CUB_200_2011 folder (with images.txt)")
