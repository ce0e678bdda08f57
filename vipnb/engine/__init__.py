"""Training: recipes, the trainer, checkpoints and run directories."""

from vipnb.engine.recipe import Recipe, load_recipe
from vipnb.engine.rundir import RunDir
from vipnb.engine.training import train

__all__ = ["Recipe", "RunDir", "load_recipe", "train"]
