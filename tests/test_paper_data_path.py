"""The `paper` data path as a newcomer with ImageNet meets it, on generated trees: the decoded
images cached outside the dataset folder and shared by processes, relative paths given to
`vipnb run`, an interrupted build refused, the workers and bf16 chosen for the machine, and a
batch larger than the data named."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SPLITS_DIR, make_tree, tiny_recipe

from vipnb import cli
from vipnb.data.cache import decode_split
from vipnb.data.layout import scan_split
from vipnb.data.sources import load_run_data
from vipnb.engine.precision import use_bf16
from vipnb.engine.recipe import from_dict
from vipnb.engine.rundir import RunDir
from vipnb.engine.tasks import task_class
from vipnb.engine.trainer import Trainer
from vipnb.errors import VipnbError
from vipnb.run import run_notebook

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


# -- 4. workers ------------------------------------------------------------------------------

def test_workers_default_to_this_process_share_of_the_cpus(monkeypatch, tmp_path):
    from vipnb.data.workers import MAX_WORKERS, worker_count

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert worker_count("auto") == MAX_WORKERS  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun: 8 processes share the node
    assert worker_count("auto") == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)))  # Slurm's share
    assert worker_count("auto") == 12
    assert worker_count(3) == 3 and worker_count(0) == 0
    assert from_dict({"name": "x"}).workers == "auto"
    assert from_dict({"name": "x", "workers": "2"}).workers == 2
    stream = load_run_data(tiny_recipe(make_tree(tmp_path / "t"), data_cache="stream"))
    assert stream.train.workers == 12


def test_paper_recipes_leave_workers_to_the_machine():
    from vipnb.engine.recipe import load_recipe

    for name in ("vipf_resnext50", "fc_resnest101e_ce"):
        assert load_recipe(name, "paper", {"data_root": "/nowhere"}).workers == "auto"


# -- 1. the decoded-image cache ---------------------------------------------------------------

READER = """
import hashlib, sys, time
from pathlib import Path
from vipnb.data.cache import decode_split
from vipnb.data.layout import scan_split
files = scan_split(sys.argv[1], "train")
print("ready", flush=True)
while not Path(sys.argv[3]).exists():  # both start decoding at once
    time.sleep(0.01)
split = decode_split(files, 32, cache_dir=Path(sys.argv[2]), threads=1)
digest = hashlib.sha256(split.images.numpy().tobytes() + split.labels.numpy().tobytes()
                        + "|".join(split.ids).encode())
