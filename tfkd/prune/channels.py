"""Channel pruning: `prune_channels` masks whole output channels during `fit`, and
`shrink` removes them, returning a smaller plain Keras model."""

import keras
import numpy as np

from tfkd import _checks, _graph
from tfkd.prune import schedules
from tfkd.prune._channel_graph import PRODUCERS, ChannelGraph, flat_spread, spread_indices
from tfkd.prune.channel_mask import ChannelGroup, ChannelMask, check_importance, group_scores
from tfkd.prune.pruning import _selector

_SUBCLASSED_FIX = "Build the model with the functional API or as a keras.Sequential."


class ChannelPlan:
    """The channel groups of a model; `str()` gives a table.

    Attributes:
        groups: one dict per group: `producers` (names of the layers that make its
            channels), `members` (BatchNormalization and depthwise layers on them),
            `consumers` (layers whose input channels shrink with them), `channels`,
            and `reasons` (why the group cannot shrink; empty when it can).
        skipped: `{layer name: reasons}` for the producers that are left alone.
    """

    def __init__(self, groups):
        self.groups = groups
        self.skipped = {
            name: group["reasons"]
            for group in groups
            if group["reasons"]
            for name in group["producers"]
        }

    def __str__(self):
        lines = [f"{'producers':<40}{'channels':>9}  shrinks"]
        for group in self.groups:
            verdict = "yes" if not group["reasons"] else "no: " + "; ".join(group["reasons"])
            lines.append(
                f"{', '.join(group['producers'])[:39]:<40}{group['channels']:>9}  {verdict}"
            )
        return "\n".join(lines)

    def __repr__(self):
        safe = sum(not group["reasons"] for group in self.groups)
        return f"ChannelPlan(groups={len(self.groups)}, shrinkable={safe})"


def channel_groups(model):
    """Finds which output channels of `model` can be removed, and which layers are left alone.

    Args:
        model: a Sequential or functional Keras model; nested ones are descended into.

    Returns:
        A `ChannelPlan`.

    Raises:
        TypeError: `model` is not a Sequential or functional Keras model.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="hidden"),
    ...                           keras.layers.Dense(2, name="logits")])
    >>> tfkd.prune.channel_groups(model).skipped
    {'logits': ["its channels are the model's output"]}
    """
    _graph.require_graph_model(model, "tfkd.prune.channel_groups", _SUBCLASSED_FIX)
    graph = ChannelGraph(model, _unwrap)
    return ChannelPlan([_describe(graph, group) for group in graph.groups])


def prune_channels(model, schedule, *, importance="l1", include=None, exclude=None):
    """Returns a copy of `model` whose layers lose whole output channels while it trains.

    Every group of channels that can shrink (see `channel_groups`) gets a mask that
    follows `schedule`: at each update, the fraction of the group's channels the schedule
    names, those of lowest `importance`, are zeroed and stay zero. Train the result with
    `fit`, or as a `tfkd.Distiller` student, then call `shrink` for a smaller plain model.
    `model` itself is not changed.

    Args:
        model: a Sequential or functional Keras model.
        schedule: a `tfkd.prune.PruningSchedule`, or a fraction of channels in [0, 1) for
            `ConstantSparsity`.
        importance: `"l1"`, `"l2"`, `"batch_norm"` or `"taylor"` (see `ChannelMask`).
            Defaults to `"l1"`.
        include: the layers whose output channels to prune (names, regular expressions,
            classes, or a function `layer -> bool`). Defaults to every group that can
            shrink.
        exclude: layers whose channels to keep, in the same forms. Defaults to none.

    Returns:
        A new Keras model with `ChannelMask` layers, compiled as `model` was (as
        `keras.models.clone_model` makes it): compile it to choose its optimizer.

    Raises:
        TypeError: `model` is not Sequential or functional.
        ValueError: a bad schedule or importance, a layer name that does not exist, an
            included layer whose channels cannot shrink (the reason is named), or
            nothing to prune.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
    ...                           keras.layers.Dense(2)])
    >>> masked = tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1))
    >>> masked.compile(optimizer="adam", loss="mse")
    >>> _ = masked.fit(np.random.rand(32, 8), np.random.rand(32, 2), epochs=1, verbose=0)
    >>> tfkd.prune.shrink(masked).layers[0].units
    8
    """
    _graph.require_graph_model(model, "tfkd.prune.prune_channels", _SUBCLASSED_FIX)
    schedule = schedules.get(schedule)
    check_importance(importance)
    _refuse_wrapped(model)
    graph = ChannelGraph(model)
    selected = _selected_groups(model, graph, include, exclude)
    groups = {}
    for group in selected:
        shared = ChannelGroup()
        for layer in group.producers + group.members:
            groups[id(layer)] = shared

    def transform(layer):
        if id(layer) not in groups:
            return None
        wrapper = ChannelMask(_graph.copy_layer(layer), schedule, groups[id(layer)], importance)
        return wrapper, lambda new, old=layer: _copy_weights(new, old)

    return _graph.rebuild(model, transform)


