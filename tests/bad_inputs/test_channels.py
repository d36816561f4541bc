"""Bad inputs to channel pruning fail early, naming the argument and value."""

import keras
import numpy as np

from tests.bad_inputs._cases import Case, check, parametrize
from tfkd import pipeline, prune

EXEMPT = {
    "tfkd.prune.ChannelPlan": "a result type: tfkd.prune.channel_groups returns it",
}


def _model():
    layers = [keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2, name="logits")]
    return keras.Sequential([keras.Input((4,)), *layers], name="tiny")


def _subclassed():
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    return Subclassed(name="sub")


def _mask(layer=None, schedule=0.5, group=None, **kwargs):
    layer = keras.layers.Dense(2) if layer is None else layer
    group = prune.ChannelGroup() if group is None else group
    return prune.ChannelMask(layer, schedule, group, **kwargs)


CASES = [
    Case(prune.ChannelGroup, lambda: prune.ChannelGroup(name=5), TypeError, "name", "5"),
    Case(prune.ChannelGroup, lambda: prune.ChannelGroup(name=""), TypeError, "name", "''"),
    Case(prune.ChannelGroup, lambda: prune.ChannelGroup(size=0), ValueError, "size", "0"),
    Case(prune.ChannelMask, lambda: _mask(layer="dense"), TypeError, "layer", "'dense'"),
    Case(prune.ChannelMask, lambda: _mask(group="g"), TypeError, "group", "'g'"),
    Case(prune.ChannelMask, lambda: _mask(importance="l3"), ValueError, "importance", "'l3'"),
    Case(prune.ChannelMask, lambda: _mask(schedule=1.5), ValueError, "target_sparsity", "1.5"),
    Case(
        prune.ChannelMask,
        lambda: _mask(layer=keras.layers.Flatten(name="flat")),
        TypeError,
        "Flatten",
        "'flat'",
    ),
    Case(prune.channel_groups, lambda: prune.channel_groups("m"), TypeError, "model", "str"),
    Case(prune.channel_groups, lambda: prune.channel_groups(None), TypeError, "model", "None"),
    Case(
        prune.channel_groups,
        lambda: prune.channel_groups(_subclassed()),
        TypeError,
        "model",
        "'sub'",
    ),
    Case(
        prune.prune_channels,
        lambda: prune.prune_channels(_model(), 1.5),
        ValueError,
        "target_sparsity",
        "1.5",
    ),
    Case(
        prune.prune_channels,
        lambda: prune.prune_channels(_model(), 0.5, importance="big"),
        ValueError,
        "importance",
        "'big'",
    ),
    Case(
        prune.prune_channels,
        lambda: prune.prune_channels(_model(), 0.5, include=["nope"]),
        ValueError,
        "include",
        "['nope']",
    ),
    Case(
        prune.prune_channels,
        lambda: prune.prune_channels(_model(), 0.5, include=[3]),
        TypeError,
        "include",
        "3",
    ),
    Case(prune.shrink, lambda: prune.shrink(_model(), 1.5), ValueError, "sparsity", "1.5"),
    Case(prune.shrink, lambda: prune.shrink(_model(), "half"), ValueError, "sparsity", "'half'"),
    Case(
        prune.shrink,
        lambda: prune.shrink(_model(), 0.5, importance="l0"),
        ValueError,
        "importance",
        "'l0'",
    ),
    Case(
        pipeline.PruneChannels,
        lambda: pipeline.PruneChannels(importance="big"),
        ValueError,
        "importance",
        "'big'",
    ),
    Case(
        pipeline.PruneChannels,
        lambda: pipeline.PruneChannels(target_sparsity=1.0),
        ValueError,
        "target_sparsity",
        "1.0",
    ),
    Case(
        pipeline.PruneChannels,
        lambda: pipeline.PruneChannels(pattern="2:4"),
        TypeError,
        "pattern",
        "'2:4'",
    ),
    Case(
        pipeline.PruneChannels,
        lambda: pipeline.PruneChannels(exclude="conv1"),
        TypeError,
        "exclude",
        "'conv1'",
    ),
    Case(
        prune.shrink,
        lambda: prune.shrink(keras.Sequential([keras.layers.Dense(2)], name="unbuilt"), 0.5),
        ValueError,
        "model",
        "'unbuilt'",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)


def test_numpy_scalars_pass_where_numbers_do():
    shrunk = prune.shrink(_model(), np.float32(0.5))
    assert shrunk.get_layer("hidden").units == 2
    masked = prune.prune_channels(_model(), np.float64(0.5))
    assert isinstance(masked.get_layer("hidden"), prune.ChannelMask)
