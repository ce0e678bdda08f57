"""Where data, runs and reports live by default (each can be moved by an environment variable)."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root for an editable install, else the current directory."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def data_root() -> Path:
    return Path(os.environ.get("VIPNB_DATA", project_root() / "data"))


def data_places(data_dir: str | Path | None = None) -> dict[str, str]:
    """The recipe keys that say where the built-in datasets are built (`data_dir`: the given
    folder, else `data_root()`) and where images are decoded (`cache_dir`: its `.cache`),
    which the edge (the CLI, the notebooks) passes down to every run."""
    data_dir = Path(data_dir) if data_dir else data_root()
    return {"data_dir": str(data_dir), "cache_dir": str(data_dir / ".cache")}


def runs_root() -> Path:
    return Path(os.environ.get("VIPNB_RUNS", project_root() / "runs"))


# Reports of each profile have a place of their own, so a `smoke` run (seconds, meaningless
# numbers) never lands on the committed `cpu` reports.
_REPORTS_BY_PROFILE = {"cpu": "reports", "smoke": "build/smoke-reports", "paper": "reports-paper"}


def reports_root(profile: str = "cpu") -> Path:
    """`$VIPNB_REPORTS` when set, else the profile's own folder in the project."""
    if "VIPNB_REPORTS" in os.environ:
        return Path(os.environ["VIPNB_REPORTS"])
    return project_root() / _REPORTS_BY_PROFILE.get(profile, f"reports-{profile}")


def report_dir(notebook: str, profile: str) -> Path:
    """Where a notebook run interactively (JupyterLab, nbval) at `profile` writes its reports:
    `$VIPNB_REPORTS/<notebook>` when set, else a scratch folder under build/. Only `vipnb run`
    replaces a report folder of `reports_root`, whole and after every cell succeeded."""
    if "VIPNB_REPORTS" in os.environ:
        return Path(os.environ["VIPNB_REPORTS"]) / notebook
    return project_root() / "build" / "interactive-reports" / profile / notebook


def notebooks_dir() -> Path:
    return project_root() / "notebooks"
