"""The committed reports are data and match main: every CSV reads with a bare
`pandas.read_csv`, every notebook's report lists its runs, and main names those runs as the
report does (otherwise the code changed the results and the report must be regenerated with
`make reproduce NOTEBOOKS=<nn>`)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import make_tree, write_recipe_file

from vipnb import paths
from vipnb.engine import load_recipe, train
from vipnb.report.runs_table import recomputed_run_name
from vipnb.run import PROVENANCE, list_notebooks

REPORTS = paths.project_root() / "reports"
CSV_FILES = sorted(REPORTS.rglob("*.csv"))


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda p: str(p.relative_to(REPORTS)))
def test_every_report_csv_reads_with_plain_pandas(path):
    frame = pd.read_csv(path)
    assert len(frame.columns) >= 2 and not any(str(c).startswith("#") for c in frame.columns)


@pytest.mark.parametrize("notebook", list_notebooks())
def test_every_notebook_report_lists_its_runs_and_provenance(notebook):
    folder = REPORTS / notebook
    provenance = json.loads((folder / PROVENANCE).read_text())
    assert provenance["profile"] == "cpu" and "runs.csv" in provenance["files"]
    assert set(provenance["files"]) == {p.relative_to(folder).as_posix()
                                        for p in folder.rglob("*") if p.is_file()}, (
        f"{folder} holds files its run did not write, or lost some")


@pytest.mark.parametrize("notebook", list_notebooks())
def test_main_names_the_runs_of_every_committed_report_alike(notebook):
    runs = pd.read_csv(REPORTS / notebook / "runs.csv", keep_default_na=False)
    assert len(runs), f"{notebook}: runs.csv lists no runs"
    stale = [row["run"] for row in runs.to_dict("records")
             if recomputed_run_name(row, paths.data_root()) != row["run"]]
    assert not stale, (f"reports/{notebook} is stale: main names {len(stale)} of its "
                       f"{len(runs)} runs differently (e.g. {stale[0]}); regenerate it with "
                       f"`make reproduce NOTEBOOKS={notebook[:2]}`")


def test_a_run_trained_twice_in_fresh_folders_gives_identical_logits(tmp_path):
    file = write_recipe_file(tmp_path, "tiny", make_tree(tmp_path / "tree"), epochs=2)
    first, second = (train(load_recipe(file, "smoke"), runs_root=tmp_path / folder,
                           progress=False) for folder in ("a", "b"))
    for split in ("val", "test"):
        assert (first.logits(split).logits == second.logits(split).logits).all()
