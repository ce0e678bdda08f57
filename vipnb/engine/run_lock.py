"""One training process per run: a lock file in the run directory names the process that
trains the run, so a second `vipnb train` of the same run stops with a message naming it
instead of writing every epoch a second time into the same files.

The lock is created whole or not at all (a hard link of a complete temporary file, which
fails when the lock exists). A lock left by a process that no longer runs on this machine
(killed, crashed) is taken over with a message; one from another machine is left to the
user, who can tell whether that process still runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vipnb.atomic import process_alive, remove_stale_temporaries
from vipnb.engine.distributed import DistInfo
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"
_held_here: set[Path] = set()  # a lock naming this pid but not in here is from a former life


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S %z"))


class RunLock:
    """`with RunLock(run_dir):` trains the run in the block, or raises VipnbError naming the
    process that trains it already."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.file = self.run_dir.resolve() / LOCK_NAME  # one spelling, for `_held_here`
        self.holder: Holder | None = None

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = Holder.this_process()
        for _ in range(5):  # each retry follows a lock that vanished or was taken over
            if _create(self.file, me):
                self.holder = me
                _held_here.add(self.file)
                return
            holder = _read(self.file)
            if holder is None:
                continue
            if not self._stale(holder):
                raise VipnbError(
                    f"run {self.run_dir.name} is being trained by pid {holder.pid} on host "
                    f"{holder.host} since {holder.started}; wait for it to finish, or, if that "
                    f"process no longer runs, delete {self.file} and train again")
            log.warning("%s: taking over the lock of pid %d (since %s), which no longer runs",
                        self.run_dir.name, holder.pid, holder.started)
            _remove_if_unchanged(self.file, holder)
        raise VipnbError(f"{self.file}: other processes keep taking this run's lock; try again")

    def release(self) -> None:
        if self.holder is None:
            return
        if _read(self.file) == self.holder:  # not a lock someone else has taken over since
            self.file.unlink(missing_ok=True)
        _held_here.discard(self.file)
        self.holder = None

    def _stale(self, holder: Holder) -> bool:
        if holder.host != socket.gethostname():
            return False  # its pid means nothing here
        if holder.pid == os.getpid():  # this process, or a former one with the same pid
            return self.file not in _held_here
        return not process_alive(holder.pid)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(file: Path, holder: Holder) -> bool:
    """Make `file` name `holder` unless it exists; whether it did."""
    handle, written = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.{holder.pid}.",
                                       suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(asdict(holder)))
        os.link(written, file)  # atomic, and fails if `file` exists: never a half-written lock
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(written)


def _read(file: Path) -> Holder | None:
    try:
        fields = json.loads(file.read_text())
        return Holder(int(fields["pid"]), str(fields["host"]), str(fields["started"]))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as e:
        raise VipnbError(f"lock file {file} cannot be read ({e!r}); if no process trains this "
                         "run, delete it and train again") from None


def _remove_if_unchanged(file: Path, stale: Holder) -> None:
    """Remove `file` if it still names `stale`; a lock another process has just taken over
    in its place stays."""
    aside = file.with_name(f".{file.name}.{os.getpid()}.stale.tmp")
    try:
        os.rename(file, aside)
    except FileNotFoundError:
        return
    try:
        if _read(aside) != stale:
            os.link(aside, file)  # put the new holder's lock back
    except (FileExistsError, VipnbError):
        pass
    finally:
        aside.unlink(missing_ok=True)


@contextmanager
def training_claim(run: RunDir, dist: DistInfo | None = None,
                   device: torch.device | None = None) -> Iterator[bool]:
    """Hold `run`'s lock for the block; yield whether the run still needs training (another
    process may have finished it meanwhile). Under torchrun only the main process takes the
    lock and the others follow its answer. Temporary files left by killed processes are
    removed first."""
    dist = dist or DistInfo()
    device = device or torch.device("cpu")
    lock = RunLock(run.path) if dist.is_main else None
    with _terminate_as_exit():
        try:
            yield _take(run, lock, dist, device)
        finally:
            if lock is not None:
                lock.release()


def _take(run: RunDir, lock: RunLock | None, dist: DistInfo, device: torch.device) -> bool:
    """Take the lock (main process); on every process, whether the run needs training."""
    refused: VipnbError | None = None
    if lock is not None:
        try:
            lock.acquire()
        except VipnbError as e:
            refused = e
    if not dist.all_true(torch.tensor(refused is None, device=device)):  # every rank stops
        raise refused or VipnbError(f"{run.path}: the main process could not take this run's "
                                    "lock; see its message")
    if lock is not None:
        for file in remove_stale_temporaries(run.path):
            log.warning("removed %s, left by a process killed while writing it", file)
    unfinished = lock is None or not run.finished
    return dist.all_true(torch.tensor(unfinished, device=device))


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Let SIGTERM (`kill`, a job's time limit, a worker pool's shutdown) end the process
    through `finally` blocks, as Ctrl-C does, so the lock is released; its default would
    leave a lock that only this machine can tell is stale."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield  # signals go to the main thread; a handler someone installed stays theirs
        return

    def exit_(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
