"""The folder a dataset builder writes into: reused when it holds a complete build of the
same settings, finished when it holds an interrupted one, refused when it holds a build of other
settings (the two would mix: images in both train and val) or files no builder wrote.
Shared by fashion50, fashion-boxes and the VIPriors builder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from vipnb.errors import VipnbError

COMPLETE = ".complete"  # JSON written last: the settings, the source and the counts
BUILDING = ".building.json"  # the settings, written before the first image, removed at the end


def check_build_folder(folder: Path, settings: dict, rebuild: bool, *,
                       markers: tuple = ((COMPLETE, "complete"), (BUILDING, "interrupted")),
                       keep: set[str] = frozenset(), assumed: dict | None = None) -> str:
    """What building `settings` into `folder` should do: "reuse" (a complete build of these
    settings), "build" (nothing there but `keep`, or an interrupted build of these settings to
    finish) or "rebuild" (a build there, to empty first; only when `rebuild`).

    Raises VipnbError for a build of other settings without `rebuild`, and for a folder with
    content but none of `markers`, even with `rebuild`: it may hold someone's own files.
    """
    name = settings["dataset"]
    if folder.exists() and not folder.is_dir():
        raise VipnbError(f"{folder} is a file, not a folder; choose another --out for {name}")
    present = folder.iterdir() if folder.exists() else ()
    entries = sorted(entry.name for entry in present if entry.name not in keep)
    if not entries:
        return "build"
    for marker, state in markers:
        if not (folder / marker).exists():
            continue
        if rebuild:
            return "rebuild"
        recorded = _read(folder / marker)
        differences = (_differences({**(assumed or {}), **recorded}, settings) if recorded
                       else f"its marker {marker} is unreadable")
        if not differences:
            return "reuse" if state == "complete" else "build"
        raise VipnbError(
            f"{folder} holds {'an' if state == 'interrupted' else 'a'} {state} build with other "
            f"settings ({differences}); building {name} into it would mix the two builds. "
            f"Choose another --out, or pass --rebuild to empty {folder} and build it anew."
        )
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise VipnbError(
        f"{folder} holds files ({shown}) but no {' or '.join(m for m, _ in markers)}, so it is "
        f"not an earlier {name} build and is left alone, even with --rebuild. Choose another "
        f"--out (a new or empty folder), or empty {folder} yourself."
    )


def refuse_interrupted_build(folder: Path) -> None:
    """A loader's check before training on `folder`: one holding the in-progress marker of a
    build that was interrupted holds part of the data, and is refused. A folder with no marker
    at all (the user's own) is accepted as it is."""
    marker = folder / BUILDING
    if not marker.exists():
        return
    settings = _read(marker)
    classes = f" --classes {settings['classes']}" if "classes" in settings else ""
    rerun = {
        "fashion50": f"`vipnb data fashion50 --out {folder}`",
        "vipriors": (f"`vipnb data vipriors --imagenet {settings.get('imagenet', 'DIR')} "
                     f"--splits DIR --out {folder.parent}{classes}`"),
    }.get(settings.get("dataset"), "the `vipnb data ...` command that built it")
    raise VipnbError(f"{folder} holds {BUILDING}: its build was interrupted, so it holds part "
                     f"of the data only. Rerun {rerun} to finish it (it resumes where it "
                     "stopped), then train.")


def empty_folder(folder: Path, keep: set[str] = frozenset()) -> None:
    """Delete what `folder` holds but `keep`; links go, never what they point at.

    The completion marker becomes the in-progress one first, so an interrupted emptying reads
    as an interrupted build of the old settings, never as a complete one."""
    if (folder / COMPLETE).exists():
        os.replace(folder / COMPLETE, folder / BUILDING)
    for entry in folder.iterdir():
        if entry.name in keep or entry.name == BUILDING:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (folder / BUILDING).unlink(missing_ok=True)


def _read(marker: Path) -> dict:
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _differences(recorded: dict, wanted: dict) -> str:
    """'seed 0 in the folder, 1 now; ...': each setting of `wanted` the record differs in."""
    old, new = _flat(recorded), _flat(wanted)
    return "; ".join(f"{key} {_shown(old.get(key))} in the folder, {_shown(value)} now"
                     for key, value in new.items() if old.get(key) != value)


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings (a sha256 per split file) as 'split_sha256 train.pickle' keys."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key} "))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: object) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12] + "..."  # a sha256: its start tells two files apart
    return repr(value)
