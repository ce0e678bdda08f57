"""Every notebook is a .py/.ipynb pair in step, with the parameters cell the runner needs."""

import re
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_config

from vipnb.notebooks import pair_drift
from vipnb.run import list_notebooks

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("name", list_notebooks())
def test_pair_in_step(name: str):
    assert pair_drift(NOTEBOOKS / f"{name}.py") == []


@pytest.mark.parametrize("name", list_notebooks())
def test_jupytext_sync_would_leave_the_pair_as_it_is(name: str):
    """The .py is what `jupytext --sync` writes from the .ipynb with the repo's jupytext.toml,
    header included (whichever jupytext release is installed)."""
    source = NOTEBOOKS / f"{name}.py"
    config = load_jupytext_config(str(source))
    twin = jupytext.read(source.with_suffix(".ipynb"), config=config)
    assert jupytext.writes(twin, fmt="py:percent", config=config) == source.read_text(), (
        f"{source.name} and its .ipynb have drifted apart: run `jupytext --sync {source}`")


@pytest.mark.parametrize("name", list_notebooks())
def test_parameters_cell(name: str):
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for parameter in ("profile", "seeds", "data_root", "out_dir"):
        assert f"{parameter} =" in tagged[0].source
    assert 'profile = "smoke"' in tagged[0].source  # nbval runs the notebook as committed


@pytest.mark.parametrize("name", list_notebooks())
def test_committed_twin_holds_outputs_only_for_checked_cells(name: str):
    import nbformat

    twin = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in twin.cells:
        if cell.cell_type == "code" and cell.outputs:
            assert "nbval-check-output" in cell.metadata.get("tags", [])


def test_a_refresh_keeps_the_ids_of_unchanged_cells():
    import nbformat

    from vipnb.notebooks import keep_cell_ids

    def notebook(sources, ids):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(s, id=i) for s, i in zip(sources, ids, strict=True)]
        return nb

    previous = notebook(["a = 1", "print(a)", "print(a)"], ["id-a", "id-p1", "id-p2"])
    fresh = notebook(["a = 1", "a += 1", "print(a)", "print(a)"], ["n1", "n2", "n3", "n4"])
    keep_cell_ids(fresh, previous)
    assert [cell.id for cell in fresh.cells] == ["id-a", "n2", "id-p1", "id-p2"]


@pytest.mark.parametrize("name", list_notebooks())
def test_at_paper_the_plan_shows_before_anything_trains(name: str):
    # the cell after the parameters shows `vipnb plan`'s runs and GPU-hours at paper (what
    # show_plan prints is tested in test_plan); no earlier cell trains
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(notebook.cells)
                 if "parameters" in c.metadata.get("tags", []))
    setup = next(c.source for c in notebook.cells[first + 1:] if c.cell_type == "code")
    assert 'if profile == "paper":' in setup
    assert f'    show_plan("{name}", profile, seeds, runs_root' in setup
    trains = ("train_seed_groups(", "train_many(", "train(")
    before = code[: code.index(setup)]
    assert not any(t in source for source in before for t in trains)


# Calls that train or score; a report written after one carries a header made after it.
_COMPUTES = re.compile(r"\b(train_seed_groups|train_many|train|add_seeds_where_wide|fuse|"
                       r"tta_score_many|rescore_many|run_coverage)\(")


@pytest.mark.parametrize("name", list_notebooks())
def test_a_report_header_counts_the_training_before_it(name: str):
    # `header` carries the notebook's wall time so far: made before a training call and used
    # after it, it would state the time before that training (04's tables once said 1.8 s
    # for a 27 min run)
    code = "\n".join(c.source for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells
                     if c.cell_type == "code")
    remade = [m.start() for m in re.finditer(r"^header = make_header\(", code, re.M)]
    used = [m.start() for m in re.finditer(r"\bheader\b(?! = make_header)", code)]
    for call in _COMPUTES.finditer(code):
        next_use = next((u for u in used if u > call.start()), None)
        line = code[: call.start()].count("\n") + 1
        assert next_use is None or any(call.start() < r < next_use for r in remade), (
            f"{name}: `{call.group(0)}` (code line {line}) runs before a report uses `header`; "
            "re-make the header after it")
