"""Keep each notebook pair in step: the `.py` (py:percent) is the source, the `.ipynb`
twin is what JupyterLab opens and what nbval checks.

The committed `.ipynb` holds outputs only for cells tagged `nbval-check-output`: the cells
whose output is deterministic at the `smoke` profile (data set sizes, class lists, recipe
values). `refresh_notebook` re-executes the notebook at `smoke` and stores just those.
"""

from __future__ import annotations

import copy
from pathlib import Path

from vipnb.run import find_notebook

CHECKED_TAG = "nbval-check-output"


def _strip(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    cell.metadata.pop("papermill", None)
    cell.metadata.pop("execution", None)


def refresh_notebook(name: str) -> Path:
    """Write `<name>.ipynb` from `<name>.py`, with expected outputs of the checked cells."""
    import jupytext
    import papermill

    source = find_notebook(name)
    notebook = jupytext.read(source)
    executed = papermill.execute_notebook(copy.deepcopy(notebook), None,
                                          parameters={"profile": "smoke"},
                                          cwd=str(source.parent), progress_bar=False,
                                          kernel_name="python3")
    # nbval ignores stored outputs of a cell without an execution count: keep both.
    outputs = {cell.source: (cell.outputs, cell.execution_count)
               for cell in executed.cells if cell.cell_type == "code"}
    for cell in notebook.cells:
        _strip(cell)
        if CHECKED_TAG in cell.metadata.get("tags", []):
            cell.outputs, cell.execution_count = outputs[cell.source]
    for key in ("papermill", "widgets"):
        notebook.metadata.pop(key, None)
    # Pairing is declared once for the repo in jupytext.toml, not in each notebook.
    notebook.metadata.get("jupytext", {}).pop("formats", None)
    target = source.with_suffix(".ipynb")
    if target.exists():
        keep_cell_ids(notebook, jupytext.read(target))
    jupytext.write(notebook, target, fmt="ipynb")
    jupytext.write(notebook, source, fmt="py:percent")  # the canonical text of the twin
    return target


def keep_cell_ids(notebook, previous) -> None:
    """Give each cell the id of the previous twin's cell with the same source, so a refresh
    rewrites only the cells that changed (jupytext draws new ids on every read)."""
    ids = {}
    for cell in previous.cells:
        ids.setdefault(cell.source, []).append(cell.get("id"))
    for cell in notebook.cells:
        if ids.get(cell.source):
            cell["id"] = ids[cell.source].pop(0)


def pair_drift(source: Path) -> list[str]:
    """Cells whose text differs between `<name>.py` and `<name>.ipynb` (empty: in step)."""
    import jupytext

    text = jupytext.read(source)
    twin_path = source.with_suffix(".ipynb")
    if not twin_path.exists():
        return [f"{twin_path} is missing: run `make notebooks`"]
    twin = jupytext.read(twin_path)
    if len(text.cells) != len(twin.cells):
        return [f"{source.name} has {len(text.cells)} cells, {twin_path.name} {len(twin.cells)}"]
    return [f"cell {i} differs" for i, (a, b) in enumerate(zip(text.cells, twin.cells,
                                                               strict=True))
            if a.source != b.source or a.cell_type != b.cell_type
            or a.metadata.get("tags", []) != b.metadata.get("tags", [])]
