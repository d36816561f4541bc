"""Pruning for Keras 3 models, on every backend, in the same loop as distillation: magnitude
pruning (sparse kernels) and channel pruning (smaller layers)."""

from tfkd.prune.channel_mask import ChannelGroup, ChannelMask
from tfkd.prune.channels import ChannelPlan, channel_groups, prune_channels, shrink
from tfkd.prune.pruning import PruningSummary, follows_pattern, prune, strip, summary
from tfkd.prune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfkd.prune.wrapper import PrunedLayer, PruningGroup

__all__ = [
    "ChannelGroup",
    "ChannelMask",
    "ChannelPlan",
    "ConstantSparsity",
    "PolynomialDecay",
    "PrunedLayer",
    "PruningGroup",
    "PruningSchedule",
    "PruningSummary",
    "channel_groups",
    "follows_pattern",
    "prune",
    "prune_channels",
    "shrink",
    "strip",
    "summary",
]
