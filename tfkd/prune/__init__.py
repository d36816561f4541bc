"""Magnitude pruning for Keras 3 models, on every backend, in the same loop as distillation."""

from tfkd.prune.pruning import PruningSummary, follows_pattern, prune, strip, summary
from tfkd.prune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfkd.prune.wrapper import PrunedLayer, PruningGroup

__all__ = [
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunedLayer",
    "PruningGroup",
    "PruningSchedule",
    "PruningSummary",
    "follows_pattern",
    "prune",
    "strip",
    "summary",
]
