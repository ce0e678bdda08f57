"""Tasks register themselves by architecture name: the recipe's `architecture` picks one, a
name nobody registered is refused when the recipe loads, and a paper outside vipnb adds its
own without editing the engine."""

from __future__ import annotations

import pytest

import vipnb.engine.task_registry as registry
from vipnb.engine.recipe import from_dict
from vipnb.engine.tasks import ClassifyTask, MocoTask, MtlTask, register_task, task_class
from vipnb.errors import VipnbError


def test_the_shipped_architectures_pick_their_tasks():
    assert task_class(from_dict({"name": "r"})) is ClassifyTask
    assert task_class(from_dict({"name": "r", "stage": "moco"})) is MocoTask
    mtl = from_dict({"name": "r", "architecture": "mtl_moe", "experts": 3})
    assert task_class(mtl) is MtlTask


def test_an_unregistered_architecture_is_refused_at_load():
    with pytest.raises(VipnbError, match="architecture='capsules' is not one of timm, mtl_moe"):
        from_dict({"name": "r", "architecture": "capsules"}, source="r.yaml")


def test_moco_pretrains_only_a_timm_model():
    with pytest.raises(VipnbError, match="`stage: moco` pretrains a timm model"):
        task_class(from_dict({"name": "r", "architecture": "mtl_moe", "experts": 3,
                              "stage": "moco"}))


def test_a_new_architecture_registers_its_task(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))

    @register_task("capsules")
    class CapsuleTask(ClassifyTask):
        pass

    recipe = from_dict({"name": "r", "architecture": "capsules"})
    assert task_class(recipe) is CapsuleTask
    with pytest.raises(VipnbError, match="'capsules' is registered already"):
        register_task("capsules")(ClassifyTask)
