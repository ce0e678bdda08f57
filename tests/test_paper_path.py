"""What stopped or misled a first `paper` run, on tiny data: overrides reach the runs a recipe
starts from (and the command says what it trains first), `epochs` is the number of epochs
trained, schedule lengths that do not fit are refused, settings that only change how a run is
computed do not rename it, and every notebook takes recipe overrides."""

from __future__ import annotations

import json

import jupytext
import pytest
from conftest import DATA_DIR, write_recipe_file

from vipnb import cli
from vipnb.engine import load_recipe, train
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.run import find_notebook, list_notebooks, notebook_parameters


def test_overrides_reach_the_teacher_but_not_the_students_own_model_and_loss():
    student = load_recipe("moe_effnetb4_distill", "smoke",
                          {"epochs": 1, "input_size": 24, "drop_rate": 0.3,
                           "distill_label_weight": 0.2, "data_dir": str(DATA_DIR)})
    teacher = student.dependency("teacher")
    assert (teacher.name, teacher.epochs, teacher.input_size) == ("moe_effnetb4", 1, 24)
    shipped_teacher = load_recipe("moe_effnetb4", "smoke")
    assert teacher.drop_rate == shipped_teacher.drop_rate != 0.3  # the student's model
    assert teacher.data_dir == str(DATA_DIR)
    assert student.replace(epochs=2).dependency("teacher").epochs == 1  # overrides, not edits


def test_a_flowing_key_the_dependency_does_not_read_is_not_refused_there(tmp_path, tiny_tree):
    teacher = write_recipe_file(tmp_path, "teacher", tiny_tree)
    student = write_recipe_file(tmp_path, "student", tiny_tree, teacher=str(teacher),
                                epochs=3, warmup_epochs=1)
    recipe = load_recipe(student, "smoke", {"warmup_lr": 1e-3})
    assert recipe.dependency("teacher").warmup_lr == 1e-3  # unread there, and harmless
    with pytest.raises(VipnbError, match="warmup_lr=0.001 is set, but only warmup_epochs > 0"):
        load_recipe(teacher, "smoke", {"warmup_lr": 1e-3})  # given to it directly: refused


def test_train_says_which_dependency_it_trains_first_and_how(tmp_path, tiny_tree, capsys):
    teacher = write_recipe_file(tmp_path, "teacher", tiny_tree)
    student = write_recipe_file(tmp_path, "student", tiny_tree, teacher=str(teacher))
    train(load_recipe(student, "smoke", {"epochs": 2}), runs_root=tmp_path / "runs")
    said = capsys.readouterr().out
    assert "student: its teacher teacher trains first: 2 epochs at 16 px, batch 6" in said


def test_epochs_are_the_epochs_trained_cooldown_included(tmp_path, tiny_tree):
    recipe = load_recipe(write_recipe_file(tmp_path, "cool", tiny_tree, epochs=4,
                                           cooldown_epochs=1, min_lr=1e-4), "smoke")
    run = train(recipe, runs_root=tmp_path / "runs", progress=False)
    lrs = [json.loads(line)["lr"] for line in run.metrics_file.read_text().splitlines()]
    assert run.summary()["epochs"] == 4 and len(lrs) == 4
    assert lrs[0] > lrs[1] > lrs[-1] == pytest.approx(1e-4)  # cosine, then cool-down at min_lr


@pytest.mark.parametrize("settings, message", [
    ({"epochs": 1, "warmup_epochs": 25}, r"warmup_epochs=25 \+ cooldown_epochs=0 leave no epoch"),
    ({"epochs": 10, "cooldown_epochs": 10}, "cooldown_epochs=10 is not shorter than epochs=10"),
    ({"epochs": 4, "warmup_epochs": 2, "cooldown_epochs": 2}, "leave no epoch of the schedule"),
    ({"epochs": 5, "mixup_alpha": 0.2, "mixup_off_epochs": 5},
     "mixup_off_epochs=5 switch Mixup/CutMix off for all of epochs=5"),
])
def test_schedule_lengths_that_do_not_fit_the_epochs_are_refused(settings, message):
    with pytest.raises(VipnbError, match=message):
        load_recipe("baseline_resnet", "smoke", settings)


def test_a_shortened_paper_recipe_must_shorten_its_warm_up_too():
    with pytest.raises(VipnbError, match=r"override of .*warmup_epochs=\d+ \+ cooldown_epochs"):
        load_recipe("moe_rs_sd50", "paper", {"epochs": 1})
    assert load_recipe("moe_rs_sd50", "paper", {"epochs": 2, "warmup_epochs": 0,
                                                "cooldown_epochs": 1,
                                                "mixup_off_epochs": 0}).total_epochs == 2


def test_how_a_run_is_computed_does_not_rename_it():
    recipe = load_recipe("baseline_resnet", "smoke", {"data_dir": str(DATA_DIR)})
    assert recipe.replace(accum_steps=4).run_name == recipe.run_name
    assert recipe.replace(eval_batch_size=100).run_name == recipe.run_name
    assert recipe.replace(lr=0.2).run_name != recipe.run_name


@pytest.mark.parametrize("notebook", list_notebooks())
def test_every_notebook_takes_recipe_overrides(notebook):
    assert "recipe_overrides" in notebook_parameters(jupytext.read(find_notebook(notebook)))


def test_recipe_overrides_given_to_vipnb_run_reach_the_runs_the_notebook_trains(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("VIPNB_RUNS", str(tmp_path / "runs"))
    assert cli.main(["run", "00", "--profile", "smoke", "-p", "seeds=[0]",
                     "-p", 'recipe_overrides={"epochs": 1, "accum_steps": 2}',
                     "-p", f"out_dir={tmp_path / 'report'}"]) == 0
    runs = [RunDir(path) for path in (tmp_path / "runs").iterdir()]
    assert len(runs) == 1 and runs[0].summary()["epochs"] == 1 != load_recipe(
        "baseline_resnet", "smoke").epochs
    assert (runs[0].recipe.epochs, runs[0].recipe.accum_steps) == (1, 2)


def test_fusion_coverage_trains_on_train_and_val_with_a_new_validation_split():
    """§III.C: "We fused the training and validation sets to train a single model, and at the
    same time extracted a new validation set" — from the imagenet_50 folder as it is built,
    and from fashion50 at cpu (notebook 04's analogue does it too); smoke keeps the splits."""
    from vipnb.engine.recipe import recipe_files

    rows = [name for name in recipe_files() if name.startswith("fc_")]
    assert len(rows) == 28
    assert {load_recipe(name, "paper").val_into_train for name in rows} == {0.8}
    assert {load_recipe(name, "cpu").val_into_train for name in rows} == {0.8}
    assert {load_recipe(name, "smoke").val_into_train for name in rows} == {0.0}
