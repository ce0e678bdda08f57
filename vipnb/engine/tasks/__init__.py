"""The kinds of training the one loop (`vipnb.engine.trainer`) runs, one module each, found by
the recipe's `architecture` in `vipnb.engine.task_registry`: `timm` (a timm model, or a
mixture of experts of one; its `stage: moco` pretrains it with MoCo-v2) and `mtl_moe`."""

from __future__ import annotations

from vipnb.engine.recipe import Recipe
from vipnb.engine.task_registry import register_task, task_for
from vipnb.engine.tasks.base import Task
from vipnb.engine.tasks.classify import ClassifyTask
from vipnb.engine.tasks.moco import MocoTask
from vipnb.engine.tasks.mtl import MtlTask
from vipnb.errors import VipnbError

__all__ = ["ClassifyTask", "MocoTask", "MtlTask", "Task", "register_task", "task_class"]


def task_class(recipe: Recipe) -> type[Task]:
    if recipe.stage == "moco":
        if recipe.architecture != "timm":
            raise VipnbError(f"{recipe.name}: `stage: moco` pretrains a timm model; set "
                             "`architecture: timm` or leave out the stage")
        return MocoTask
    return task_for(recipe.architecture)
