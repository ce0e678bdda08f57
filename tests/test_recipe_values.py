"""Recipe values that would otherwise be taken silently in another sense, or fail only after
training: whole numbers, booleans, empty values and names with a fixed list of choices."""

from pathlib import Path

import pytest
import yaml

from vipnb.engine.recipe import from_dict, load_recipe
from vipnb.errors import VipnbError


def recipe(**values):
    return from_dict({"name": "r", **values})


@pytest.mark.parametrize("key, value", [("epochs", 2.5), ("batch_size", "6.5"), ("seed", 0.1),
                                        ("class_subset", [1, 2.5])])
def test_a_fraction_for_a_whole_number_is_refused(key, value):
    with pytest.raises(VipnbError, match=rf"`{key}`: expected (a )?whole number"):
        recipe(**{key: value})


def test_whole_numbers_written_as_floats_or_text_become_ints():
    made = recipe(epochs=2.0, batch_size="8", class_subset=[1.0, 2], architecture="mtl_moe",
                  experts=2)
    assert (made.epochs, made.batch_size, made.class_subset) == (2, 8, (1, 2))
    assert all(type(v) is int for v in (made.epochs, made.batch_size, *made.class_subset))


@pytest.mark.parametrize("key, value", [("epochs", True), ("hflip", True), ("lr", False),
                                        ("coverage_classes", [True]), ("scale", [True, 1.0])])
def test_true_or_false_for_a_number_is_refused(key, value):
    with pytest.raises(VipnbError, match=rf"`{key}`: expected (a )?numbers?, not true/false"):
        recipe(**{key: value})


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("false", False),
                                             ("False", False), ("0", False), ("true", True),
                                             ("1", True)])
def test_booleans_read_from_text_keep_their_sense(value, expected):
    assert recipe(channels_last=value).channels_last is expected


@pytest.mark.parametrize("value", ["no thanks", 1, 0, 2.0, "off"])
def test_a_boolean_key_refuses_anything_but_true_or_false(value):
    with pytest.raises(VipnbError, match="`compile`: expected true or false"):
        recipe(compile=value)


@pytest.mark.parametrize("key", ["epochs", "lr", "compile", "scale", "model_kwargs"])
def test_an_empty_value_of_a_number_or_switch_is_refused(key):
    with pytest.raises(VipnbError, match=rf"`{key}`: the value is empty"):
        recipe(**{key: None})


def test_an_empty_text_value_is_the_empty_text():
    assert recipe(teacher=None, global_pool=None).teacher == ""


def _recipe_file(tmp_path: Path, **base) -> Path:
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({"name": "typo", "base": base,
                                    "profiles": {"smoke": {}, "cpu": {}, "paper": {}}}))
    return path


def test_an_unknown_loss_names_the_file_key_value_and_the_losses(tmp_path: Path):
    path = _recipe_file(tmp_path, loss="focal")
    with pytest.raises(VipnbError) as caught:
        load_recipe(path, "cpu")
    message = str(caught.value)
    assert str(path) in message and "loss='focal'" in message
    for name in ("soft_ce", "positive_class", "taylor_ce", "bi_tempered", "dsb_focal"):
        assert name in message


@pytest.mark.parametrize("view", ["flop", "ten_crops", "multi_scale:", "multi_scale:a,b",
                                  "center,flip"])
def test_unknown_eval_views_are_refused_at_load_not_after_training(tmp_path: Path, view):
    path = _recipe_file(tmp_path, eval_views=view)
    with pytest.raises(VipnbError, match=rf"{path}.*eval_views='{view}'"):
        load_recipe(path, "cpu")


@pytest.mark.parametrize("view", ["center", "flip", "ten_crop", "paper_tta",
                                  "multi_scale:16,24"])
def test_known_eval_views_load(view):
    assert recipe(eval_views=view).eval_views == view


@pytest.mark.parametrize("key, value", [("optimizer", "lamb"), ("sched", "linear"),
                                        ("amp", "fp16"), ("global_pool", "mean"),
                                        ("stage", "simclr"), ("init", "kaiming")])
def test_every_key_with_choices_refuses_an_unknown_one(key, value):
    with pytest.raises(VipnbError, match=rf"{key}='{value}' is not one of"):
        recipe(**{key: value})


def test_an_unknown_model_names_the_recipe_and_how_to_list_the_models():
    from vipnb.engine.build import build_model

    with pytest.raises(VipnbError, match=r"r: model='resnet10tt' is not a timm model.*list_models"):
        build_model(recipe(model="resnet10tt"), 3)
