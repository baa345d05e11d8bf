"""The learning-rate finder's import path before it moved to :mod:`circles.callbacks.lr_finder`:
configs that add it as ``circles.inside.LearningRateReport`` (``configs/trainer/lr_find.yaml``
did) still run."""

from circles.callbacks.lr_finder import LearningRateReport

__all__ = ["LearningRateReport"]
