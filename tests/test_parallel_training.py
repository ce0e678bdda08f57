"""train_many: several runs at once in worker processes, dependencies first, each run once."""

from pathlib import Path

from conftest import write_recipe_file

from vipnb.engine import load_recipe
from vipnb.engine.parallel import default_processes, dependency_levels, train_many


def recipes(tree: Path, directory: Path):
    teacher = write_recipe_file(directory, "teacher", tree)
    student = write_recipe_file(directory, "student", tree, teacher=str(teacher),
                                loss="positive_class")
    plain = write_recipe_file(directory, "plain", tree, lr=0.05)
    return [load_recipe(student, "cpu", {"seed": s}) for s in (0, 1)] + [
        load_recipe(plain, "cpu"), load_recipe(teacher, "cpu")]


def test_dependencies_come_a_level_before_the_runs_that_need_them(tiny_tree, tmp_path):
    levels = dependency_levels(recipes(tiny_tree, tmp_path))
    names = [sorted(r.name for r in level) for level in levels]
    # Two teacher runs (seeds 0 and 1, the second named by seed 1's student), the plain run.
    assert names == [["plain", "teacher", "teacher"], ["student", "student"]]


def test_two_processes_train_every_run_once(tiny_tree, tmp_path):
    wanted = recipes(tiny_tree, tmp_path)
    runs = train_many(wanted, processes=2, runs_root=tmp_path / "runs")
    assert [run.path.name for run in runs] == [r.run_name for r in wanted]
    assert all(run.finished for run in runs)
    # Two students, their two teachers (one of them also asked for directly), the plain run.
    assert len(list((tmp_path / "runs").iterdir())) == 5


def test_one_process_on_gpu_profiles():
    assert default_processes("paper") == 1 and default_processes("smoke") == 1
    assert default_processes("cpu") >= 1
