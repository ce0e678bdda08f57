"""`vipnb bench`: how close the trainer comes to the model's own speed, and how it compares
with the loop a user would write from timm's and torchvision's docs.

Measured in one process, on the same model, data and batch size:
  compute    forward + backward + SGD step on synthetic tensors (the ceiling);
  vipnb      the full vipnb training epoch (data, batched transforms, loss, step);
  reference  ImageFolder + PIL transforms + DataLoader + timm model, fp32 NCHW.
efficiency = vipnb / compute, speedup = vipnb / reference.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import timm
import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from vipnb.data.sources import load_run_data
from vipnb.data.workers import worker_count
from vipnb.engine.determinism import deterministic_kernels
from vipnb.engine.precision import use_bf16
from vipnb.engine.recipe import Recipe, load_recipe
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import Trainer
from vipnb.report.header import machine_description


@dataclass
class BenchResult:
    model: str
    input_size: int
    batch_size: int
    compute_images_per_s: float
    vipnb_images_per_s: float
    reference_images_per_s: float
    efficiency: float
    speedup: float
    bf16: bool
    channels_last: bool
    machine: str
    versions: dict

    def as_dict(self) -> dict:
        return asdict(self)


def bench(overrides: dict, model: str | None = None, profile: str = "cpu", epochs: int = 2,
          workers: int | str = "auto") -> BenchResult:
    """Measure the three rates for the `baseline_resnet` recipe at `profile` (optionally
    another model) with `overrides`: where the data lives (`data_dir`, `cache_dir`, or the
    `data_root` of imagenet_50) and any setting, such as a paper-size `input_size`."""
    overrides = {**({"model": model} if model else {}), **overrides}
    recipe = load_recipe("baseline_resnet", profile, overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with deterministic_kernels(recipe):
        data = load_run_data(recipe)
        trainer = Trainer(recipe, RunDir("/nonexistent-bench-run"), data, device, progress=False)
        images = len(data.train) // trainer.batch_size * trainer.batch_size
        compute = _compute_rate(trainer, steps=max(4, images // trainer.batch_size))
        trainer._train_one_epoch(0)  # warm-up: caches, allocator, oneDNN kernels
        vipnb_rate = sum(trainer._train_one_epoch(e)[1] for e in range(1, epochs + 1)) / epochs
        reference = _reference_rate(recipe, data.root, device, epochs, worker_count(workers))
    return BenchResult(
        model=recipe.model, input_size=recipe.input_size, batch_size=trainer.batch_size,
        compute_images_per_s=compute, vipnb_images_per_s=vipnb_rate,
        reference_images_per_s=reference, efficiency=vipnb_rate / compute,
        speedup=vipnb_rate / reference, bf16=use_bf16(recipe.amp, device),
        channels_last=recipe.channels_last, machine=machine_description(),
        versions={"python": platform.python_version(), "torch": torch.__version__,
                  "torchvision": torchvision.__version__, "timm": timm.__version__},
    )


def _compute_rate(trainer: Trainer, steps: int) -> float:
    """Synthetic, already-normalised inputs: only the model's forward, backward and step."""
    recipe, device = trainer.recipe, trainer.device
    inputs = torch.randn(trainer.batch_size, 3, recipe.input_size, recipe.input_size,
                         device=device).contiguous(memory_format=trainer.memory_format)
    targets = torch.softmax(torch.randn(trainer.batch_size, trainer.task.num_classes,
                                        device=device), 1)
    trainer.model.train()

    def step():
        loss, _ = trainer._forward_loss(inputs, targets)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for _ in range(3):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * trainer.batch_size / (time.perf_counter() - started)


def _reference_rate(recipe: Recipe, root, device, epochs: int, workers: int) -> float:
    """The loop of timm's and torchvision's docs: PIL transforms per image, fp32, NCHW."""
    transform = transforms.Compose([
        transforms.RandomResizedCrop(recipe.input_size, scale=tuple(recipe.scale)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(recipe.mean, recipe.std),
    ])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    model = timm.create_model(recipe.model, num_classes=len(dataset.classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    rates = []
    for epoch in range(epochs + 1):  # the first epoch warms up
        seen, started = 0, time.perf_counter()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(images)
        _sync(device)
        if epoch:
            rates.append(seen / (time.perf_counter() - started))
    return sum(rates) / len(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_report_target(name: str, wall_time_s: float, reports_root=None):
    """(reports/bench/<name and machine>, its report header): where a bench report goes."""
    import re
    from pathlib import Path

    from vipnb import paths
    from vipnb.report.header import make_header

    machine = machine_description()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{machine}-{name}".lower()).strip("-")
    header = make_header("cpu" if "no GPU" in machine else "paper", wall_time_s)
    return Path(reports_root or paths.reports_root()) / "bench" / slug, header


def write_bench_report(result: BenchResult, wall_time_s: float = 0.0, reports_root=None):
    """reports/bench/<machine>-<model>.json and .md, with the report header."""
    import json

    from vipnb.atomic import write_text_atomic

    target, header = bench_report_target(result.model, wall_time_s, reports_root)
    write_text_atomic(target.with_suffix(".json"),
                      json.dumps({"header": header.as_dict(), **result.as_dict()}, indent=1))
    rows = [("compute-only (synthetic tensors)", result.compute_images_per_s),
            ("vipnb trainer (cached data, batched transforms)", result.vipnb_images_per_s),
            ("reference loop (ImageFolder + PIL + DataLoader, fp32 NCHW)",
             result.reference_images_per_s)]
    lines = [f"# Training speed: {result.model} at {result.input_size} px, batch "
             f"{result.batch_size}", "", header.as_markdown(), "| loop | images/s |",
             "| --- | ---: |", *(f"| {name} | {rate:.1f} |" for name, rate in rows), "",
             f"efficiency (vipnb / compute) = **{result.efficiency:.2f}** · speedup (vipnb / "
             f"reference) = **{result.speedup:.2f}** · bf16 {result.bf16} · channels_last "
             f"{result.channels_last}", "", f"versions: {result.versions}"]
    return write_text_atomic(target.with_suffix(".md"), "\n".join(lines) + "\n")


def throughput_table(reports_root=None):
    """reports/bench/throughput.csv: the measured training rates `vipnb plan` estimates from."""
    from pathlib import Path

    from vipnb import paths

    return Path(reports_root or paths.reports_root()) / "bench" / "throughput.csv"


def save_throughput(result: BenchResult, reports_root=None):
    """Add this machine's entry for the measured model and input size to the throughput table
    (or replace it): the rate of the vipnb trainer's epochs, what a run's training runs at."""
    from vipnb.report.header import make_header
    from vipnb.study.plan import device_kind, record_throughput

    header = make_header("cpu", 0.0)  # the commit and the time of the measurement
    source = (f"vipnb bench --save {header.created[:10]} at {header.commit}: trainer epochs, "
              f"batch {result.batch_size}, bf16 {result.bf16}, torch {result.versions['torch']}")
    return record_throughput(throughput_table(reports_root), device_kind(), result.model,
                             result.input_size, result.vipnb_images_per_s, source)