print("digest", digest.hexdigest(), flush=True)
"""


def test_two_processes_share_one_cache_built_once(tmp_path):
    tree = make_tree(tmp_path / "tree", per_class=40, size=48)
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(tree), str(cache), str(go)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    for reader in readers:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
    go.touch()
    outputs = [reader.communicate(timeout=300) for reader in readers]
    assert all(reader.returncode == 0 for reader in readers), [err for _, err in outputs]
    printed = [out for out, _ in outputs]
    digests = [line for out in printed for line in out.splitlines() if line.startswith("digest")]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert sum(out.count("decoding 120 images at 32 px") for out in printed) == 1
    assert len(list(cache.glob("train-32px-*.u8"))) == 1
    # and what they read is what decoding in memory gives
    here = decode_split(scan_split(tree, "train"), 32)
    mine = hashlib.sha256(here.images.numpy().tobytes() + here.labels.numpy().tobytes()
                          + "|".join(here.ids).encode())
    assert digests[0] == f"digest {mine.hexdigest()}"


def test_cache_prints_its_size_and_is_mapped_from_its_file(tmp_path, capsys):
    files = scan_split(make_tree(tmp_path / "tree"), "train")
    first = decode_split(files, 16, cache_dir=tmp_path / "cache")
    pixels_file = next((tmp_path / "cache").glob("train-16px-*.u8"))
    assert (f"decoding 18 images at 16 px: 0.00 GB into {pixels_file}"
            in capsys.readouterr().out)
    again = decode_split(files, 16, cache_dir=tmp_path / "cache")
    assert "decoding" not in capsys.readouterr().out  # read, not decoded again
    assert torch.equal(first.images, again.images) and again.ids == first.ids
    assert pixels_file.stat().st_size == 18 * 3 * 16 * 16
    assert pixels_file.read_bytes() == again.images.numpy().tobytes()


def test_two_datasets_or_two_sizes_never_share_a_cache_file(tmp_path):
    cache = tmp_path / "cache"
    one = make_tree(tmp_path / "one" / "imagenet_50", seed=0)
    other = make_tree(tmp_path / "other" / "imagenet_50", seed=1)  # same name, other images
    a = load_run_data(tiny_recipe(one, cache_dir=str(cache)))
    b = load_run_data(tiny_recipe(other, cache_dir=str(cache)))
    c = load_run_data(tiny_recipe(one, cache_dir=str(cache), cache_size=20, input_size=16))
    assert not torch.equal(a.train.images, b.train.images)
    assert c.train.images.shape[-1] == 20
    assert len(list((cache / "imagenet_50").glob("train-*.u8"))) == 3
    assert len(list((cache / "imagenet_50").glob("*.u8"))) == 9  # train, val, test of each


def test_a_read_only_dataset_folder_trains_from_a_cache_elsewhere(tmp_path):
    tree = make_tree(tmp_path / "imagenet_50")
    before = snapshot(tree)
    folders = [tree, *(p for p in tree.rglob("*") if p.is_dir())]
    for folder in folders:
        folder.chmod(0o555)
    try:
        data = load_run_data(tiny_recipe(tree, cache_dir=str(tmp_path / "cache")))
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert snapshot(tree) == before  # nothing written into the dataset folder
    assert len(data.train) == 18 and len(data.test) == 9
    assert len(list((tmp_path / "cache" / "imagenet_50").glob("*.u8"))) == 3


def test_without_cache_dir_a_read_only_dataset_folder_is_refused_naming_cache_dir(
        tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "imagenet_50")
    monkeypatch.setattr("vipnb.data.sources.os.access", lambda path, mode: False)
    with pytest.raises(VipnbError, match=rf"{tree} is read-only.*`cache_dir`"):
        load_run_data(tiny_recipe(tree))
    assert not (tree / ".vipnb_cache").exists()


def test_without_cache_dir_a_writable_dataset_folder_keeps_its_cache_inside(tmp_path):
    tree = make_tree(tmp_path / "tiny")
    load_run_data(tiny_recipe(tree))
    assert len(list((tree / ".vipnb_cache").glob("*.u8"))) == 3


def test_vipnb_train_passes_a_cache_folder_beside_the_data(tmp_path, monkeypatch):
    passed = []
    monkeypatch.setattr(cli, "_train_one", lambda name, args, overrides: passed.append(overrides))
    monkeypatch.setenv("VIPNB_DATA", str(tmp_path / "data"))
    cli.main(["train", "baseline_resnet"])
    cli.main(["train", "baseline_resnet", "-p", f"data_dir={tmp_path / 'elsewhere'}"])
    cli.main(["train", "baseline_resnet", "-p", f"cache_dir={tmp_path / 'fast'}"])
    assert [o["cache_dir"] for o in passed] == [str(tmp_path / "data" / ".cache"),
                                                str(tmp_path / "elsewhere" / ".cache"),
                                                str(tmp_path / "fast")]


def test_cache_dir_names_no_run_and_reaches_the_runs_it_starts_from(tmp_path):
    tree = make_tree(tmp_path / "tiny")
    here, there = (tiny_recipe(tree, cache_dir=str(tmp_path / d)) for d in ("a", "b"))
    assert here.run_name == there.run_name == tiny_recipe(tree).run_name
    assert "cache_dir" in here.grouped()["data"]
    teacher = from_dict({"name": "x", "teacher": "baseline_resnet", "data_dir": str(tmp_path),
                         "cache_dir": str(tmp_path / "c")}).dependency("teacher")
    assert teacher.cache_dir == str(tmp_path / "c")


# -- 3. an interrupted build --------------------------------------------------------------------

@pytest.mark.skipif(not (SPLITS_DIR / "train.pickle").is_file(),
                    reason=f"official VIPriors split files not found in {SPLITS_DIR}")
def test_an_interrupted_build_is_refused_until_it_is_finished(tmp_path, monkeypatch):
    from PIL import Image

    from vipnb.data import vipriors
    from vipnb.data.splits import load_vipriors_splits

    splits = load_vipriors_splits(SPLITS_DIR)
    wnid = splits.wnids[0]
    imagenet = tmp_path / "imagenet"  # the files the official splits name, for one class
    names = [f"train/{w}/{n}" for w, n in splits.train + splits.val if w == wnid]
    names += [f"val/{entry}" for entry in splits.test if entry.startswith(f"{wnid}/")]
    for number, name in enumerate(names):
        (imagenet / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (number % 256, 0, 0)).save(imagenet / name, "JPEG")
    placed = []
    real_place = vipriors._Placer.place

    def killed_after_ten(self, planned):
        if len(placed) == 10:
            raise KeyboardInterrupt("simulated Ctrl-C")
        placed.append(planned)
        return real_place(self, planned)

    monkeypatch.setattr(vipriors._Placer, "place", killed_after_ten)
    with pytest.raises(KeyboardInterrupt):
        vipriors.build_vipriors(imagenet, SPLITS_DIR, tmp_path / "out", classes=1,
                                progress=False)
    root = tmp_path / "out" / "imagenet_50"
    recipe = tiny_recipe(root, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(VipnbError, match=rf"{root} holds \.building\.json.*interrupted.*"
                                         r"vipnb data vipriors --imagenet .*--classes 1"):
        load_run_data(recipe)
    monkeypatch.setattr(vipriors._Placer, "place", real_place)
    vipriors.build_vipriors(imagenet, SPLITS_DIR, tmp_path / "out", classes=1, progress=False)
    data = load_run_data(recipe)
    assert (len(data.train), len(data.val), len(data.test)) == (50, 50, 50)


def test_a_folder_without_any_build_marker_is_the_users_own_and_accepted(tmp_path):
    tree = make_tree(tmp_path / "mine")
    assert len(load_run_data(tiny_recipe(tree)).train) == 18
    (tree / ".building.json").write_text('{"dataset": "fashion50"}')
    with pytest.raises(VipnbError, match=r"vipnb data fashion50 --out"):
        load_run_data(tiny_recipe(tree))


# -- 2. relative paths given to `vipnb run` ---------------------------------------------------

PATHS_NOTEBOOK = """# %% tags=['parameters']
profile = 'smoke'
data_root = None
out_dir = None

