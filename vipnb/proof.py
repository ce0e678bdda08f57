"""`vipnb proof`: the `paper` path checked on this machine's accelerator in one command.

(a) `vipnb bench --save` at the papers' sizes for the MoE paper's ResNeSt-50-AA and the VIPF
    paper's DSK-ResNeXt-50: compute-only, the vipnb trainer and the plain timm + DataLoader
    loop, with the bf16 and channels_last of the `paper` recipes;
(b) two epochs of one `paper` recipe per notebook (and the runs it starts from) on generated
    data at the papers' image sizes, a VIPriors-layout JPEG folder (a CUB-layout folder with
    boxes for 02): JPEG decoding, training, the test score and a ten-crop re-score on the
    training device.

It writes the bench reports and throughput entries as `vipnb bench --save` does, and
reports/bench/<machine>-proof.md and .json; the generated data and runs live in a temporary
folder that is removed afterwards. `quick` shrinks images, data and batches so that the same
path runs on a CPU in about a minute (the test suite's check of this command).
"""

from __future__ import annotations

import gc
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vipnb.atomic import write_text_atomic
from vipnb.bench import bench, bench_report_target, save_throughput, write_bench_report
from vipnb.data.fashion_boxes import NAMES as BOX_CLASSES
from vipnb.data.fashion_boxes import build_fashion_boxes
from vipnb.data.workers import available_cpus
from vipnb.engine import load_recipe, train
from vipnb.engine.precision import use_bf16
from vipnb.engine.rescore import rescore
from vipnb.errors import VipnbError
from vipnb.eval.submission import write_labels_csv
from vipnb.report.header import format_duration, machine_description

BENCH_MODELS = ("resnest50d_aa", "dsk_resnext50_32x4d")  # MoE §3.1, VIPF §4.1
# One `paper` recipe per notebook, each exercising its paper's machinery: 01 trains its MoCo
# initialisation and its teacher first; 04 fuses train + val (§III.C).
END_TO_END = {"00": "baseline_resnet", "01": "moe_rs_sd50_n3_distill", "02": "mtl_moe_e3",
              "03": "vipf_dsk_resnext50", "04": "fc_resnest101e_ce"}


@dataclass(frozen=True)
class ProofSizes:
    """The generated data and the sizes the runs train at."""

    image_side: int  # generated JPEGs (ImageNet's are about 400 px; CUB's 500)
    cache_size: int  # MoE §3.1: 352 px images ...
    input_size: int  # ... cropped to 320
    classes: int
    train_per_class: int
    batch_size: int
    bench_epochs: int


PAPER_SIZES = ProofSizes(image_side=400, cache_size=352, input_size=320, classes=16,
                         train_per_class=128, batch_size=128, bench_epochs=2)
QUICK_SIZES = ProofSizes(image_side=48, cache_size=40, input_size=32, classes=3,
                         train_per_class=8, batch_size=8, bench_epochs=1)


@dataclass
class EndToEnd:
    notebook: str
    recipe: str
    run: str
    epochs: int
    wall_time_s: float
    val_top1: float | None  # None: the run has no such score (02 has no val split)
    test_top1: float | None
    ten_crop_test_top1: float | None
    device: str
    bf16: bool


def run_proof(quick: bool = False, reports_root=None, work: str | Path | None = None,
              step_limit_s: float | None = None) -> Path:
    """Run (a) and (b) and write the proof report; return its .md path.

    A step that fails, or runs past `step_limit_s`, is a row of the report (its traceback
    printed) and the other steps still run, since a GPU is often lent for minutes only; the
    command fails afterwards."""
    if not quick and not torch.cuda.is_available():
        raise VipnbError("vipnb proof checks the paper path on a GPU and this machine has none "
                         "(at the papers' sizes it would take hours here); `vipnb proof --quick` "
                         "runs the same path at small sizes on this CPU")
    if step_limit_s is not None and threading.current_thread() is not threading.main_thread():
        raise VipnbError("vipnb proof's step limit needs the main thread (it uses SIGALRM); "
                         "call run_proof from it, or without step_limit_s")
    sizes = QUICK_SIZES if quick else PAPER_SIZES
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="vipnb-proof-", dir=work))
    try:
        _progress(started, "generating the VIPriors-layout JPEGs and the CUB-layout boxes")
        images = make_vipriors_jpegs(folder / "vipriors", sizes)
        boxes = make_cub_boxes(folder / "cub", sizes)
        benches = [_attempt(started, f"bench {model}", step_limit_s, _bench, model, images,
                            sizes, reports_root) for model in BENCH_MODELS]
        runs = [_attempt(started, f"{notebook}: two epochs of {name}", step_limit_s,
                         _end_to_end, notebook, name, boxes if notebook == "02" else images,
                         folder, sizes)
                for notebook, name in END_TO_END.items()]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = _write_report(benches, runs, sizes, time.perf_counter() - started, reports_root)
    failed = [step.step for step in (*benches, *runs) if isinstance(step, Failed)]
    if failed:
        raise VipnbError(f"vipnb proof: {'; '.join(failed)} failed (tracebacks above); "
                         f"{report} holds what the other steps measured")
    return report


