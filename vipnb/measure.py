"""Measurements that choose, per machine, what a rule would otherwise decide: the memory
format of each cpu-profile model (training, and scoring under TTA), the backend of the batched
crop-and-flip transform, whether `torch.compile` pays for the cpu models, and whether a
mixture's experts run faster batched as one module than one by one.

Each candidate is timed several times, interleaved with the others, so a slow spell of the
machine does not favour one of them; the median counts.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from torchvision.transforms import v2

from vipnb.bench import _compute_rate, bench_report_target
from vipnb.data.augment import TrainTransform
from vipnb.data.sources import load_run_data
from vipnb.engine.build import build_model
from vipnb.engine.determinism import deterministic_kernels
from vipnb.engine.precision import memory_format
from vipnb.engine.recipe import Recipe, load_recipe
from vipnb.engine.rescore import scoring_model
from vipnb.engine.rundir import RunDir
from vipnb.engine.trainer import Trainer
from vipnb.models.moe import MixtureOfExperts

# The models the cpu profiles train, by the recipe that trains them.
CPU_MODEL_RECIPES = ("baseline_resnet", "moe_rs50", "moe_rs101", "moe_rs_sd200",
                     "moe_regnety080", "moe_effnetb4", "moe_effnetv2s")


def interleaved_medians(candidates: dict[str, Callable[[], float]],
                        repeats: int = 3) -> dict[str, float]:
    """Median of each candidate's rate over `repeats` rounds, candidates taken in turn."""
    rates = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, rate in candidates.items():
            rates[name].append(rate())
    return {name: statistics.median(values) for name, values in rates.items()}


# The cpu models whose training step torch.compile is measured on (a first compile costs
# about a minute each; inductor's on-disk cache makes later ones take seconds): notebook 01's
# EfficientNet and RegNetY analogues train longest of all at `cpu`.
COMPILE_RECIPES = ("moe_rs50", "moe_rs_sd50_n3", "vipf_resnext50", "moe_effnetb4",
                   "moe_regnety080")


def variant_rates(recipe_name: str, variants: dict[str, dict], places: dict,
                  repeats: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Compute-only training images/s of a recipe's cpu model under each variant's overrides
    (its data where `places` say), and the seconds each variant's first steps took (a compile
    happens there)."""
    trainers, first_steps_s = {}, {}
    for name, overrides in variants.items():
        recipe = load_recipe(recipe_name, "cpu", {**overrides, **places})
        trainers[name] = Trainer(recipe, RunDir("/nonexistent-measure-run"),
                                 load_run_data(recipe), torch.device("cpu"), False)
    with deterministic_kernels(recipe):  # the variants differ only in how they compute
        for name, trainer in trainers.items():
            started = time.perf_counter()
            _compute_rate(trainer, 1)
            first_steps_s[name] = time.perf_counter() - started
        rates = interleaved_medians({name: lambda t=t: _compute_rate(t, 6)
                                     for name, t in trainers.items()}, repeats)
    return rates, first_steps_s


def memory_format_rates(recipe_name: str, places: dict, repeats: int = 3) -> dict[str, float]:
    """Compute-only training images/s of a recipe's cpu model, NCHW vs channels_last."""
    return variant_rates(recipe_name, {"nchw": {"channels_last": False},
                                       "channels_last": {"channels_last": True}},
                         places, repeats)[0]


def compile_rates(recipe_name: str, places: dict, repeats: int = 3) -> dict[str, float]:
    """Compute-only training images/s of a recipe's cpu model, eager vs `torch.compile`, and
    the seconds of the compiled model's first steps."""
    rates, first_steps_s = variant_rates(recipe_name, {"eager": {"compile": False},
                                                       "compiled": {"compile": True}},
                                         places, repeats)
    return {**rates, "compiled_first_steps_s": first_steps_s["compiled"]}


# The fusion notebook's cpu stand-ins, whose scoring under TTA at three test sizes costs
# about as much as their training.
SCORING_RECIPES = ("fc_resnest101e_ce", "fc_seresnet101_ce", "fc_skresnext50_ce",
                   "fc_densenet161_ce", "fc_regnetx120_ce")
SCORING_SIZES = (28, 48)


def _scoring_inputs(recipe_name: str,
                    test_size: int) -> tuple[Recipe, torch.nn.Module, torch.Tensor]:
    recipe = load_recipe(recipe_name, "cpu")
    return (recipe, build_model(recipe, 10).eval(),
            torch.randn(recipe.eval_batch_size, 3, test_size, test_size))


@torch.inference_mode()
def _forward_rate(model: torch.nn.Module, batch: torch.Tensor) -> float:
    started = time.perf_counter()
    model(batch)
    return len(batch) / (time.perf_counter() - started)


