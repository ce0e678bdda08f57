"""Re-score a finished run under other test-time views, without retraining.

The MoE paper's † values test "with ten crops and a larger size than training" (§3.2): the
whole image is resized to `test_size` (larger than the training input) and scored as ten
crops of the training input size, probabilities averaged. The fusion-coverage paper's test
sizes feed the whole resized image (`crop_size` = `test_size`) under its TTA views. The
model computes as the trainer's evaluation does, in the recipe's memory format and autocast
(channels_last scores the fusion stand-ins 1.15-1.65x as fast on CPU: reports/bench). The
logits are saved in the run directory
(`logits_<split>_<views>_<size>px[_crop<C>][_first<N>][_nhwc][_bf16][_compiled].npz`), so a
rerun reads them back; the last three name how they were computed, so logits computed
otherwise (NCHW or fp32, as before these were named, or eager) are never read in their place.
Where the recipe says `compile_scoring`, the model runs under `torch.compile` (inductor), chosen
per model by measurement: on CPU the whole TTA of a fusion stand-in, its compiles included,
ran 1.16-1.47x as fast for the ResNeSt, SK- and SE-ResNet ones and 0.81x for the DenseNet
(the recipes; reports/bench times the forward alone).
"""

from __future__ import annotations

import functools
import shutil
import warnings
from pathlib import Path

import torch

from vipnb.data.augment import EvalTransform
from vipnb.data.sources import load_run_data
from vipnb.engine.build import load_trained_model
from vipnb.engine.precision import autocast, memory_format, use_bf16
from vipnb.engine.recipe import Recipe
from vipnb.engine.rundir import RunDir, SplitLogits
from vipnb.errors import VipnbError
from vipnb.eval.tta import tta_predict


def rescored_file(run: RunDir, views: str, test_size: int, split: str = "test", limit: int = 0,
                  crop_size: int | None = None,
                  device: str | torch.device | None = None) -> Path:
    """Where `rescore` saves (and finds) these logits of `run`."""
    return run.logits_file(_tag(run.recipe, views, test_size, split, limit, crop_size,
                                _device(device)))


def _tag(recipe: Recipe, views: str, test_size: int, split: str, limit: int,
         crop_size: int | None, device: torch.device) -> str:
    crop_size = crop_size or recipe.input_size
    return (f"{split}_{views}_{test_size}px"
            + (f"_crop{crop_size}" if crop_size != recipe.input_size else "")
            + (f"_first{limit}" if limit else "")
            + ("_nhwc" if recipe.channels_last else "")
            + ("_bf16" if use_bf16(recipe.amp, device) else "")
            + ("_compiled" if compiles_scoring(recipe) else ""))


def default_device() -> torch.device:
    """Where re-scoring runs unless told: the GPU when there is one, as training does."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else default_device()


@functools.cache
def cxx_compiler_on_path() -> bool:
    """Whether inductor finds a C++ compiler to build CPU kernels with (looked up once)."""
    return any(shutil.which(compiler) for compiler in ("c++", "g++", "clang++"))


def compiles_scoring(recipe: Recipe) -> bool:
    """Whether re-scoring compiles: the recipe says `compile_scoring` and inductor has a C++
    compiler (without one torch.compile fails at its first call; re-scoring stays eager and
    its files say so)."""
    if not recipe.compile_scoring:
        return False
    if cxx_compiler_on_path():
        return True
    warnings.warn(f"{recipe.name}: compile_scoring is set but no C++ compiler (c++, g++ or "
                  "clang++) is on PATH for torch.compile; re-scoring runs eagerly. Install one "
                  "(e.g. Debian's g++ or conda's cxx-compiler) to score faster.", stacklevel=2)
    return False


def scoring_model(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """`model` as re-scoring calls it: compiled where `compiles_scoring` says so."""
    if not compiles_scoring(recipe):
        return model
    # Each re-score compiles afresh: dynamo keeps a few graphs per code object, and the timm
    # stand-ins share theirs; inductor reads back from disk what it compiled before.
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def rescore(run: RunDir, views: str, test_size: int, split: str = "test", limit: int = 0,
            device: str | torch.device | None = None,
            crop_size: int | None = None) -> SplitLogits:
    """Logits of `run`'s model on `split` (its first `limit` images; 0: all) under `views`
    of the image resized to `test_size`, crops of `crop_size` (default: the training input
    size), on `device` (default: the GPU when there is one)."""
    device = _device(device)
    recipe = run.recipe
    crop_size = crop_size or recipe.input_size
    tag = _tag(recipe, views, test_size, split, limit, crop_size, device)
    if run.logits_file(tag).exists():
        return run.logits(tag)
    if test_size < crop_size:
        raise VipnbError(f"test_size {test_size} is below the crop size {crop_size} of "
                         f"{recipe.name}: the crops are cut from the resized image")
    source = getattr(load_run_data(recipe), split)
    count = min(limit or len(source), len(source))
    layout = memory_format(recipe)
    model = scoring_model(load_trained_model(recipe, run, len(source.classes), device)
                          .to(memory_format=layout), recipe)
    transform = EvalTransform(test_size, 1.0, tuple(recipe.mean), tuple(recipe.std))
    with autocast(recipe, device):
        outputs = [tta_predict(model, transform(images.to(device)), views, crop_size,
                               mean=tuple(recipe.mean), std=tuple(recipe.std),
                               memory_format=layout)
                   for images, _ in source.batches(torch.arange(count), recipe.eval_batch_size)]
    run.write_logits(tag, torch.cat(outputs).cpu().numpy(), source.labels[:count].numpy(),
                     source.ids[:count], source.classes)
    return run.logits(tag)
