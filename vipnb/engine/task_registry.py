"""What trains each `architecture` a recipe may name, as timm's model registry: a paper
outside vipnb registers its own `Task` subclass with `register_task("name")`.

The built-in tasks are named by module path and imported when first used, so that checking a
recipe's `architecture` (vipnb.engine.recipe) does not import the tasks, which import it."""

from __future__ import annotations

import importlib

from vipnb.errors import VipnbError

_TASKS: dict[str, str | type] = {
    "timm": "vipnb.engine.tasks.classify:ClassifyTask",  # a timm model, or experts of one
    "mtl_moe": "vipnb.engine.tasks.mtl:MtlTask",  # a sparse MoE with a box task
}


def register_task(architecture: str):
    """Register the decorated `Task` subclass as what trains `architecture: <name>`."""
    def register(task: type) -> type:
        if architecture in _TASKS:
            raise VipnbError(f"architecture {architecture!r} is registered already; choose "
                             "another name")
        _TASKS[architecture] = task
        return task
    return register


def architecture_names() -> tuple[str, ...]:
    return tuple(_TASKS)


def task_for(architecture: str) -> type:
    """The task class registered for `architecture`."""
    if architecture not in _TASKS:
        raise VipnbError(f"architecture={architecture!r} is not one of "
                         f"{', '.join(_TASKS)}; a new one registers its task with "
                         "vipnb.engine.task_registry.register_task")
    task = _TASKS[architecture]
    if isinstance(task, str):
        module, name = task.split(":")
        task = _TASKS[architecture] = getattr(importlib.import_module(module), name)
    return task
