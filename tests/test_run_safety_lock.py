"""One process trains a run at a time: a second one (thread, process, torchrun job) is told
who holds the run; a lock left by a dead process is taken over; the lock goes with the run."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import tiny_recipe, write_recipe_file

from vipnb.engine import train
from vipnb.engine.run_lock import LOCK_NAME
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import Trainer
from vipnb.errors import VipnbError


def plant_lock(run_dir: Path, pid: int, host: str | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "started": "2026-01-02 03:04:05 +0000"}))
    return lock


@pytest.fixture
def live_pid():
    """The id of a process that runs for the whole test."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_run_held_by_a_live_process_names_it_and_is_left_alone(tiny_tree, tmp_path, live_pid):
    recipe = tiny_recipe(tiny_tree)
    run = RunDir(tmp_path / recipe.run_name)
    lock = plant_lock(run.path, live_pid)
    before = lock.read_text()
    with pytest.raises(VipnbError, match=rf"run {recipe.run_name} is being trained by pid "
                       rf"{live_pid} on host {socket.gethostname()} since 2026-01-02"):
        train(recipe, runs_root=tmp_path, progress=False)
    assert lock.read_text() == before  # the holder's lock is not touched
    assert not run.metrics_file.exists() and not run.recipe_file.exists()


def test_a_second_thread_on_the_same_run_is_refused(tiny_tree, tmp_path, monkeypatch):
    recipe = tiny_recipe(tiny_tree)
    training, may_go_on = threading.Event(), threading.Event()
    original = Trainer._train_one_epoch

    def waits(self, epoch):
        training.set()
        may_go_on.wait(120)
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_one_epoch", waits)
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(
        run=train(recipe, runs_root=tmp_path, progress=False)))
    thread.start()
    try:
        assert training.wait(120)
        with pytest.raises(VipnbError, match=rf"being trained by pid {os.getpid()} on host"):
            train(recipe, runs_root=tmp_path, progress=False)
    finally:
        may_go_on.set()
        thread.join(300)
    run = first["run"]
    assert [m["epoch"] for m in run.metrics()] == [0]  # each epoch once
    assert not (run.path / LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over_with_a_message_and_released(tiny_tree, tmp_path, caplog):
    recipe = tiny_recipe(tiny_tree)
    pid = dead_pid()
    lock = plant_lock(tmp_path / recipe.run_name, pid)
    with caplog.at_level(logging.WARNING):
        run = train(recipe, runs_root=tmp_path, progress=False)
    assert run.finished and not lock.exists()
    assert f"taking over the lock of pid {pid}" in caplog.text


def test_a_lock_from_another_host_is_not_taken_over(tiny_tree, tmp_path):
    recipe = tiny_recipe(tiny_tree)
    plant_lock(tmp_path / recipe.run_name, dead_pid(), host="elsewhere.example")
    with pytest.raises(VipnbError, match="on host elsewhere.example since"):
        train(recipe, runs_root=tmp_path, progress=False)


def test_lock_is_released_when_training_is_interrupted_and_finished_runs_need_none(
        tiny_tree, tmp_path, interrupt_training, live_pid):
    recipe = tiny_recipe(tiny_tree, epochs=2)
    resume_normally = interrupt_training(epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, runs_root=tmp_path, progress=False)
    run = RunDir(tmp_path / recipe.run_name)
    assert not (run.path / LOCK_NAME).exists()
    resume_normally()
    train(recipe, runs_root=tmp_path, progress=False)
    plant_lock(run.path, live_pid)  # someone else's lock: reading a finished run needs none
    assert train(recipe, runs_root=tmp_path, progress=False).path == run.path


def test_torchrun_job_on_a_held_run_stops_on_every_rank(tiny_tree, tmp_path, live_pid):
    recipe_file = write_recipe_file(tmp_path, "held", tiny_tree, batch_size=6)
    from vipnb.engine import load_recipe

    run_name = load_recipe(recipe_file, "smoke").run_name
    plant_lock(tmp_path / "runs" / run_name, live_pid)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "vipnb.cli", "train", str(recipe_file), "--profile", "smoke", "--runs",
         str(tmp_path / "runs")], capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert f"being trained by pid {live_pid}" in done.stdout + done.stderr


def test_sigterm_releases_the_lock(tiny_tree, tmp_path):
    """`kill PID`, a job's time limit: the run can be resumed at once, on any machine."""
    recipe_file = write_recipe_file(tmp_path, "long", tiny_tree, epochs=500)
    trainer = subprocess.Popen([sys.executable, "-m", "vipnb.cli", "train", str(recipe_file),
                                "--runs", str(tmp_path / "runs")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "runs").glob("*/metrics.jsonl")):  # training, lock held
        assert time.monotonic() < deadline and trainer.poll() is None, trainer.stderr.read()
        time.sleep(0.05)
    (lock,) = (tmp_path / "runs").glob(f"*/{LOCK_NAME}")
    trainer.send_signal(signal.SIGTERM)
    assert trainer.wait(60) in (130, 128 + signal.SIGTERM)  # as Ctrl-C, or SystemExit
    assert not lock.exists()
    assert not [p for p in lock.parent.iterdir() if p.name.endswith(".tmp")]


def test_sigterm_inside_a_claim_exits_through_finally(tmp_path):
    """Without the command line's handler (a notebook, a worker of `train_many`)."""
    from vipnb.engine.run_lock import training_claim

    run = RunDir(tmp_path / "run")
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit), training_claim(run) as unfinished:
            assert unfinished and (run.path / LOCK_NAME).exists()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        assert not (run.path / LOCK_NAME).exists()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