def shrink(model, sparsity=None, *, importance="l1", include=None, exclude=None):
    """Returns a smaller plain Keras model without the channels that are pruned.

    For a model from `prune_channels`, the channels its masks zeroed are removed. For
    any other model, `sparsity` removes that fraction of each group's channels at once,
    those of lowest `importance` (then fine-tune, ideally with distillation). Each
    producer, its BatchNormalization and depthwise layers, the layers joined with it by
    an `Add` or `Concatenate`, and the input channels of the layers that read them (a
    Dense after a `Flatten` too) shrink together. On a masked model the outputs do not
    change (activations between map 0 to 0, or the group is left alone).

    Args:
        model: a Sequential or functional Keras model, built.
        sparsity: for an unmasked model, the fraction of channels in [0, 1) to remove
            from every group. Defaults to `None` (the model must be masked).
        importance: for `sparsity`: `"l1"`, `"l2"` or `"batch_norm"`. Defaults to `"l1"`.
        include: for `sparsity`: the layers whose channels to remove. Defaults to all
            that can shrink.
        exclude: for `sparsity`: layers to keep whole. Defaults to none.

    Returns:
        A new Keras model with fewer channels, without tfkd layers.

    Raises:
        TypeError: `model` is not Sequential or functional.
        ValueError: the model is not built, `sparsity` is missing (or given for a masked
            model), or a bad importance.
    """
    _graph.require_graph_model(model, "tfkd.prune.shrink", _SUBCLASSED_FIX)
    if not model.built:
        raise ValueError(
            "`model` is not built, so it has no channels to remove. Received: "
            f"model={model.name!r}, never called. Call it on data or build it "
            "(`model.build((None, ...))`) first."
        )
    masked = any(isinstance(layer, ChannelMask) for layer in _graph.leaf_layers(model))
    graph = ChannelGraph(model, _unwrap)
    if masked:
        given = {"include": include, "exclude": exclude}
        given = {name: value for name, value in given.items() if value is not None}
        if importance != "l1":
            given["importance"] = importance
        if given:
            raise ValueError(
                f"Model {model.name!r} is channel-pruned already: its masks say what to "
                f"remove. Received: {', '.join(f'{k}={v!r}' for k, v in given.items())}. "
                "Call shrink(model) without them."
            )
        if sparsity is not None:
            raise ValueError(
                f"Model {model.name!r} is channel-pruned already: its masks say what to "
                f"remove. Received: sparsity={sparsity!r}. Call shrink(model) without it."
            )
        kept = _kept_from_masks(graph)
    else:
        kept = _kept_by_importance(model, graph, sparsity, importance, include, exclude)
    return _graph.rebuild(model, lambda layer: _shrunk(graph, kept, layer))


def _copy_weights(wrapper, layer):
    """Gives `wrapper`'s layer the weights of `layer`, the Taylor estimate's start too
    (built before the copy, it started from the random initial kernel)."""
    _graph.set_weights(wrapper.layer, layer.get_weights())
    if hasattr(wrapper, "previous_kernel"):
        wrapper.restart_taylor()


def _unwrap(layer):
    return layer.layer if isinstance(layer, ChannelMask) else layer


def _describe(graph, group):
    return {
        "producers": [layer.name for layer in group.producers],
        "members": [layer.name for layer in group.members],
        "consumers": [layer.name for layer in group.consumers],
        "channels": group.channels,
        "reasons": list(group.reasons),
    }


def _refuse_wrapped(model):
    for layer in _graph.leaf_layers(model):
        if _graph.is_tfkd_wrapper(layer):
            fix = (
                "Call tfkd.prune.shrink(model) first."
                if isinstance(layer, ChannelMask)
                else "Call tfkd.prune.strip(model) first (or prune channels before QAT)."
            )
            raise ValueError(
                f"Model {model.name!r} holds wrapped layer {layer.name!r} "
                f"({type(layer).__name__}); channels are pruned on plain layers. {fix}"
            )


def check_selection(model, *, include=None, exclude=None):
    """Raises what `prune_channels` raises for `include` and `exclude` on `model`, before
    any work: a name that names no layer, an included layer that cannot shrink, or
    nothing to prune."""
    _selected_groups(model, ChannelGraph(model), include, exclude)