def scoring_format_rates(recipe_name: str, test_size: int, repeats: int = 3) -> dict[str, float]:
    """Images/s of a cpu model's evaluation forward on a batch of `test_size` px images (what
    `vipnb.engine.rescore` runs once per TTA view), NCHW vs channels_last."""
    _, model, images = _scoring_inputs(recipe_name, test_size)
    layouts = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    # one copy per format, so the timed call is the forward alone
    inputs = {name: (copy.deepcopy(model).to(memory_format=layout),
                     images.contiguous(memory_format=layout)) for name, layout in layouts.items()}
    for name in inputs:  # first calls pick the kernels
        _forward_rate(*inputs[name])
    return interleaved_medians({name: lambda n=name: _forward_rate(*inputs[n]) for name in inputs},
                               repeats)


def scoring_compile_rates(recipe_name: str, test_size: int, repeats: int = 3) -> dict[str, float]:
    """Images/s of a cpu model's evaluation forward in channels_last, eager vs as re-scoring
    compiles it (`compile_scoring`), and the seconds of the compiled model's first call."""
    recipe, model, images = _scoring_inputs(recipe_name, test_size)
    eager = model.to(memory_format=torch.channels_last)
    compiled = scoring_model(copy.deepcopy(eager), replace(recipe, compile_scoring=True))
    batch = images.contiguous(memory_format=torch.channels_last)
    _forward_rate(eager, batch)
    started = time.perf_counter()
    _forward_rate(compiled, batch)
    first_call_s = time.perf_counter() - started
    rates = interleaved_medians({"eager": lambda: _forward_rate(eager, batch),
                                 "compiled": lambda: _forward_rate(compiled, batch)}, repeats)
    return {**rates, "compiled_first_call_s": first_call_s}


