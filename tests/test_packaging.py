"""The conda environment and pyproject.toml name the same packages with the same bounds."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge/pytorch channel names for the PyPI names that differ
CONDA_NAMES = {"torch": "pytorch"}


def _split(requirement: str) -> tuple[str, str]:
    name, bounds = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), bounds.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = dict(_split(r) for r in project["dependencies"]
                    + project["optional-dependencies"]["dev"])
    pip_side = {CONDA_NAMES.get(name, name): bounds for name, bounds in pip_side.items()}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_side = dict(_split(d) for d in environment["dependencies"]
                      if isinstance(d, str) and not d.startswith(("python", "pip")))
    assert conda_side == pip_side


def test_declared_bounds_admit_the_tested_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = dict(_split(r) for r in project["dependencies"])
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(bounds["torch"].replace(",", ", "))
    assert "0.29.1" in SpecifierSet(bounds["torchvision"].replace(",", ", "))


def test_jupytext_pairs_notebooks_with_py_percent():
    config = tomllib.loads((ROOT / "jupytext.toml").read_text())
    assert config["formats"] == "ipynb,py:percent"
