import json

import pytest
from conftest import DATA_DIR

from vipnb import paths
from vipnb.bench import bench, write_bench_report
from vipnb.cli import main


@pytest.mark.slow
def test_bench_measures_three_rates_and_writes_report(tmp_path):
    result = bench({**paths.data_places(DATA_DIR), "input_size": 24}, model="resnet10t",
                   profile="smoke", epochs=1, workers=0)  # a size other than the recipe's
    assert result.input_size == 24
    assert result.compute_images_per_s > 0 and result.reference_images_per_s > 0
    assert result.efficiency == pytest.approx(result.vipnb_images_per_s
                                              / result.compute_images_per_s)
    assert result.speedup == pytest.approx(result.vipnb_images_per_s
                                           / result.reference_images_per_s)
    markdown = write_bench_report(result, reports_root=tmp_path)
    stored = json.loads(markdown.with_suffix(".json").read_text())
    assert stored["model"] == "resnet10t" and "commit" in stored["header"]
    assert "efficiency" in markdown.read_text()


@pytest.mark.slow
def test_the_reference_loop_decodes_with_this_machines_cpus_unless_told(monkeypatch):
    import vipnb.bench
    import vipnb.data.workers

    workers_seen = []

    def reference_rate(recipe, root, device, epochs, workers):
        workers_seen.append(workers)
        return 1.0

    monkeypatch.setattr(vipnb.bench, "_reference_rate", reference_rate)
    monkeypatch.setattr(vipnb.data.workers, "available_cpus", lambda: 64)
    monkeypatch.setattr(vipnb.data.workers.os, "cpu_count", lambda: 64)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for workers in ("auto", 3):
        bench({**paths.data_places(DATA_DIR), "input_size": 16, "train_limit": 12},
              model="resnet10t", profile="smoke", epochs=1, workers=workers)
    assert workers_seen == [vipnb.data.workers.MAX_WORKERS, 3]


def test_bench_workers_are_a_whole_number_or_auto(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--workers", "many"])
    assert "'many': give a whole number or `auto`" in capsys.readouterr().err
