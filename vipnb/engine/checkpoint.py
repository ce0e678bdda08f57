"""Checkpoints written atomically: a killed save or a full disk never spoils the last good one."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from vipnb.errors import VipnbError


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    The rename is atomic on POSIX file systems, so `path` always holds either the previous
    complete checkpoint or the new complete one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise VipnbError(f"checkpoint not found: {path}") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise VipnbError(
            f"checkpoint {path} cannot be read ({e}); delete it to train this run from the start"
        ) from e
