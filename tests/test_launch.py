"""`--launcher local` sends training through submitit's local executor: the same code path
as `--launcher slurm` on a cluster, run here in a subprocess."""

from pathlib import Path

import pytest
from conftest import write_recipe_file

from vipnb.cli import main
from vipnb.engine.rundir import RunDir
from vipnb.launch import ClusterOptions, make_executor, slurm_parameters

pytest.importorskip("submitit")


def test_train_through_submitit_local_executor(tiny_tree: Path, tmp_path: Path, capsys):
    recipe = write_recipe_file(tmp_path, "tiny", tiny_tree)
    code = main(["train", str(recipe), "--profile", "smoke", "--runs", str(tmp_path / "runs"),
                 "--launcher", "local", "--timeout-min", "10"])
    assert code == 0
    out = capsys.readouterr().out
    assert "submitted job" in out and "run directory:" in out
    run = RunDir(next((tmp_path / "runs").glob("tiny-*")))
    assert run.finished and run.logits("test").logits.shape == (9, 3)
    # submitit's logs go under the runs folder given, not the default one.
    assert list((tmp_path / "runs" / "submitit").glob("*/*.out"))


def test_slurm_job_runs_one_task_per_gpu():
    parameters = slurm_parameters(ClusterOptions(partition="gpu", gpus_per_node=8, nodes=2))
    assert parameters["gpus_per_node"] == parameters["tasks_per_node"] == 8
    assert parameters["nodes"] == 2 and parameters["slurm_partition"] == "gpu"
    assert "slurm_partition" not in slurm_parameters(ClusterOptions())


def test_unknown_launcher_is_named():
    from vipnb.errors import VipnbError

    with pytest.raises(VipnbError, match="unknown launcher 'pbs'"):
        make_executor(ClusterOptions(launcher="pbs", folder=Path("logs")))


def test_an_executor_without_a_log_folder_is_refused():
    from vipnb.errors import VipnbError

    with pytest.raises(VipnbError, match="folder is not set"):
        make_executor(ClusterOptions(launcher="local"))