# %%
import os
from pathlib import Path
(Path(out_dir) / 'seen.txt').write_text(str(Path(data_root).resolve()) + '\\n'
                                        + str(Path(os.environ['VIPNB_RUNS']).resolve()))
"""


def test_relative_paths_given_to_vipnb_run_mean_the_callers_folder(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    source = tmp_path / "notebooks" / "96_paths.py"  # the kernel runs in notebooks/
    source.write_text(PATHS_NOTEBOOK)
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    monkeypatch.setenv("VIPNB_RUNS", "my_runs")
    run_notebook(str(source), "smoke", {"data_root": "my_data", "out_dir": "out"},
                 log_output=False)
    seen = (caller / "out" / "seen.txt").read_text().splitlines()
    assert seen == [str(caller / "my_data"), str(caller / "my_runs")]
    assert os.environ["VIPNB_RUNS"] == "my_runs"  # as the caller set it


# -- 5. bf16 only where the GPU or CPU has it -------------------------------------------------

def v100(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native or including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2")


def test_amp_auto_picks_bf16_only_on_gpus_with_native_bf16(monkeypatch):
    cuda = torch.device("cuda", 0)
    v100(monkeypatch, native=False)
    assert not use_bf16("auto", cuda) and not use_bf16("none", cuda)
    with pytest.raises(VipnbError, match=r"amp=bf16.*V100.*-p amp=auto"):
        use_bf16("bf16", cuda)
    v100(monkeypatch, native=True)  # an A100 / H100
    assert use_bf16("auto", cuda) and use_bf16("bf16", cuda)


@pytest.mark.parametrize("capability", ["AVX2", "AVX512"])
def test_amp_bf16_is_refused_on_a_cpu_that_would_emulate_it(monkeypatch, capability):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert not use_bf16("auto", cpu) and not use_bf16("none", cpu)
    with pytest.raises(VipnbError, match=rf"amp=bf16.*CPU.*{capability}.*-p amp=auto"):
        use_bf16("bf16", cpu)


@pytest.mark.parametrize("capability", ["AVX512_BF16", "AMX"])
def test_amp_auto_picks_bf16_on_a_cpu_with_native_bf16(monkeypatch, capability):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert use_bf16("auto", cpu) and use_bf16("bf16", cpu) and not use_bf16("none", cpu)


# -- 6. a batch larger than the data ----------------------------------------------------------

def test_a_batch_larger_than_the_data_is_named(tmp_path, caplog):
    tree = make_tree(tmp_path / "tiny")
    for batch, warned in ((64, True), (6, False)):
        recipe = tiny_recipe(tree, batch_size=batch)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vipnb.engine.trainer"):
            trainer = Trainer(recipe, RunDir(tmp_path / f"run{batch}"),
                              task_class(recipe).load_data(recipe), torch.device("cpu"), False)
        assert trainer.batch_size == min(batch, 18)
        expected = "recipe tiny (profile cpu): batch_size 64 is more than the 18 training images"
        assert (expected in caplog.text) is warned
