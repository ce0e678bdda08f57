

import pytest
from conftest import write_recipe_file

from vipnb.cli import main
from vipnb.errors import VipnbError
from vipnb.eval.submission import score_submission
from vipnb.run import run_notebook


def test_train_then_evaluate_writes_a_scorable_submission(tiny_tree, tmp_path, capsys):
    recipe = write_recipe_file(tmp_path, "tiny", tiny_tree)
    assert main(["train", str(recipe), "--profile", "smoke", "--runs", str(tmp_path / "runs")]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    submission = tmp_path / "sub.csv"
    assert main(["evaluate", str(run_dir), "--submission", str(submission)]) == 0
    assert "test top-1" in capsys.readouterr().out
    assert submission.read_text().splitlines()[0] == "Image IDs,Predictions"
    score = score_submission(tiny_tree / "test" / "labels.csv", submission)
    assert score.matched == 9 and score.missing == 0


def test_user_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["train", "no_such_recipe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vipnb: error: no recipe 'no_such_recipe'") and "Traceback" not in err
    assert main(["train", "baseline_resnet", "-p", "learning_rate=1"]) == 2
    assert "unknown recipe key(s) learning_rate" in capsys.readouterr().err


def test_failing_notebook_cell_is_reported_by_number_and_line(tmp_path):
    notebook = tmp_path / "99_fails.py"
    notebook.write_text(
        "# %% tags=['parameters']\nprofile = 'smoke'\nout_dir = None\n\n"
        "# %%\nx = 1\ny = 2\nz = x / 0\n"
    )
    with pytest.raises(VipnbError) as info:
        run_notebook(str(notebook), "smoke", reports_root=tmp_path / "reports", log_output=False)
    message = str(info.value)
    assert "line 3: z = x / 0" in message and "ZeroDivisionError" in message
    assert "99_fails.ipynb" in message and not (tmp_path / "reports" / "99_fails").exists()


def test_an_unwritable_path_is_one_line_naming_it(tiny_tree, tmp_path, capsys):
    recipe = write_recipe_file(tmp_path, "tiny", tiny_tree)
    assert main(["train", str(recipe), "--profile", "smoke", "--runs", str(tmp_path / "runs")]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    (tmp_path / "a_file").write_text("not a folder")
    target = tmp_path / "a_file" / "sub.csv"
    assert main(["evaluate", str(run_dir), "--submission", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vipnb: error: ") and "a_file" in err and "Traceback" not in err


def test_recipe_shows_what_a_recipe_changes_by_concern(capsys):
    import yaml

    assert main(["recipe", "moe_effnetb4_distill", "--profile", "smoke", "-p", "lr=0.3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["loss"] == {"loss": "positive_class", "teacher": "moe_effnetb4"}
    assert shown["optimisation"]["lr"] == 0.3 and "self-supervision" not in shown
    assert main(["recipe", "baseline_resnet", "-p", "decay_rate=0.5"]) == 2
    assert "decay_rate=0.5 is set, but only sched: step reads it" in capsys.readouterr().err
