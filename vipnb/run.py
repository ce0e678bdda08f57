"""`vipnb run`: execute the paired notebooks headless with papermill and keep what they made.

The `.py` twin (jupytext py:percent) is the source; it is converted in memory, executed with
the `parameters` cell overridden (profile, seeds, data_root, out_dir, …), and the executed
notebook is saved beside its reports with an HTML export. After a run that succeeds,
`reports/<notebook>/` holds what that run wrote and nothing older: a plot of a model that is
no longer the best one, say, is removed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from vipnb import paths
from vipnb.errors import VipnbError


def list_notebooks() -> list[str]:
    return sorted(p.stem for p in paths.notebooks_dir().glob("[0-9][0-9]_*.py"))


def find_notebook(name: str) -> Path:
    """A notebook by path, by stem (`00_data_and_baseline`) or by number (`00`)."""
    path = Path(name)
    if path.suffix in (".py", ".ipynb") and path.exists():
        return path.with_suffix(".py")
    matches = [n for n in list_notebooks() if n == name or n.split("_")[0] == name]
    if len(matches) != 1:
        raise VipnbError(
            f"no notebook {name!r} in {paths.notebooks_dir()}; available: "
            + ", ".join(list_notebooks())
        )
    return paths.notebooks_dir() / f"{matches[0]}.py"


def run_notebook(name: str, profile: str = "cpu", parameters: dict[str, Any] | None = None,
                 reports_root: Path | None = None, log_output: bool = True) -> Path:
    """Execute one notebook; returns the executed `.ipynb` under `reports/<notebook>/`."""
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = find_notebook(name)
    out_dir = Path(reports_root or paths.reports_root()) / source.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{source.stem}.ipynb"
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    params = {"profile": profile, "out_dir": str(out_dir), **(parameters or {})}
    os.environ["VIPNB_COMMAND"] = _command_line(source.stem, profile, parameters)
    started, started_at = time.perf_counter(), time.time()
    try:
        papermill.execute_notebook(notebook, str(executed), parameters=params,
                                   cwd=str(source.parent), log_output=log_output,
                                   progress_bar=False, kernel_name="python3")
    except PapermillExecutionError as e:
        raise VipnbError(_describe_failure(e, executed)) from None
    finally:
        os.environ.pop("VIPNB_COMMAND", None)
    _export_html(executed)
    for stale in remove_older_files(out_dir, started_at):
        print(f"removed {stale}: the run did not write it again")
    from vipnb.report.index import write_index

    write_index(Path(reports_root or paths.reports_root()))
    print(f"{source.stem}: done in {time.perf_counter() - started:.0f} s → {executed}")
    return executed


def remove_older_files(folder: Path, since: float) -> list[Path]:
    """Delete the files under `folder` last written before `since` (seconds since the epoch,
    with a second's slack for coarse file-system clocks); return them."""
    stale = sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime < since - 1)
    for path in stale:
        path.unlink()
    return stale


def _command_line(stem: str, profile: str, parameters: dict[str, Any] | None) -> str:
    extra = "".join(f" -p {k}={v}" for k, v in (parameters or {}).items())
    return f"vipnb run {stem} --profile {profile}{extra}"


def _describe_failure(error, executed: Path) -> str:
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
    line = re.search(r"(?:Cell In\[\d+\]|<module>|Input In \[\d+\]), line (\d+)", traceback)
    lines = error.source.splitlines()
    where = ""
    if line and 0 < int(line.group(1)) <= len(lines):
        number = int(line.group(1))
        where = f", line {number}: {lines[number - 1].strip()}"
    return (f"notebook cell {error.cell_index} (execution count {error.exec_count}) failed"
            f"{where}\n{error.ename}: {error.evalue}\nexecuted notebook: {executed}")


def _export_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    html = executed.with_suffix(".html")
    html.write_text(body)
    return html
