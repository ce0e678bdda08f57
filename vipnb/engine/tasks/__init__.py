"""The kinds of training the one loop (`vipnb.engine.trainer`) runs, one module each."""

from __future__ import annotations

from vipnb.engine.recipe import Recipe
from vipnb.engine.tasks.base import Task
from vipnb.engine.tasks.classify import ClassifyTask
from vipnb.engine.tasks.moco import MocoTask
from vipnb.engine.tasks.mtl import MtlTask

__all__ = ["ClassifyTask", "MocoTask", "MtlTask", "Task", "task_class"]


def task_class(recipe: Recipe) -> type[Task]:
    if recipe.architecture == "mtl_moe":
        return MtlTask
    return MocoTask if recipe.stage == "moco" else ClassifyTask
