import json

import pytest
from conftest import DATA_DIR

from vipnb import paths
from vipnb.bench import bench, write_bench_report


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
