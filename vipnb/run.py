"""`vipnb run`: execute the paired notebooks headless with papermill and keep what they made.

The `.py` twin (jupytext py:percent) is the source; it is converted in memory and executed
with its `parameters` cell overridden (an unknown parameter is an error that lists the known
ones). The notebook writes into a staging folder beside the report folder; only when every
cell has succeeded does the runner add the executed notebook, its HTML export and
`provenance.json` (command, commit, profile, machine, wall time, and the list of files the run
wrote) and rename the staging folder into the report folder's place. A failed or interrupted
run leaves the report folder as it was; a staging folder left by a killed run is removed by
the next run.

The runner deletes only what it wrote itself: files listed in the previous run's
`provenance.json` that this run did not write again (a plot of a model that is no longer the
best one). A folder holding a report of another profile, or files no vipnb run wrote, is
replaced only with `overwrite=True` (`--overwrite`), and even then only the previous run's
listed files are removed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vipnb import paths
from vipnb.atomic import process_alive, replace_folder
from vipnb.errors import VipnbError

PROVENANCE = "provenance.json"
# Parameters and environment variables that name folders. The kernel runs in notebooks/, so a
# relative one is made absolute against the caller's working directory before it gets there.
PATH_PARAMETERS = ("data_root", "data_dir", "out_dir")
PATH_VARIABLES = ("VIPNB_DATA", "VIPNB_RUNS", "VIPNB_REPORTS", "VIPNB_FASHION_MNIST")


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


def notebook_parameters(notebook) -> list[str]:
    """The names assigned in the notebook's cell tagged `parameters`."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return [target.id for node in tree.body if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)]
    return []


def parameters_for(name: str, parameters: dict[str, Any], several: bool) -> dict[str, Any]:
    """One notebook's parameters in a run of one or `several` notebooks: with several, an
    `out_dir` is their common root and each notebook writes to `out_dir/<notebook>`."""
    if not several or not parameters.get("out_dir"):
        return parameters
    return {**parameters, "out_dir": str(Path(parameters["out_dir"]) / find_notebook(name).stem)}


