"""Tasks and datasets register themselves by name: the recipe's `architecture` picks a task, a
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


def test_datasets_register_by_name_and_say_their_layout(tmp_path, monkeypatch):
    import vipnb.data.registry as datasets

    monkeypatch.setattr(datasets, "_DATASETS", dict(datasets._DATASETS))
    assert datasets.dataset_names(boxes=True) == ("fashion_boxes", "cub")
    with pytest.raises(VipnbError, match="dataset='tiles' is not one of fashion50, folder"):
        from_dict({"name": "r", "dataset": "tiles"}, source="r.yaml")

    @datasets.register_dataset("tiles")
    def tiles(recipe):
        return tmp_path / "tiles"

    recipe = from_dict({"name": "r", "dataset": "tiles"})
    assert datasets.dataset_root(recipe) == tmp_path / "tiles"
    with pytest.raises(VipnbError, match="a box model trains on a dataset with boxes "
                                         r"\(fashion_boxes, cub\), not 'tiles'"):
        from vipnb.data.box_data import box_data_root

        box_data_root(recipe)
    with pytest.raises(VipnbError, match="dataset `cub` holds boxes"):
        from vipnb.data.sources import dataset_root

        dataset_root(from_dict({"name": "r", "dataset": "cub", "data_root": str(tmp_path)}))


def test_a_built_in_dataset_is_built_where_the_edge_says(tmp_path):
    """Below the edge nothing looks up the data folder: the recipe carries it (`data_dir`), a
    dependency inherits it, and without it the error says what to pass."""
    from vipnb.data.registry import dataset_root

    with pytest.raises(VipnbError, match=r"built under `data_dir`.*-p data_dir=DIR"):
        dataset_root(from_dict({"name": "r", "dataset": "fashion_boxes"}))
    given = from_dict({"name": "r", "dataset": "folder", "data_root": str(tmp_path / "mine")})
    assert dataset_root(given) == tmp_path / "mine"
    student = from_dict({"name": "s", "teacher": "moe_regnety160", "data_dir": str(tmp_path)})
    assert student.dependency("teacher").data_dir == str(tmp_path)
    assert student.replace(data_dir="/elsewhere").digest() == student.digest()  # where, not what


def test_fashion_boxes_options_build_their_own_folder_and_name_their_runs(tmp_path,
                                                                          monkeypatch):
    from vipnb.data.registry import dataset_root

    built = {}
    monkeypatch.setattr("vipnb.data.fashion_boxes.build_fashion_boxes",
                        lambda out, **options: built.update(options) or out)
    plain = from_dict({"name": "r", "dataset": "fashion_boxes", "data_dir": str(tmp_path)})
    assert dataset_root(plain) == tmp_path / "fashion_boxes" and built["item_side"] == [24, 48]
    easier = plain.replace(dataset_options={"item_side": [32, 56], "distractors": [0, 1]})
    assert dataset_root(easier) == tmp_path / "fashion_boxes-distractors0-1-item_side32-56"
    assert built["item_side"] == [32, 56] and built["distractors"] == [0, 1]
    assert easier.digest() != plain.digest()
    with pytest.raises(VipnbError, match=r"recipe r: dataset_options: fashion-boxes has no "
                                         r"build option size"):
        dataset_root(plain.replace(dataset_options={"size": 3}))


@pytest.mark.parametrize("values, message", [
    ({"dataset": "fashion50"}, "dataset fashion50 is built without options"),
    ({"dataset": "fashion_boxes", "data_root": "/mine"}, "data_root=/mine is a folder already"),
])
def test_dataset_options_are_refused_where_nothing_is_built_with_them(values, message):
    from vipnb.data.registry import dataset_root

    recipe = from_dict({"name": "r", "data_dir": "/data", "dataset_options": {"canvas": 32},
                        **values})
    with pytest.raises(VipnbError, match=rf"recipe r: dataset_options=\{{'canvas': 32\}} .*"
                                         rf"{message}.*drop dataset_options"):
        dataset_root(recipe)
