"""train_many: several runs at once in worker processes, dependencies first, each run once;
rescore_many likewise."""

from pathlib import Path

import numpy as np
import pytest
from conftest import write_recipe_file

from vipnb.engine import load_recipe
from vipnb.engine.parallel import (
    _run_when_ready,
    default_processes,
    dependency_graph,
    rescore_many,
    start_order,
    train_many,
)
from vipnb.engine.rescore import rescore, rescored_file
from vipnb.errors import VipnbError


def recipes(tree: Path, directory: Path):
    teacher = write_recipe_file(directory, "teacher", tree)
    student = write_recipe_file(directory, "student", tree, teacher=str(teacher),
                                loss="positive_class")
    plain = write_recipe_file(directory, "plain", tree, lr=0.05)
    return [load_recipe(student, "cpu", {"seed": s}) for s in (0, 1)] + [
        load_recipe(plain, "cpu"), load_recipe(teacher, "cpu")]


def test_each_run_once_with_the_runs_it_needs(tiny_tree, tmp_path):
    graph = dependency_graph(recipes(tiny_tree, tmp_path))
    # Two teacher runs (seeds 0 and 1, the second named by seed 1's student), the plain run.
    assert sorted(recipe.name for recipe, _ in graph.values()) == [
        "plain", "student", "student", "teacher", "teacher"]
    for recipe, needs in graph.values():
        assert needs == ({recipe.dependency("teacher").run_name} if recipe.teacher else set())


def test_runs_others_wait_on_start_first_then_the_costliest(tiny_tree, tmp_path):
    wanted = recipes(tiny_tree, tmp_path)
    wanted.append(load_recipe(write_recipe_file(tmp_path, "long", tiny_tree, epochs=3), "cpu"))
    order = [name.split("-")[0] for name in start_order(dependency_graph(wanted))]
    assert order == ["teacher", "teacher", "long", "student", "student", "plain"]


def test_two_processes_train_every_run_once(tiny_tree, tmp_path):
    wanted = recipes(tiny_tree, tmp_path)
    runs = train_many(wanted, processes=2, runs_root=tmp_path / "runs")
    assert [run.path.name for run in runs] == [r.run_name for r in wanted]
    assert all(run.finished for run in runs)
    # Two students, their two teachers (one of them also asked for directly), the plain run.
    assert len(list((tmp_path / "runs").iterdir())) == 5


def test_students_train_when_only_their_teachers_finished(tiny_tree, tmp_path):
    # An interrupted notebook: the teachers finished, the students did not.
    wanted = recipes(tiny_tree, tmp_path)
    students = [r for r in wanted if r.teacher]
    train_many([r.dependency("teacher") for r in students], processes=1,
               runs_root=tmp_path / "runs")
    runs = train_many(wanted, processes=2, runs_root=tmp_path / "runs")
    assert all(run.finished for run in runs)
    assert len(list((tmp_path / "runs").iterdir())) == 5


def test_one_process_on_gpu_profiles():
    assert default_processes("paper") == 1 and default_processes("smoke") == 1
    assert default_processes("cpu") >= 1


def test_runs_that_wait_on_each_other_are_refused(tiny_tree, tmp_path):
    (a,) = [r for r in recipes(tiny_tree, tmp_path) if r.name == "plain"]
    graph = {"a": (a, {"b"}), "b": (a, {"a"})}
    with pytest.raises(VipnbError, match="wait on each other: a, b"):
        _run_when_ready(graph, ["a", "b"], 2, start=lambda name: pytest.fail(name))


def test_rescore_many_in_two_processes_matches_one(tiny_tree, tmp_path):
    plain = load_recipe(write_recipe_file(tmp_path, "plain", tiny_tree, epochs=2), "cpu")
    runs = train_many([plain.replace(seed=s) for s in (0, 1)], runs_root=tmp_path / "runs")
    rescore_many(runs, "ten_crop", 16, limit=5, processes=2)
    files = [rescored_file(run, "ten_crop", 16, limit=5) for run in runs]
    parallel = [np.load(f)["logits"] for f in files]
    for f in files:
        f.unlink()
    rescore_many(runs, "ten_crop", 16, limit=5, processes=1)
    for f, logits in zip(files, parallel, strict=True):
        assert logits.shape == (5, 3)
        np.testing.assert_allclose(np.load(f)["logits"], logits, rtol=1e-4, atol=1e-5)


def test_rescore_many_scores_the_split_and_crop_it_is_given(tiny_tree, tmp_path):
    plain = load_recipe(write_recipe_file(tmp_path, "plain", tiny_tree, epochs=1), "cpu")
    runs = train_many([plain.replace(seed=s) for s in (0, 1)], runs_root=tmp_path / "runs")
    rescore_many(runs, "flip", 20, processes=2, split="val", crop_size=20)
    for run in runs:
        saved = np.load(rescored_file(run, "flip", 20, "val", crop_size=20))["logits"]
        assert not rescored_file(run, "flip", 20, "test", crop_size=20).exists()
        rescored_file(run, "flip", 20, "val", crop_size=20).unlink()
        direct = rescore(run, "flip", 20, "val", crop_size=20).logits
        np.testing.assert_allclose(saved, direct, rtol=1e-4, atol=1e-5)