def crop_flip_rates(batch: int = 256, cache_size: int = 32, input_size: int = 28,
                    repeats: int = 3) -> dict[str, float]:
    """Images/s of random-resized-crop + flip + normalise on a uint8 batch: vipnb's one
    roi_align call for the batch vs torchvision's v2 transforms image by image."""
    images = torch.randint(0, 256, (batch, 3, cache_size, cache_size), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    batched = TrainTransform(input_size, scale=(0.35, 1.0))
    per_image = v2.Compose([v2.RandomResizedCrop(input_size, scale=(0.35, 1.0), antialias=True),
                            v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(batched.mean, batched.std)])

    def rate(transform: Callable[[], object]) -> float:
        started = time.perf_counter()
        transform()
        return batch / (time.perf_counter() - started)

    return interleaved_medians({
        "roi_align, whole batch": lambda: rate(lambda: batched(images, generator)),
        "torchvision v2, image by image": lambda: rate(
            lambda: torch.stack([per_image(image) for image in images])),
    }, repeats)


# The cpu mixtures of experts of notebook 01 with the most experts per trunk.
EXPERT_RECIPES = ("moe_rs_sd50_n5", "moe_rs_sd101_n3")


def expert_batching_rates(recipe_name: str, repeats: int = 3, steps: int = 3) -> dict[str, float]:
    """Training-step images/s (forward and backward, the recipe's batch, input size and memory
    format) of a cpu mixture of experts: its experts one by one, as `MixtureOfExperts` runs
    them, vs batched as one module (`torch.func.stack_module_state` + `vmap`, which turns each
    convolution of the experts into one grouped convolution). The batched step leaves the
    BatchNorm statistics in the stacked copies; writing them back would only slow it."""
    recipe = load_recipe(recipe_name, "cpu")
    model = build_model(recipe, 10).train()
    if not isinstance(model, MixtureOfExperts):
        raise ValueError(f"{recipe_name} has no experts at cpu")
    layout = memory_format(recipe)
    model = model.to(memory_format=layout)
    images = torch.randn(recipe.batch_size, 3, recipe.input_size,
                         recipe.input_size).contiguous(memory_format=layout)
    template = copy.deepcopy(model.experts[0]).to("meta")

    def batched_logits() -> torch.Tensor:
        params, buffers = torch.func.stack_module_state(list(model.experts))
        shared = model.trunk(images)
        return torch.func.vmap(lambda p, b: torch.func.functional_call(template, (p, b), shared),
                               randomness="different")(params, buffers)

    def rate(logits: Callable[[], torch.Tensor]) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            logits().sum().backward()
        return steps * len(images) / (time.perf_counter() - started)

    candidates = {"one by one": lambda: rate(lambda: model(images)),
                  "batched": lambda: rate(batched_logits)}
    for candidate in candidates.values():  # first calls pick the kernels
        candidate()
    return interleaved_medians(candidates, repeats)


def measure_choices(places: dict, repeats: int = 3) -> dict:
    """Every measurement above, for this machine (the models on the fashion50 that `places`,
    `vipnb.paths.data_places()`, say where to find and decode)."""
    return {
        "crop_flip": {f"{size} px (from {size + size // 7} px)": crop_flip_rates(
            cache_size=size + size // 7, input_size=size, repeats=repeats) for size in (28, 224)},
        "memory_format": {name: memory_format_rates(name, places, repeats)
                          for name in CPU_MODEL_RECIPES},
        "scoring_format": {f"{name} at {size} px": scoring_format_rates(name, size, repeats)
                           for name in SCORING_RECIPES for size in SCORING_SIZES},
        "scoring_compile": {f"{name} at {size} px": scoring_compile_rates(name, size, repeats)
                            for name in SCORING_RECIPES for size in SCORING_SIZES},
        "compile": {name: compile_rates(name, places, repeats) for name in COMPILE_RECIPES},
        "expert_batching": {name: expert_batching_rates(name, repeats)
                            for name in EXPERT_RECIPES},
    }


def _format_lines(rates_by_name: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| recipe (cpu model) | NCHW | channels_last | faster |", "| --- | ---: | ---: | --- |"]
    for name, rates in rates_by_name.items():
        ratio = rates["channels_last"] / rates["nchw"]
        faster = "channels_last" if ratio > 1 else "NCHW"
        lines.append(f"| {name} | {rates['nchw']:.0f} | {rates['channels_last']:.0f} | "
                     f"{faster} (×{max(ratio, 1 / ratio):.2f}) |")
    return lines


def _compile_lines(rates_by_name: dict[str, dict[str, float]], first_key: str,
                   first_title: str) -> list[str]:
    lines = [f"| recipe (cpu model) | eager | compiled | speed-up | {first_title} |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, rates in rates_by_name.items():
        lines.append(f"| {name} | {rates['eager']:.0f} | {rates['compiled']:.0f} | "
                     f"×{rates['compiled'] / rates['eager']:.2f} | {rates[first_key]:.1f} |")
    return lines


def write_choices_report(choices: dict, wall_time_s: float, reports_root=None):
    """reports/bench/choices-<machine>.json and .md, with the report header."""
    import json

    from vipnb.atomic import write_text_atomic

    target, header = bench_report_target("choices", wall_time_s, reports_root)
    write_text_atomic(target.with_suffix(".json"),
                      json.dumps({"header": header.as_dict(), **choices}, indent=1))
    lines = ["# Measured choices: memory format per model, crop-and-flip backend, torch.compile, "
             "batched experts",
             "",
             header.as_markdown(), "## Memory format (compute-only training step, images/s)",
             "", *_format_lines(choices["memory_format"])]
    if choices.get("scoring_format"):
        lines += ["", "## Memory format of scoring (one evaluation forward, images/s)", "",
                  "What `vipnb.engine.rescore` runs once per TTA view and test size; it scores "
                  "in the recipe's format, channels_last for these.", "",
                  *_format_lines(choices["scoring_format"])]
    lines += ["", "## Random-resized crop + flip + normalise of a uint8 batch of 256 (images/s)",
              "", "| output size | " + " | ".join(next(iter(choices["crop_flip"].values())))
              + " |", "| --- | ---: | ---: |"]
    for size, rates in choices["crop_flip"].items():
        lines.append(f"| {size} | " + " | ".join(f"{r:.0f}" for r in rates.values()) + " |")
    if choices.get("scoring_compile"):
        lines += ["", "## torch.compile of scoring (one evaluation forward in channels_last, "
                  "images/s)", "",
                  "What `compile_scoring: true` in a recipe buys `vipnb.engine.rescore`; the first "
                  "call compiles, once per model, test size and batch shape.", "",
                  *_compile_lines(choices["scoring_compile"], "compiled_first_call_s",
                                  "compiled model's first call (s)")]
    if choices.get("compile"):
        lines += ["", "## torch.compile of the training step (compute-only, images/s)", "",
                  *_compile_lines(choices["compile"], "compiled_first_steps_s",
                                  "compiled model's first steps (s)")]
    if choices.get("compile") or choices.get("scoring_compile"):
        lines += ["", "The first steps include compiling, once per model and machine: inductor "
                  "keeps what it compiled on disk, so a later process compiles the same model "
                  "in seconds."]
    if choices.get("expert_batching"):
        lines += ["", "## Experts of one mixture, one by one vs batched (training step, images/s)",
                  "", "`MixtureOfExperts` runs its experts one by one; batched is the same "
                  "experts as one module under `torch.func.vmap`.", "",
                  "| recipe (cpu model) | one by one | batched | speed-up |",
                  "| --- | ---: | ---: | ---: |"]
        for name, rates in choices["expert_batching"].items():
            lines.append(f"| {name} | {rates['one by one']:.0f} | {rates['batched']:.0f} | "
                         f"×{rates['batched'] / rates['one by one']:.2f} |")
    return write_text_atomic(target.with_suffix(".md"), "\n".join(lines) + "\n")
