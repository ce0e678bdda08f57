"""`runs.csv`: every run a notebook's reports were made from, one row per run, with what a
reader needs to check or reuse it: the recipe, profile, seed and overrides that name it, its
validation top-1 (what selects models), its test top-1, epochs and wall time.

The recipe, profile, seed and overrides give the run's name again on any checkout: a committed
report whose runs main would name differently is stale (tests/test_report_freshness.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from vipnb.atomic import write_text_atomic
from vipnb.engine.recipe import DEPENDENCY_KEYS, Recipe, load_recipe
from vipnb.engine.rundir import RunDir, runs_read
from vipnb.errors import VipnbError
from vipnb.report.csv_file import write_csv
from vipnb.report.header import ReportHeader

RUN_COLUMNS = ["run", "recipe", "profile", "seed", "overrides", "val_top1", "test_top1",
               "epochs", "wall_time_s", "device"]
# Settings that never change a run's numbers or name.
_NOT_OVERRIDES = {"description", "workers", "data_dir", "cache_dir", "overrides"}  # where, not what


def run_row(run: RunDir) -> dict:
    """One run's row: names, top-1 in percent (val: the selection metric), cost."""
    summary, recipe = run.summary(), run.recipe
    overrides = settings_beyond_shipped(recipe)
    return {"run": run.path.name, "recipe": recipe.name, "profile": recipe.profile,
            "seed": recipe.seed,
            "overrides": "" if overrides is None else json.dumps(overrides, sort_keys=True),
            "val_top1": _percent(summary.get("val_top1")),
            "test_top1": _percent(summary.get("test_top1")), "epochs": summary.get("epochs"),
            "wall_time_s": f"{summary.get('wall_time_s', 0.0):.1f}",
            "device": summary.get("device")}


def settings_beyond_shipped(recipe: Recipe) -> dict | None:
    """`recipe_overrides` of a loaded recipe: what its `runs.csv` row says it overrides."""
    return recipe_overrides(_as_saved(recipe.to_dict()))


def recipe_overrides(recipe: dict) -> dict | None:
    """What the run's recipe sets beyond its shipped recipe file at its profile and seed;
    None for a recipe that is not shipped in vipnb/recipes/."""
    try:
        shipped = load_recipe(recipe["name"], recipe["profile"], {"seed": recipe["seed"]})
    except VipnbError:
        return None
    defaults = _as_saved(shipped.to_dict())
    return {key: value for key, value in recipe.items()
            if key not in _NOT_OVERRIDES and defaults.get(key) != value}


def with_dependencies(runs: list[RunDir]) -> list[RunDir]:
    """`runs` and every run they started from (teacher, init_from, hierarchy_from), each once:
    the same list whether those were trained in this process or found finished."""
    found: dict[str, RunDir] = {}

    def visit(run: RunDir) -> None:
        if run.path.name in found:
            return
        found[run.path.name] = run
        recipe = run.recipe
        for key in DEPENDENCY_KEYS:
            if getattr(recipe, key):
                visit(RunDir(run.path.parent / recipe.dependency(key).run_name))

    for run in runs:
        visit(run)
    return list(found.values())


def recomputed_run_name(row: dict, data_dir: str | os.PathLike) -> str:
    """The name this checkout gives the run of a `runs.csv` row, with the built-in datasets
    under `data_dir`."""
    overrides = json.loads(row["overrides"]) if row["overrides"] else {}
    return load_recipe(row["recipe"], row["profile"], {"data_dir": str(data_dir), **overrides,
                                                       "seed": int(row["seed"])}).run_name


def write_runs_table(out_dir: str | os.PathLike, header: ReportHeader,
                     runs: list[RunDir] | None = None) -> tuple[Path, Path]:
    """`runs.csv` and `runs.md` of `runs` (default: every run this process read logits or
    metrics of) and of the runs they started from."""
    chosen = runs if runs is not None else runs_read()
    rows = [run_row(run) for run in with_dependencies(chosen)]
    rows.sort(key=lambda row: (row["recipe"], int(row["seed"])))
    csv_path = write_csv(Path(out_dir) / "runs.csv", RUN_COLUMNS, rows)
    lines = ["# Runs behind these reports", "", header.as_markdown(),
             "| run | val top-1 (%) | test top-1 (%) | epochs | wall time (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['run']} | {r['val_top1']} | {r['test_top1']} | {r['epochs']} | "
              f"{r['wall_time_s']} |" for r in rows]
    md_path = write_text_atomic(Path(out_dir) / "runs.md", "\n".join(lines) + "\n")
    return csv_path, md_path


def _as_saved(values: dict) -> dict:
    """Recipe values as a YAML file holds them (tuples as lists), so two compare alike."""
    return yaml.safe_load(yaml.safe_dump(values))


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"
