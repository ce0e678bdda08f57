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


def runs_root() -> Path:
    return Path(os.environ.get("VIPNB_RUNS", project_root() / "runs"))


def reports_root() -> Path:
    return Path(os.environ.get("VIPNB_REPORTS", project_root() / "reports"))


def notebooks_dir() -> Path:
    return project_root() / "notebooks"
