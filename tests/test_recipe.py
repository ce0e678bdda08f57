import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import make_tree

from vipnb.engine.recipe import (
    CONCERNS,
    PROFILES,
    RECIPES_DIR,
    Recipe,
    find_recipe,
    from_dict,
    load_recipe,
    parse_overrides,
    read_recipe_file,
    register_recipe_folder,
)
from vipnb.errors import VipnbError


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def minimal(**base) -> dict:
    return {"name": "r", "base": {"epochs": 3, **base},
            "profiles": {"smoke": {"epochs": 1}, "cpu": {}, "paper": {"epochs": 90}}}


def test_profile_overrides_base_and_overrides_win(tmp_path: Path):
    path = write(tmp_path, minimal(lr=0.2))
    assert load_recipe(path, "smoke").epochs == 1
    assert load_recipe(path, "cpu").epochs == 3
    recipe = load_recipe(path, "paper", {"lr": "0.05"})
    assert (recipe.epochs, recipe.lr, recipe.profile) == (90, 0.05, "paper")


def test_unknown_key_lists_valid_keys(tmp_path: Path):
    path = write(tmp_path, minimal(learning_rate=0.1))
    with pytest.raises(VipnbError) as info:
        load_recipe(path, "cpu")
    message = str(info.value)
    assert "learning_rate" in message and "optimisation: epochs, batch_size" in message
    assert str(path) in message


def test_the_concerns_hold_every_key_once_in_the_recipes_order():
    assert [key for keys in CONCERNS.values() for key in keys] == [
        f.name for f in dataclasses.fields(Recipe)]


def test_a_recipe_reads_by_concern():
    recipe = load_recipe("moe_effnetb4_distill", "smoke")
    changed = recipe.grouped(changed_only=True)
    assert changed["loss"] == {"loss": "positive_class", "teacher": "moe_effnetb4"}
    assert changed["self-supervision"] == {} and changed["optimisation"]["epochs"] == 2
    assert recipe.grouped()["optimisation"]["lr"] == recipe.lr


def test_bad_values_name_the_key():
    with pytest.raises(VipnbError, match="`epochs`"):
        from_dict({"name": "x", "epochs": "ten"})
    with pytest.raises(VipnbError, match="optimizer='lamb' is not one of sgd, adamw"):
        from_dict({"name": "x", "optimizer": "lamb"})
    with pytest.raises(VipnbError, match="`channels_last`"):
        from_dict({"name": "x", "channels_last": "maybe"})


def test_missing_profile_and_unknown_profile(tmp_path: Path):
    document = minimal()
    del document["profiles"]["paper"]
    with pytest.raises(VipnbError, match="profiles paper missing"):
        load_recipe(write(tmp_path, document), "cpu")
    with pytest.raises(VipnbError, match="unknown profile 'gpu'"):
        load_recipe(write(tmp_path, minimal()), "gpu")


def test_hash_ignores_location_but_not_hyperparameters(tmp_path):
    """The same data in two places, read by other numbers of workers, names one run."""
    a, b = (from_dict({"name": "x", "dataset": "folder", "data_root": str(make_tree(tmp_path / f)),
                       "workers": w}) for f, w in (("somewhere", 4), ("elsewhere", 0)))
    assert a.run_name == b.run_name
    assert a.digest() != a.replace(lr=0.2).digest()
    assert a.digest() != a.replace(seed=1).digest()


def test_validation_falls_every_val_every_epochs_and_after_the_last():
    recipe = dataclasses.replace(Recipe(name="r"), epochs=7, val_every=3)
    assert [e for e in range(1, 8) if recipe.validates_after(e)] == [3, 6, 7]
    every_epoch = dataclasses.replace(recipe, val_every=1)
    assert all(map(every_epoch.validates_after, range(1, 8)))


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["epochs=5", "scale=[0.5, 1.0]", "amp=none"]) == {
        "epochs": 5, "scale": [0.5, 1.0], "amp": "none"}
    with pytest.raises(VipnbError, match="key=value"):
        parse_overrides(["epochs"])


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_resolves_for_every_profile(path: Path):
    assert read_recipe_file(path)["name"] == path.stem
    for profile in PROFILES:
        load_recipe(path, profile)


def test_extends_inherits_settings_and_description_and_refuses_a_circle(tmp_path):
    def write(name, **document):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **document}))
        return tmp_path / f"{name}.yaml"

    profiles = {"smoke": {"epochs": 1}, "cpu": {"epochs": 5}, "paper": {"epochs": 90}}
    parent = write("parent", description="the parent row", base={"lr": 0.2}, profiles=profiles)
    child = write("child", extends=str(parent), base={"drop_path_rate": 0.2},
                  profiles={"cpu": {"lr": 0.05}})
    recipe = load_recipe(child, "cpu")
    assert (recipe.name, recipe.description) == ("child", "the parent row")
    assert (recipe.epochs, recipe.lr, recipe.drop_path_rate) == (5, 0.05, 0.2)
    assert load_recipe(child, "paper").lr == 0.2
    own = write("own", extends=str(parent), description="its own words")
    assert load_recipe(own, "smoke").description == "its own words"
    write("a", extends=str(tmp_path / "b.yaml"))
    write("b", extends=str(tmp_path / "a.yaml"))
    with pytest.raises(VipnbError, match="circle"):
        load_recipe(tmp_path / "a.yaml", "cpu")


def test_shipped_recipes_sit_in_one_folder_per_paper():
    folders = {path.parent.name for path in RECIPES_DIR.rglob("*.yaml")}
    assert folders == {"vipriors_baseline", "moe_vipriors", "mtl_moe_cub", "vipf_dsknet",
                       "fusion_coverage"}
    assert not list(RECIPES_DIR.glob("*.yaml"))


def test_a_papers_recipe_folder_outside_vipnb_is_found_by_name(tmp_path, monkeypatch):
    import vipnb.engine.recipe as recipe_module

    monkeypatch.setattr(recipe_module, "_recipe_folders", [RECIPES_DIR])
    folder = tmp_path / "fifth_paper"
    folder.mkdir()
    (folder / "fifth_row.yaml").write_text(yaml.safe_dump(
        {"name": "fifth_row", "extends": "baseline_resnet", "base": {"epochs": 3}}))
    with pytest.raises(VipnbError, match="no recipe 'fifth_row'"):
        find_recipe("fifth_row")
    register_recipe_folder(folder)
    recipe = load_recipe("fifth_row", "cpu")
    assert (recipe.epochs, recipe.model) == (3, "resnet18")  # the rest from baseline_resnet

    (folder / "baseline_resnet.yaml").write_text(yaml.safe_dump({"name": "baseline_resnet"}))
    with pytest.raises(VipnbError, match="two recipes are named 'baseline_resnet'"):
        find_recipe("fifth_row")


def test_a_recipe_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(VipnbError, match="does not exist"):
        register_recipe_folder(tmp_path / "missing")