def run_notebook(name: str, profile: str = "cpu", parameters: dict[str, Any] | None = None,
                 reports_root: Path | None = None, log_output: bool = True,
                 overwrite: bool = False, progress: bool = False) -> Path:
    """Execute one notebook; returns the executed `.ipynb` in its report folder.

    The report folder is `parameters["out_dir"]` when given, else
    `<reports_root>/<notebook>` (default root: the profile's, see `vipnb.paths`)."""
    import jupytext

    source = find_notebook(name)
    notebook = jupytext.read(source)
    parameters = dict(parameters or {})
    if "profile" in parameters:
        raise VipnbError("set the profile with --profile, not -p profile=...")
    if "command" in parameters:
        raise VipnbError("`command` is filled in by vipnb run (the command line the report "
                         "headers name); leave out -p command=...")
    known = notebook_parameters(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise VipnbError(f"{source.name} has no parameter {', '.join(unknown)}; its parameters "
                         f"are: {', '.join(known)} (set with -p KEY=VALUE)")
    command = _command_line(source.stem, profile, parameters, overwrite)  # as typed
    parameters = absolute_paths(parameters)
    root = Path(reports_root or paths.reports_root(profile))
    destination = Path(parameters.pop("out_dir", None) or root / source.stem).absolute()
    previous = _check_replaceable(destination, source.stem, profile, overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_stagings(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.running-{os.getpid()}-",
                                    dir=destination.parent))
    started = time.perf_counter()
    try:
        executed = _execute(notebook, source, staging, profile, parameters, command,
                            log_output, progress)
        _export_html(executed)
        _write_provenance(staging, source.stem, command, profile, parameters,
                          time.perf_counter() - started)
        for stale in _swap_in(staging, destination, previous):
            print(f"removed {stale}: the previous run wrote it, this one did not")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if destination.parent == root.absolute():
        from vipnb.report.index import write_index

        write_index(root)
    print(f"{source.stem}: done in {time.perf_counter() - started:.0f} s → {destination}")
    return destination / executed.name


def absolute_paths(parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` with each relative folder of `PATH_PARAMETERS` made absolute against the
    current working directory (the caller's, not the kernel's notebooks/)."""
    return {key: str(Path(value).expanduser().absolute())
            if key in PATH_PARAMETERS and isinstance(value, str) and value else value
            for key, value in parameters.items()}


@contextmanager
def _absolute_path_variables() -> Iterator[None]:
    """The `PATH_VARIABLES` set to relative folders, made absolute while the kernel runs."""
    relative = {name: os.environ[name] for name in PATH_VARIABLES
                if os.environ.get(name) and not Path(os.environ[name]).expanduser().is_absolute()}
    os.environ.update({name: str(Path(value).expanduser().absolute())
                       for name, value in relative.items()})
    try:
        yield
    finally:
        os.environ.update(relative)


def _check_replaceable(destination: Path, notebook: str, profile: str,
                       overwrite: bool) -> list[str]:
    """The files the previous run listed in `destination`; refuses a folder that holds another
    notebook's or another profile's report, or files no vipnb run wrote, unless `overwrite`."""
    manifest = destination / PROVENANCE
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text())
            owner = (previous.get("notebook", notebook), previous["profile"])
            files = [str(name) for name in previous["files"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise VipnbError(f"{manifest} cannot be read ({e!r}): move the folder {destination} "
                             "away or repair the file") from None
        outside = [name for name in files if not _inside(destination, name)]
        if outside:
            raise VipnbError(f"{manifest} lists files outside its folder ({outside[0]}); a "
                             "vipnb run never writes those: move the folder away or repair it")
        if owner != (notebook, profile) and not overwrite:
            raise VipnbError(f"{destination} holds the report of {owner[0]} at the `{owner[1]}` "
                             f"profile; this run of {notebook} at `{profile}` would replace it. "
                             "Write elsewhere (-p out_dir=DIR) or pass --overwrite")
        return files
    foreign = [p for p in destination.rglob("*") if p.is_file()] if destination.exists() else []
    if foreign and not overwrite:
        raise VipnbError(f"{destination} holds {len(foreign)} file(s) that no vipnb run listed "
                         f"(no {PROVENANCE}), e.g. {foreign[0].name}. Write elsewhere "
                         "(-p out_dir=DIR) or pass --overwrite (files are replaced, none removed)")
    return []


def _execute(notebook, source: Path, staging: Path, profile: str, parameters: dict[str, Any],
             command: str, log_output: bool, progress: bool) -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from vipnb.progress import TEXT_PROGRESS_ENV_VAR

    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    executed = staging / f"{source.stem}.ipynb"
    os.environ[TEXT_PROGRESS_ENV_VAR] = "1"
    try:
        with _absolute_path_variables():  # the kernel's cwd is notebooks/
            papermill.execute_notebook(notebook, str(executed),
                                       parameters={**parameters, "profile": profile,
                                                   "out_dir": str(staging), "command": command},
                                       cwd=str(source.parent), log_output=log_output,
                                       progress_bar=progress, kernel_name="python3")
    except PapermillExecutionError as e:
        kept = _keep_failed(executed)
        raise VipnbError(_describe_failure(e, kept)) from None
    finally:
        os.environ.pop(TEXT_PROGRESS_ENV_VAR, None)
    return executed


def _write_provenance(staging: Path, notebook: str, command: str, profile: str,
                      parameters: dict[str, Any], wall_time_s: float) -> Path:
    from vipnb.atomic import write_text_atomic
    from vipnb.report.header import make_header

    header = make_header(profile, wall_time_s, command=command).as_dict()
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    record = {"notebook": notebook, **header, "parameters": parameters,
              "files": [*files, PROVENANCE]}
    return write_text_atomic(staging / PROVENANCE, json.dumps(record, indent=1, default=str))


def _swap_in(staging: Path, destination: Path, previous: list[str]) -> list[Path]:
    """Make the staged report the content of `destination` in one rename, carrying over the
    files the previous run did not list (nobody's but the user's); return the files of
    `previous` that the new report no longer has (they go with the old folder)."""
    if not destination.exists():
        replace_folder(destination, staging)
        return []
    new = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    kept = [p for p in destination.rglob("*") if p.is_file()
            and p.relative_to(destination).as_posix() not in {*previous, *new}]
    for path in kept:
        target = staging / path.relative_to(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # a file system without hard links
            shutil.copy2(path, target)
    stale = [destination / name for name in previous
             if name not in new and (destination / name).is_file()]
    replace_folder(destination, staging)
    return stale


def _inside(folder: Path, name: str) -> bool:
    return (folder / name).resolve().is_relative_to(folder.resolve())


def _remove_dead_stagings(destination: Path) -> None:
    """Staging folders of runs killed outright (SIGKILL, power loss) beside `destination`."""
    pattern = re.compile(rf"\.{re.escape(destination.name)}\.(running|replaced)-(\d+)-")
    for folder in destination.parent.glob(f".{destination.name}.*"):
        match = pattern.match(folder.name)
        if match and folder.is_dir() and not process_alive(int(match[2])):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"removed {folder}, left by a run that was killed")


def _keep_failed(executed: Path) -> Path | None:
    """A failed run's executed notebook, kept outside the reports for debugging."""
    try:
        kept = Path(tempfile.mkdtemp(prefix="vipnb-failed-")) / executed.name
        shutil.copyfile(executed, kept)
    except OSError:
        return None
    return kept


def _command_line(stem: str, profile: str, parameters: dict[str, Any], overwrite: bool) -> str:
    extra = "".join(f" -p {k}={v}" for k, v in parameters.items())
    return f"vipnb run {stem} --profile {profile}{extra}" + (" --overwrite" if overwrite else "")


def _describe_failure(error, executed: Path | None) -> str:
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
    line = re.search(r"(?:Cell In\[\d+\]|<module>|Input In \[\d+\]), line (\d+)", traceback)
    lines = error.source.splitlines()
    where = ""
    if line and 0 < int(line.group(1)) <= len(lines):
        number = int(line.group(1))
        where = f", line {number}: {lines[number - 1].strip()}"
    return (f"notebook cell {error.cell_index} (execution count {error.exec_count}) failed"
            f"{where}\n{error.ename}: {error.evalue}\n"
            f"executed notebook: {executed or 'not kept'}\n"
            "the report folder was left as it was")


def _export_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    html = executed.with_suffix(".html")
    html.write_text(body)
    return html
