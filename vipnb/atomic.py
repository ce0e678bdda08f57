"""Files written whole or not at all: a temporary file beside the target, then a rename
(atomic on POSIX file systems), so a crash never leaves a half-written file in place.

A temporary file's name carries the id of the process writing it (`.NAME.PID.RANDOM.tmp`),
so two processes never share one, and one left by a killed process can be told apart from
one being written and removed later (`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# .NAME.PID.RANDOM.tmp; `.NAME.PID.tmp` and `.logits_SPLIT.tmp.npz` were written by older versions
_TEMPORARY = re.compile(r"^\..+?(?:\.(?P<pid>\d+)(?:\.\w+)?)?\.tmp(?:\.npz)?$")


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """An open temporary file that replaces `path` when the block ends without an error, and
    is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                         suffix=".tmp")
    try:
        text = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with os.fdopen(handle, mode, **text) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())  # the data is on disk before the rename makes it current
        os.chmod(temporary, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path) as stream:
        stream.write(text)
    return Path(path)


def replace_folder(target: str | os.PathLike, new: str | os.PathLike) -> None:
    """Put the finished folder `new` in `target`'s place by renames: an earlier `target` is
    moved aside (`.NAME.replaced-PID-…`, beside it) and deleted, so `target` never holds a
    mix of old and new files."""
    target, new = Path(target), Path(new)
    if not target.exists():
        os.rename(new, target)
        return
    aside = Path(tempfile.mkdtemp(dir=target.parent,
                                  prefix=f".{target.name}.replaced-{os.getpid()}-"))
    os.rename(target, aside)  # over the empty folder mkdtemp made
    os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files in `folder` whose writer no longer runs (killed while
    writing); return them."""
    removed = []
    for file in Path(folder).glob(".*"):
        match = _TEMPORARY.match(file.name)
        if not match or not file.is_file():
            continue
        pid = match["pid"]
        if pid is None or not process_alive(int(pid)):
            file.unlink(missing_ok=True)
            removed.append(file)
    return removed
