"""Checkpoints written atomically (a killed save or a full disk never spoils the last good
one) and read back safely: `torch.load(weights_only=True)` rebuilds tensors and plain values
only, so a planted checkpoint cannot run code when a run resumes from it."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vipnb.atomic import atomic_file
from vipnb.errors import VipnbError

# What weights_only loading rebuilds; a checkpoint holds nothing else.
_PLAIN_SCALARS = (str, int, float, bool, type(None), torch.dtype, torch.device)


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`.

    The rename is atomic on POSIX file systems, so `path` always holds either the previous
    complete checkpoint or the new complete one.
    """
    check_plain(state)
    with atomic_file(path, "wb") as stream:
        torch.save(state, stream)
    return Path(path)


def check_plain(value: Any, where: str = "state") -> None:
    """Raise TypeError, naming the entry, when `value` holds anything but tensors and plain
    values: `load_checkpoint` could not read it back."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_SCALARS:
        return  # the exact type: a numpy float or a str enum is a subclass, not loadable
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, f"{where} (a key)")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    else:
        raise TypeError(f"checkpoint {where} is a {type(value).__module__}."
                        f"{type(value).__qualname__}: store tensors and plain values only")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VipnbError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as e:  # never retried with weights_only=False
        reason = next((line.strip() for line in str(e).splitlines() if "nsupported" in line),
                      "not a torch checkpoint")
        raise VipnbError(
            f"checkpoint {path} holds more than tensors and plain values ({reason}): it is "
            "damaged or was not written by vipnb, and was not loaded, since loading it could run "
            "code; delete it to train this run from the start (or delete the whole run "
            "directory if you do not trust it)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise VipnbError(f"checkpoint {path} cannot be read ({e}); delete it to train this run "
                         "from the start") from e
    if not isinstance(state, dict):
        raise VipnbError(f"checkpoint {path} holds a {type(state).__name__}, not a vipnb "
                         "checkpoint; delete it to train this run from the start")
    return state


@contextmanager
def restoring_from(path: str | Path) -> Iterator[None]:
    """Turn a checkpoint that does not fit the model (a missing entry, other shapes) into a
    message naming the file."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise VipnbError(
            f"checkpoint {path} does not fit this run ({_brief(e)}); delete it, or "
            "train with --restart, to train the run from the start"
        ) from e


def _brief(error: Exception, limit: int = 300) -> str:
    """An error on one line, cut short: a state dict's error lists every key."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + " ..."
