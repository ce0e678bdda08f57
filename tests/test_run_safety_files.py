"""A run directory's files, damaged or planted: a checkpoint that runs code when unpickled is
not loaded, a metrics line torn by a kill is dropped on resume, temporary files left by killed
processes are removed, and unreadable files are named with what to do."""

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_recipe

from vipnb.atomic import atomic_file
from vipnb.engine import train
from vipnb.engine.checkpoint import load_checkpoint
from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError


class WritesAFileWhenLoaded:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def test_planted_checkpoint_does_not_run_code(tiny_tree, tmp_path):
    recipe = tiny_recipe(tiny_tree)
    run = RunDir(tmp_path / "runs" / recipe.run_name)
    run.path.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"model": WritesAFileWhenLoaded(marker), "next_epoch": 0}, run.checkpoint_file)
    with pytest.raises(VipnbError, match=rf"checkpoint {run.checkpoint_file} holds more than "
                       r"tensors.*was not loaded.*delete it to train this run from the start"):
        train(recipe, runs_root=tmp_path / "runs", progress=False)
    assert not marker.exists()


def test_checkpoint_of_another_model_says_what_to_do(tiny_tree, tmp_path):
    recipe = tiny_recipe(tiny_tree)
    run = RunDir(tmp_path / recipe.run_name)
    run.path.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(2)}, "next_epoch": 1}, run.checkpoint_file)
    with pytest.raises(VipnbError, match=rf"checkpoint {run.checkpoint_file} does not fit "
                       "this run.*--restart"):
        train(recipe, runs_root=tmp_path, progress=False)


def test_torn_last_metrics_line_is_dropped_on_resume(tiny_tree, tmp_path, killed_and_resumed,
                                                     caplog):
    recipe = tiny_recipe(tiny_tree, epochs=3)

    def tear_the_last_line(killed: RunDir) -> None:  # killed while appending epoch 2's record
        with open(killed.metrics_file, "a") as f:
            f.write('{"epoch": 2, "train_loss": 0.9')

    with caplog.at_level(logging.WARNING):
        whole, resumed = killed_and_resumed(recipe, tmp_path, kill_at=2,
                                            after_kill=tear_the_last_line)
    assert str(resumed.metrics_file) in caplog.text and "last line" in caplog.text
    assert [m["epoch"] for m in resumed.metrics()] == [0, 1, 2]
    for key in ("train_loss", "val_top1", "val_loss"):
        assert [m[key] for m in resumed.metrics()] == [m[key] for m in whole.metrics()]
    np.testing.assert_array_equal(resumed.logits("val").logits, whole.logits("val").logits)


def test_damaged_metrics_line_before_the_last_is_named(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_file.write_text('{"epoch": 0}\n{"epoch": 1, "tr\n{"epoch": 2}\n')
    with pytest.raises(VipnbError, match=rf"{run.metrics_file}, line 2, is not an epoch"):
        run.metrics()
    run.metrics_file.write_text('{"epoch": 0}\n{"epoch": 1, "tr')
    assert run.metrics() == [{"epoch": 0}]  # being written, or torn: left out


@pytest.mark.parametrize(("name", "text"), [("summary.json", '{"run": "x", "test_top1'),
                                            ("recipe.yaml", "name: [unclosed\n")])
def test_unreadable_summary_or_recipe_names_the_file(tmp_path, name, text):
    run = RunDir(tmp_path / "some-run")
    run.path.mkdir()
    (run.path / name).write_text(text)
    with pytest.raises(VipnbError, match=rf"{run.path / name} cannot be read.*delete the run "
                       "directory"):
        run.summary() if name == "summary.json" else run.recipe


def test_temporary_files_carry_the_process_id(tmp_path):
    with atomic_file(tmp_path / "logits_val.npz", "wb") as stream:
        stream.write(b"x")
        (temporary,) = tmp_path.iterdir()
    assert temporary.name.startswith(f".logits_val.npz.{os.getpid()}.")
    assert [p.name for p in tmp_path.iterdir()] == ["logits_val.npz"]


def test_temporary_files_of_killed_processes_are_removed_when_the_run_starts(
        tiny_tree, tmp_path, caplog):
    recipe = tiny_recipe(tiny_tree)
    run = RunDir(tmp_path / recipe.run_name)
    # A process killed in the middle of torch.save leaves its temporary file.
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, torch\n"
        "from vipnb.engine.checkpoint import save_atomic\n"
        "def dies(state, stream):\n"
        "    stream.write(b'half a checkpoint'); stream.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dies\n"
        f"save_atomic({{'next_epoch': 1}}, {str(run.checkpoint_file)!r})\n")])
    assert killed.returncode == -signal.SIGKILL
    (left,) = run.path.iterdir()
    legacy = run.path / ".logits_val.tmp.npz"  # the name every process shared before
    legacy.write_bytes(b"half a zip")
    kept = run.path / f".notes.txt.{os.getpid()}.abc.tmp"  # a live process's: still written
    kept.write_text("x")
    with caplog.at_level(logging.WARNING):
        train(recipe, runs_root=tmp_path, progress=False)
    assert not left.exists() and not legacy.exists() and kept.exists()
    assert f"removed {left}" in caplog.text
    assert load_checkpoint(run.checkpoint_file)["next_epoch"] == 1