def _selected_groups(model, graph, include, exclude):
    names = {layer.name for layer in _graph.leaf_layers(model)}
    include_test = _selector("include", include, names)
    exclude_test = _selector("exclude", exclude, names)
    selected = []
    for group in graph.groups:
        layers = group.producers + group.members
        if exclude_test is not None and any(exclude_test(layer) for layer in layers):
            continue
        wanted = include_test is None or any(include_test(layer) for layer in layers)
        if wanted and not group.safe and include_test is not None:
            raise ValueError(
                f"Layer(s) {[p.name for p in group.producers]} were selected by `include`, "
                f"but their channels cannot shrink: {'; '.join(group.reasons)}. Remove them "
                "from `include`, or change the model so that their channels reach only "
                "layers the surgery follows (see tfkd.prune.channel_groups(model))."
            )
        if wanted and group.safe:
            selected.append(group)
    if not selected:
        raise ValueError(
            "Nothing to prune: no selected group of channels can shrink. Received: "
            f"include={include!r}, exclude={exclude!r}. The groups:\n"
            + str(ChannelPlan([_describe(graph, group) for group in graph.groups]))
        )
    return selected


def _kept_from_masks(graph):
    kept = {}
    for group in graph.groups:
        wrapped = [layer for layer in group.producers if isinstance(layer, ChannelMask)]
        if not wrapped:
            continue
        mask = keras.ops.convert_to_numpy(wrapped[0].group.leader.mask)
        kept[group.index] = np.flatnonzero(mask > 0)
    return kept


def _kept_by_importance(model, graph, sparsity, importance, include, exclude):
    if not _checks.is_number(sparsity) or not 0 <= sparsity < 1:
        raise ValueError(
            "`sparsity` must be the fraction of channels to remove, a number in [0, 1), "
            f"for a model that is not channel-pruned. Received: sparsity={sparsity!r}."
        )
    if importance == "taylor":
        raise ValueError(
            "`importance='taylor'` needs gradients from training. Received: "
            "importance='taylor' in shrink. Use prune_channels(..., importance='taylor') "
            "and fit, or importance='l1', 'l2' or 'batch_norm' here."
        )
    check_importance(importance)
    kept = {}
    for group in _selected_groups(model, graph, include, exclude):
        scores = _one_shot_scores(group, importance)
        remove = min(int(np.floor(sparsity * group.channels)), group.channels - 1)
        order = np.argsort(-scores, kind="stable")
        kept[group.index] = np.sort(order[: group.channels - remove])
    return kept


def _one_shot_scores(group, importance):
    batch_norms = [m for m in group.members if isinstance(m, keras.layers.BatchNormalization)]
    kernels = [producer.kernel for producer in group.producers]
    return keras.ops.convert_to_numpy(group_scores(kernels, batch_norms, importance))


def _indices(graph, kept, layout):
    """Which of `layout`'s channels survive, as indices, or None when all do."""
    groups = [graph.group_of(number) for number, _ in layout.segments]
    if not any(group is not None and group.index in kept for group in groups):
        return None
    parts, offset = [], 0
    for number, count in layout.segments:
        group = graph.group_of(number)
        local = kept.get(group.index) if group is not None else None
        parts.append(offset + (np.arange(count) if local is None else local))
        offset += count
    indices = np.concatenate(parts) if parts else np.arange(0)
    return None if len(indices) == offset else indices


def _shrunk(graph, kept, layer):
    inner = _unwrap(layer)
    layout_in = graph.input_layouts.get(id(layer))
    channels = None if layout_in is None else _indices(graph, kept, layout_in)
    outputs = None
    layout_out = graph.output_layouts.get(id(layer))
    if layout_out is not None and isinstance(inner, PRODUCERS):
        outputs = _indices(graph, kept, layout_out)
    if channels is None and outputs is None and inner is layer:
        return None
    config = inner.get_config()
    if outputs is not None:
        config["units" if isinstance(inner, keras.layers.Dense) else "filters"] = len(outputs)
    new_layer = type(inner).from_config(config)
    weights = [np.asarray(w) for w in inner.get_weights()]
    if isinstance(inner, PRODUCERS):
        weights = _producer_weights(inner, weights, layout_in, channels, outputs)
    elif channels is not None:
        weights = [np.take(w, channels, axis=-2 if w.ndim > 1 else 0) for w in weights]
    return new_layer, lambda new: _graph.set_weights(new, weights)


def _producer_weights(layer, weights, layout_in, channels, outputs):
    kernel = weights[0]
    if channels is not None:
        positions = flat_spread(layout_in, kernel.shape[-2])
        if positions > 1:
            channels = spread_indices(channels, layout_in.channels, positions)
        kernel = np.take(kernel, channels, axis=-2)
    if outputs is not None:
        kernel = kernel[..., outputs]
        weights = [kernel] + [w[outputs] for w in weights[1:]]
    else:
        weights = [kernel] + weights[1:]
    return weights