@dataclass
class Failed:
    step: str
    error: str


def _attempt(started: float, step: str, limit_s: float | None, function, *args):
    """`function(*args)`, or a Failed row with its error when it raises or runs past
    `limit_s` (a stalled step is stopped at its next Python instruction)."""
    _progress(started, step)
    try:
        with _time_limit(step, limit_s):
            return function(*args)
    except Exception as error:  # noqa: BLE001 - recorded, printed, and the command fails
        traceback.print_exc()
        # What the failed step still holds (its model, optimizer, batches, DataLoader
        # workers) would crowd the next; a sticky CUDA error fails the next steps anyway.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return Failed(step, f"{type(error).__name__}: {error}")


class StepLimitExceeded(Exception):
    """Not a TimeoutError: that is an OSError, which a step's own error handling may catch."""


@contextmanager
def _time_limit(step: str, seconds: float | None) -> Iterator[None]:
    if not seconds:
        yield
        return

    def stop(signum, frame):
        raise StepLimitExceeded(f"{step} ran past the step limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _progress(started: float, step: str) -> None:
    print(f"vipnb proof [{format_duration(time.perf_counter() - started)}] {step}",
          file=sys.stderr, flush=True)


def make_vipriors_jpegs(root: Path, sizes: ProofSizes, seed: int = 0) -> Path:
    """A VIPriors-layout folder of JPEGs whose colour and stripes depend on the class, so a
    model can learn them; val as large as train's tenth, test as large as val. Threads write
    them (numpy's fills and PIL's encoder release the GIL), each image from its own generator,
    so the images do not depend on the machine's cores."""
    classes = [f"n{index:08d}" for index in range(sizes.classes)]  # wnid-shaped names
    side = sizes.image_side

    def write(path: Path, label: int, stream: np.random.SeedSequence) -> None:
        pixels = np.random.default_rng(stream).normal(
            60 + 150 * label / max(1, sizes.classes - 1), 25, (side, side, 3))
        period = 4 + 3 * label
        pixels[:, (np.arange(side) // period) % 2 == 0, label % 3] += 60
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)

    val_per_class = max(2, sizes.train_per_class // 10)
    jobs = [(root / split / name / f"{name}_{i}.JPEG", label)
            for split, per_class in (("train", sizes.train_per_class), ("val", val_per_class))
            for label, name in enumerate(classes) for i in range(per_class)]
    test_labels = [i % sizes.classes for i in range(val_per_class * sizes.classes)]
    jobs += [(root / "test" / "imgs" / f"img_{i}.JPEG", label)
             for i, label in enumerate(test_labels)]
    for folder in {path.parent for path, _ in jobs}:
        folder.mkdir(parents=True)
    streams = np.random.SeedSequence(seed).spawn(len(jobs))
    with ThreadPoolExecutor(available_cpus()) as pool:
        # list(): an image that failed raises here
        list(pool.map(lambda job, stream: write(*job, stream), jobs, streams))
    write_labels_csv(root / "test" / "labels.csv",
                     [f"img_{i}.JPEG" for i in range(len(test_labels))], test_labels)
    return root


def make_cub_boxes(root: Path, sizes: ProofSizes, seed: int = 0) -> Path:
    """fashion-boxes' CUB layout (images, boxes, split) at the image side, drawn from
    generated items (a class-dependent bar pattern) instead of Fashion-MNIST."""
    rng = np.random.default_rng(seed)
    train_per_class = max(4, sizes.train_per_class // 4)
    test_per_class = max(2, train_per_class // 2)

    def items(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(len(BOX_CLASSES)), n_per_class)
        pixels = rng.integers(0, 15, (len(labels), 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            pixels[i, 4:24, 2 + 2 * label:6 + 2 * label] = 200
            pixels[i, 4 + 2 * label:8 + 2 * label, 4:24] = 120 + 10 * label
        return pixels, labels

    train_images, train_labels = items(train_per_class)
    test_images, test_labels = items(test_per_class)
    return build_fashion_boxes(root, canvas=sizes.image_side, train_per_class=train_per_class,
                               test_per_class=test_per_class, seed=seed,
                               source=(train_images, train_labels, test_images, test_labels))


def _bench(model: str, images: Path, sizes: ProofSizes, reports_root):
    started = time.perf_counter()
    result = bench({"data_root": str(images), "input_size": sizes.input_size,
                    "cache_size": sizes.cache_size, "batch_size": sizes.batch_size},
                   model=model, profile="paper", epochs=sizes.bench_epochs)
    write_bench_report(result, time.perf_counter() - started, reports_root)
    save_throughput(result, reports_root)
    return result


def _end_to_end(notebook: str, name: str, data_root: Path, folder: Path,
                sizes: ProofSizes) -> EndToEnd:
    """Two epochs of `name` at `paper` (its dependencies too: the overrides reach them), then
    its test set re-scored with ten crops on the device it trained on."""
    overrides = {"data_root": str(data_root), "epochs": 2, "warmup_epochs": 1,
                 "cooldown_epochs": 0, "mixup_off_epochs": 0, "batch_size": sizes.batch_size,
                 "input_size": sizes.input_size, "cache_size": sizes.cache_size,
                 "cache_dir": str(folder / "cache")}
    recipe = load_recipe(name, "paper", overrides)
    started = time.perf_counter()
    run = train(recipe, folder / "runs", progress=False)
    summary = run.summary()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ten_crop = (None if recipe.architecture == "mtl_moe"  # the poster scores one crop
                else rescore(run, "ten_crop", sizes.cache_size, "test").top1)
    return EndToEnd(notebook, name, run.path.name, summary["epochs"],
                    time.perf_counter() - started, _percent(summary.get("val_top1")),
                    _percent(summary.get("test_top1")), _percent(ten_crop), device,
                    use_bf16(recipe.amp, torch.device(device)))


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


_BENCH_COLUMNS = ("| model | compute-only (img/s) | vipnb (img/s) | reference loop (img/s) | "
                  "efficiency | bf16 | channels_last |")
_END_TO_END_COLUMNS = ("| notebook | recipe | epochs | wall time (s) | val top-1 (%) | "
                       "test top-1 (%) | ten-crop test top-1 (%) | device | bf16 |")


def _write_report(benches: list, runs: list, sizes: ProofSizes, wall_time_s: float,
                  reports_root) -> Path:
    """reports/bench/<machine>-proof.md and .json; a failed step is a row saying so."""
    target, header = bench_report_target("proof", wall_time_s, reports_root)
    write_text_atomic(target.with_suffix(".json"), json.dumps(
        {"header": header.as_dict(), "sizes": asdict(sizes),
         "bench": [asdict(b) if isinstance(b, Failed) else b.as_dict() for b in benches],
         "end_to_end": [asdict(r) for r in runs]}, indent=1))
    lines = [f"# The `paper` path on {machine_description()}", "", header.as_markdown(),
             f"Generated data: {sizes.classes} classes × {sizes.train_per_class} training "
             f"JPEGs of {sizes.image_side} px, cached at {sizes.cache_size} px, crops of "
             f"{sizes.input_size} px, batch {sizes.batch_size}.", "",
             "## Training speed (vipnb bench)", "",
             _BENCH_COLUMNS, "| --- | ---: | ---: | ---: | ---: | --- | --- |",
             *(_failed_row([model], b.error, _BENCH_COLUMNS) if isinstance(b, Failed) else
               f"| {b.model} | {b.compute_images_per_s:.1f} | {b.vipnb_images_per_s:.1f} | "
               f"{b.reference_images_per_s:.1f} | {b.efficiency:.2f} | {b.bf16} | "
               f"{b.channels_last} |" for model, b in zip(BENCH_MODELS, benches, strict=True)),
             "",
             "## Two epochs of one `paper` recipe per notebook", "",
             _END_TO_END_COLUMNS,
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
             *(_failed_row([notebook, recipe], r.error, _END_TO_END_COLUMNS)
               if isinstance(r, Failed) else
               f"| {r.notebook} | {r.recipe} | {r.epochs} | {r.wall_time_s:.1f} | "
               f"{_cell(r.val_top1)} | {_cell(r.test_top1)} | {_cell(r.ten_crop_test_top1)} | "
               f"{r.device} | {r.bf16} |"
               for (notebook, recipe), r in zip(END_TO_END.items(), runs, strict=True)),
             "", "Two epochs on generated data check that the path runs, not what it learns."]
    return write_text_atomic(target.with_suffix(".md"), "\n".join(lines) + "\n")


def _failed_row(first_cells: list[str], error: str, columns: str) -> str:
    """A table row of `first_cells`, then the error's first line, then empty cells."""
    first_line = error.splitlines()[0] if error else ""
    cells = [*first_cells, f"**failed**: {first_line.replace('|', '/')}"]
    cells += [""] * (columns.count("|") - 1 - len(cells))
    return "| " + " | ".join(cells) + " |"


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
