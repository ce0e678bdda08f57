"""What notebook 02 reads back from its runs: per-epoch test metrics, measured every epoch or
every `val_every` epochs, and the curves drawn from them."""

import json
from pathlib import Path

import numpy as np
import pytest

from vipnb.engine.rundir import RunDir
from vipnb.errors import VipnbError
from vipnb.report import mtl_plots
from vipnb.report.header import make_header
from vipnb.study.mtl_runs import at_epoch_chosen_on_val, run_metrics


def run_with(tmp_path: Path, records: list[dict]) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_epochs_not_measured_read_as_nan_and_the_measured_ones_keep_their_place(tmp_path):
    # val_every 2 over 5 epochs: the trainer scores epochs 2, 4 and the last
    records = [{"epoch": 0, "train_loss": 2.0, "test_top1": None},
               {"epoch": 1, "train_loss": 1.5, "test_top1": 0.4, "test_mean_iou": 0.3},
               {"epoch": 2, "train_loss": 1.2, "test_top1": None},
               {"epoch": 3, "train_loss": 1.0, "test_top1": 0.6, "test_mean_iou": 0.5},
               {"epoch": 4, "train_loss": 0.9, "test_top1": 0.7, "test_mean_iou": 0.55}]
    run = run_with(tmp_path, records)
    top1 = run_metrics(run, "test_top1")
    np.testing.assert_array_equal(np.isnan(top1), [True, False, True, False, False])
    assert top1[-1] == 0.7 and np.nanmax(top1) == 0.7
    assert np.nanmax(run_metrics(run, "test_mean_iou")) == 0.55  # absent where not measured


def test_a_metric_never_measured_is_an_error_naming_what_is_there(tmp_path):
    run = run_with(tmp_path, [{"epoch": 0, "train_loss": 2.0, "test_top1": 0.5}])
    with pytest.raises(VipnbError, match=r"no per-epoch 'test_mean_iou'.*test_top1, train_loss"):
        run_metrics(run, "test_mean_iou")


def test_the_epoch_is_chosen_on_validation_and_read_on_test(tmp_path):
    records = [{"epoch": 0, "val_top1": None, "test_top1": None},
               {"epoch": 1, "val_top1": 0.7, "test_top1": 0.5},
               {"epoch": 2, "val_top1": 0.6, "test_top1": 0.9},  # the best test epoch
               {"epoch": 3, "val_top1": 0.7, "test_top1": 0.8}]  # ties the first: not chosen
    assert at_epoch_chosen_on_val(run_with(tmp_path, records)) == 0.5


def test_a_run_without_validation_cannot_choose_an_epoch(tmp_path):
    run = run_with(tmp_path, [{"epoch": 0, "test_top1": 0.5}])
    with pytest.raises(VipnbError, match="no per-epoch 'val_top1'"):
        at_epoch_chosen_on_val(run)


def test_curves_plot_only_the_measured_epochs(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(mtl_plots, "save_figure",
                        lambda figure, path, header: figures.append(figure) or Path(path))
    nan = float("nan")
    curves = {"every 2nd epoch": [[nan, 0.4, nan, 0.6], [nan, 0.5, nan, 0.7]],
              "every epoch": [[0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5]]}
    mtl_plots.seed_curves_plot(curves, tmp_path / "curves.png", make_header("smoke", 0.0, None),
                               "test top-1", "curves")
    sparse, dense = figures[0].axes[0].lines
    np.testing.assert_array_equal(sparse.get_xdata(), [2, 4])
    np.testing.assert_allclose(sparse.get_ydata(), [0.45, 0.65])
    np.testing.assert_array_equal(dense.get_xdata(), [1, 2, 3, 4])
