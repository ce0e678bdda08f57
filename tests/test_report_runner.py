"""`vipnb run` keeps reports safe: one place per profile, a report folder replaced only by a
run that succeeded, only files its own previous run listed removed, unknown parameters
refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vipnb import paths
from vipnb.cli import main
from vipnb.errors import VipnbError
from vipnb.run import PROVENANCE, run_notebook

PARAMETERS = "# %% tags=['parameters']\nprofile = 'smoke'\nout_dir = None\nseeds = [0]\n\n"


def notebook(tmp_path, body: str, name: str = "97_writes"):
    path = tmp_path / f"{name}.py"
    path.write_text(PARAMETERS + "# %%\nfrom pathlib import Path\nout = Path(out_dir)\n" + body)
    return path


WRITES_TABLE = "(out / 'table.md').write_text('fresh ' + profile)\n"


def previous_report(folder, profile: str, files: dict[str, str],
                    notebook: str = "97_writes") -> None:
    """A report folder as an earlier run left it: its files and their manifest."""
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    (folder / PROVENANCE).write_text(json.dumps({"notebook": notebook, "profile": profile,
                                                 "files": [*files, PROVENANCE]}))


def test_each_profile_has_its_own_reports_root(monkeypatch):
    monkeypatch.delenv("VIPNB_REPORTS", raising=False)
    roots = {profile: paths.reports_root(profile) for profile in ("smoke", "cpu", "paper")}
    assert roots["cpu"] == paths.project_root() / "reports"
    assert len(set(roots.values())) == 3 and paths.project_root() / "build" in roots["smoke"].parents


def test_a_smoke_run_refuses_to_replace_a_cpu_report(tmp_path):
    folder = tmp_path / "reports" / "97_writes"
    previous_report(folder, "cpu", {"table.md": "cpu numbers"})
    with pytest.raises(VipnbError, match="holds the report of 97_writes at the `cpu` profile"):
        run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke",
                     reports_root=tmp_path / "reports", log_output=False)
    assert (folder / "table.md").read_text() == "cpu numbers"
    run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke",
                 reports_root=tmp_path / "reports", log_output=False, overwrite=True)
    assert (folder / "table.md").read_text() == "fresh smoke"
    assert json.loads((folder / PROVENANCE).read_text())["profile"] == "smoke"


def test_files_no_run_listed_are_never_replaced_without_overwrite(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "table.md").write_text("my own notes")
    with pytest.raises(VipnbError, match="no vipnb run listed"):
        run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke",
                     parameters={"out_dir": str(folder)}, log_output=False)
    assert (folder / "table.md").read_text() == "my own notes"


def test_only_files_of_the_previous_run_are_removed(tmp_path):
    folder = tmp_path / "reports" / "97_writes"
    previous_report(folder, "smoke", {"table.md": "old", "plot_of_an_old_best.png": "old"})
    (folder / "notes_by_the_user.txt").write_text("keep me")
    run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke",
                 reports_root=tmp_path / "reports", log_output=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "97_writes.html", "97_writes.ipynb", "notes_by_the_user.txt", PROVENANCE, "table.md"]
    manifest = json.loads((folder / PROVENANCE).read_text())
    assert "table.md" in manifest["files"] and "notes_by_the_user.txt" not in manifest["files"]
    assert manifest["command"].startswith("vipnb run 97_writes --profile smoke")


def test_out_dir_receives_the_whole_report_and_nothing_else_is_touched(tmp_path):
    reports = tmp_path / "reports"
    previous_report(reports / "97_writes", "smoke", {"table.md": "committed"})
    target = tmp_path / "elsewhere"
    run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke", reports_root=reports,
                 parameters={"out_dir": str(target)}, log_output=False)
    assert {"97_writes.ipynb", "97_writes.html", "table.md", PROVENANCE} <= {
        p.name for p in target.iterdir()}
    assert (reports / "97_writes" / "table.md").read_text() == "committed"
    assert not (reports / "index.md").exists()


def test_a_failing_cell_leaves_the_report_folder_as_it_was(tmp_path):
    folder = tmp_path / "reports" / "97_writes"
    previous_report(folder, "smoke", {"table.md": "old"})
    body = WRITES_TABLE + "\n# %%\nraise RuntimeError('half way')\n"
    with pytest.raises(VipnbError, match="half way"):
        run_notebook(str(notebook(tmp_path, body)), "smoke", reports_root=tmp_path / "reports",
                     log_output=False)
    assert (folder / "table.md").read_text() == "old"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["97_writes"]  # no staging left


def test_unknown_parameter_is_an_error_that_lists_the_parameters(tmp_path, capsys):
    source = notebook(tmp_path, WRITES_TABLE)
    with pytest.raises(VipnbError, match="no parameter seed; its parameters are: profile, "
                                         "out_dir, seeds"):
        run_notebook(str(source), "smoke", parameters={"seed": 1},
                     reports_root=tmp_path / "reports", log_output=False)
    assert main(["run", str(source), "--profile", "smoke", "-p", "seed=1"]) == 2
    assert "no parameter seed" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_sigterm_during_a_run_leaves_the_report_folder_as_it_was(tmp_path):
    folder = tmp_path / "reports" / "97_writes"
    previous_report(folder, "smoke", {"table.md": "old"})
    started = tmp_path / "started"
    body = (WRITES_TABLE + f"Path({str(started)!r}).write_text('x')\n\n"
            "# %%\nimport time\ntime.sleep(120)\n")
    source = notebook(tmp_path, body)
    env = {**os.environ, "VIPNB_REPORTS": str(tmp_path / "reports")}
    process = subprocess.Popen([sys.executable, "-m", "vipnb.cli", "run", str(source),
                                "--profile", "smoke"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not started.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert started.exists(), "the notebook never started"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err
    assert (folder / "table.md").read_text() == "old"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["97_writes"]


def test_vipnb_run_shows_which_notebook_and_the_cells_output(tmp_path, capsys):
    source = notebook(tmp_path, WRITES_TABLE + "print('epoch 3 of 5')\n")
    assert main(["run", str(source), "--profile", "smoke", "-p",
                 f"out_dir={tmp_path / 'out'}"]) == 0
    out = capsys.readouterr().out
    assert "notebook 1 of 1: " in out and "epoch 3 of 5" in out


@pytest.mark.skipif(os.getuid() != 0, reason="JupyterLab refuses root only when run as root")
def test_make_lab_starts_as_root():
    plan = subprocess.run(["make", "-n", "lab"], cwd=paths.project_root(), capture_output=True,
                          text=True, check=True).stdout
    assert "jupyter lab notebooks/ --allow-root" in plan


def test_several_notebooks_with_one_out_dir_each_get_a_folder_in_it(tmp_path):
    sources = [notebook(tmp_path, WRITES_TABLE, name) for name in ("95_one", "96_two")]
    target = tmp_path / "out"
    assert main(["run", *map(str, sources), "--profile", "smoke", "-p",
                 f"out_dir={target}"]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["95_one", "96_two"]
    assert (target / "95_one" / "table.md").read_text() == "fresh smoke"


def test_another_notebooks_report_folder_is_refused(tmp_path):
    folder = tmp_path / "shared"
    previous_report(folder, "smoke", {"table.md": "the other notebook's"}, notebook="01_other")
    with pytest.raises(VipnbError, match="holds the report of 01_other"):
        run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke",
                     parameters={"out_dir": str(folder)}, log_output=False)
    assert (folder / "table.md").read_text() == "the other notebook's"


def test_a_manifest_naming_files_outside_its_folder_is_refused(tmp_path):
    folder = tmp_path / "reports" / "97_writes"
    previous_report(folder, "smoke", {"table.md": "old"})
    victim = tmp_path / "precious.txt"
    victim.write_text("not a report")
    manifest = json.loads((folder / PROVENANCE).read_text())
    (folder / PROVENANCE).write_text(json.dumps({**manifest, "files": ["../../precious.txt"]}))
    with pytest.raises(VipnbError, match="lists files outside its folder"):
        run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke",
                     reports_root=tmp_path / "reports", log_output=False)
    assert victim.read_text() == "not a report"


def test_a_staging_folder_left_by_a_killed_run_is_removed(tmp_path):
    reports = tmp_path / "reports"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = reports / f".97_writes.running-{dead}-abc123"
    left.mkdir(parents=True)
    (left / "table.md").write_text("half")
    alive = reports / f".97_writes.running-{os.getpid()}-def456"  # a live run's: kept
    alive.mkdir()
    run_notebook(str(notebook(tmp_path, WRITES_TABLE)), "smoke", reports_root=reports,
                 log_output=False)
    assert not left.exists() and alive.exists()


def test_the_command_line_reaches_the_notebook_as_a_parameter(tmp_path, monkeypatch):
    monkeypatch.delenv("VIPNB_COMMAND", raising=False)
    source = notebook(tmp_path, "(out / 'command.txt').write_text(command)\n")
    assert main(["run", str(source), "--profile", "smoke", "-p", f"out_dir={tmp_path / 'out'}"]) == 0
    written = (tmp_path / "out" / "command.txt").read_text()
    assert written.startswith("vipnb run ") and "--profile smoke" in written
    assert "VIPNB_COMMAND" not in os.environ and "VIPNB_TEXT_PROGRESS" not in os.environ
    with pytest.raises(VipnbError, match="`command` is filled in by vipnb run"):
        run_notebook(str(source), "smoke", parameters={"command": "forged"},
                     reports_root=tmp_path / "reports", log_output=False)
