"""`vipnb proof --quick`: the path a GPU check takes (bench at `paper`, two epochs of one `paper`
recipe per notebook from generated JPEGs to the report) runs on a CPU at small sizes."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from vipnb import cli, proof
from vipnb.bench import BenchResult
from vipnb.data.layout import scan_split
from vipnb.errors import VipnbError
from vipnb.proof import BENCH_MODELS, END_TO_END, QUICK_SIZES, EndToEnd, make_vipriors_jpegs


def test_quick_proof_runs_the_paper_path_from_jpegs_to_its_report(tmp_path, capsys):
    leftovers = set(Path(tempfile.gettempdir()).glob("vipnb-proof-*"))
    assert cli.main(["proof", "--quick", "--reports", str(tmp_path)]) == 0
    written = Path(capsys.readouterr().out.split("proof written to ")[1].strip())
    proof = json.loads(written.with_suffix(".json").read_text())
    runs = proof["end_to_end"]
    assert [(r["notebook"], r["recipe"]) for r in runs] == list(END_TO_END.items())
    assert all(r["epochs"] == 2 and 0 <= r["test_top1"] <= 100 for r in runs)
    assert [r["ten_crop_test_top1"] is None for r in runs] == [n == "02" for n in END_TO_END]
    assert [b["model"] for b in proof["bench"]] == list(BENCH_MODELS)
    assert all(b["input_size"] == QUICK_SIZES.input_size for b in proof["bench"])
    throughput = (tmp_path / "bench" / "throughput.csv").read_text()
    assert all(model in throughput for model in BENCH_MODELS)
    assert "| 04 | fc_resnest101e_ce | 2 |" in written.read_text()
    assert set(Path(tempfile.gettempdir()).glob("vipnb-proof-*")) == leftovers  # removed


def test_generated_jpegs_are_a_vipriors_layout_with_labelled_test_images(tmp_path):
    root = make_vipriors_jpegs(tmp_path / "v", QUICK_SIZES)
    train, test = scan_split(root, "train"), scan_split(root, "test")
    assert len(train.paths) == QUICK_SIZES.classes * QUICK_SIZES.train_per_class
    assert all(p.suffix == ".JPEG" for p in train.paths)
    assert sorted(set(test.labels.tolist())) == list(range(QUICK_SIZES.classes))


def test_proof_at_the_papers_sizes_needs_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cli.main(["proof", "--reports", str(tmp_path)]) != 0
    assert "vipnb proof --quick" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_failed_step_is_a_row_of_the_report_and_the_other_steps_still_run(
        tmp_path, capsys, monkeypatch):
    ran = []

    def bench_step(model, images, sizes, reports_root):
        ran.append(model)
        if model == BENCH_MODELS[0]:
            raise RuntimeError("CUDA out of memory | at 320 px")
        return BenchResult(model, sizes.input_size, sizes.batch_size, 10.0, 9.5, 4.0, 0.95,
                           2.4, True, True, "a machine", {})

    def end_to_end_step(notebook, name, data_root, folder, sizes):
        ran.append(name)
        return EndToEnd(notebook, name, f"{name}-run", 2, 1.0, None, 50.0, None, "cuda", True)

    monkeypatch.setattr(proof, "_bench", bench_step)
    monkeypatch.setattr(proof, "_end_to_end", end_to_end_step)
    assert cli.main(["proof", "--quick", "--reports", str(tmp_path)]) == 2
    assert ran == [*BENCH_MODELS, *END_TO_END.values()]
    assert f"bench {BENCH_MODELS[0]} failed" in capsys.readouterr().err
    report = next((tmp_path / "bench").glob("*-proof.md")).read_text()
    assert (f"| {BENCH_MODELS[0]} | **failed**: RuntimeError: CUDA out of memory / at 320 px |"
            in report)
    assert f"| {BENCH_MODELS[1]} | 10.0 | 9.5 | 4.0 | 0.95 | True | True |" in report
    assert all(f"| {notebook} | {name} | 2 |" in report for notebook, name in END_TO_END.items())


def test_generated_jpegs_do_not_depend_on_the_threads_that_write_them(tmp_path, monkeypatch):
    monkeypatch.setattr(proof, "available_cpus", lambda: 1)
    first = make_vipriors_jpegs(tmp_path / "a", QUICK_SIZES)
    monkeypatch.setattr(proof, "available_cpus", lambda: 8)
    second = make_vipriors_jpegs(tmp_path / "b", QUICK_SIZES)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_a_step_past_the_step_limit_is_stopped_and_the_next_one_runs(tmp_path, capsys,
                                                                    monkeypatch):
    def stalled_bench(model, images, sizes, reports_root):
        time.sleep(30)

    def failing_end_to_end(notebook, name, data_root, folder, sizes):
        raise VipnbError(f"{name}: not this time")

    monkeypatch.setattr(proof, "_bench", stalled_bench)
    monkeypatch.setattr(proof, "_end_to_end", failing_end_to_end)
    started = time.perf_counter()
    assert cli.main(["proof", "--quick", "--reports", str(tmp_path), "--step-limit", "0.2"]) == 2
    assert time.perf_counter() - started < 20
    report = next((tmp_path / "bench").glob("*-proof.md")).read_text()
    assert (f"| {BENCH_MODELS[1]} | **failed**: StepLimitExceeded: bench {BENCH_MODELS[1]} ran past "
            "the step limit of 0.2 s |") in report
    assert "| 04 | fc_resnest101e_ce | **failed**: VipnbError: fc_resnest101e_ce: not" in report


@pytest.mark.parametrize("limit", ["0", "-5", "soon"])
def test_the_step_limit_is_a_number_of_seconds_above_0(limit, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["proof", "--quick", "--reports", str(tmp_path), "--step-limit", limit])
    assert f"{limit!r}: give a number of seconds above 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
