"""Which output channels of a model can be removed together: the channel groups.

A *group* is a set of channels that must shrink together: the output channels of the
layers that make them (Dense, convolutions: the *producers*), joined where their
tensors meet element-wise (`Add`, `Multiply`, ...), through the layers that act on each
channel alone (BatchNormalization, depthwise convolutions, activations, pooling,
padding). Every tensor's channels are described by a *layout*: the segments of groups
that make them up, in order (a `Concatenate` joins layouts), and whether a `Flatten`
spread them over positions. The layers that mix channels (Dense, convolutions) are the
group's *consumers*: their input channels shrink with it.

A group is unsafe, and left alone, when its channels reach something the surgery cannot
follow (a `Reshape`, a model output, a nested model's fixed input, a shared layer, an
activation with f(0) != 0, a layer tfkd does not know); the reasons are kept.
"""

import dataclasses

import keras
import numpy as np

from tfkd import _graph

PRODUCERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_PASS_THROUGH = (
    *_graph.IDENTITY_AT_INFERENCE,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
)
_ACTIVATIONS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)
_ELEMENTWISE = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


@dataclasses.dataclass
class Layout:
    """The channels of one tensor: `(group, count)` segments, and whether flattened."""

    segments: list
    flattened: bool = False

    @property
    def channels(self):
        """The channel count, or None where a segment's is unknown (the model's input)."""
        counts = [count for _, count in self.segments]
        return None if None in counts else sum(counts)


@dataclasses.dataclass
class Group:
    """One group's layers, after the analysis (the root of its union-find set)."""

    index: int
    channels: int
    producers: list = dataclasses.field(default_factory=list)
    members: list = dataclasses.field(default_factory=list)  # BatchNorm, depthwise
    consumers: list = dataclasses.field(default_factory=list)  # Dense, convolutions
    reasons: list = dataclasses.field(default_factory=list)

    @property
    def safe(self):
        return not self.reasons


class ChannelGraph:
    """The channel groups of a Sequential or functional model (nested ones too).

    Attributes:
        groups: the `Group`s, in the order their first producer appears.
        input_layouts: `{id(layer): Layout}` of every leaf layer's first input.
        layers: `{id(layer): layer}` of every leaf layer.
        output_layouts: `{id(layer): Layout}` of every leaf layer's output.
    """

    def __init__(self, model, unwrap=lambda layer: layer):
        self._unwrap = unwrap
        self._parent = []
        self._channels = []
        self._reasons = []
        self._producers = []
        self._members = []
        self.input_layouts = {}
        self.output_layouts = {}
        self.layers = {}
        inputs = [self._fixed("the model's input") for _ in range(len(_input_names(model)))]
        output = self._walk(model, inputs)
        self._taint(output, "its channels are the model's output")
        self.groups = self._collect()

    # Union-find over group numbers.

    def _new(self, channels, reason=None):
        self._parent.append(len(self._parent))
        self._channels.append(channels)
        self._reasons.append([] if reason is None else [reason])
        self._producers.append([])
        self._members.append([])
        return len(self._parent) - 1

    def _root(self, group):
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def _join(self, first, second):
        first, second = self._root(first), self._root(second)
        if first != second:
            self._parent[second] = first
            for table in (self._reasons, self._producers, self._members):
                table[first].extend(table[second])

    def _fixed(self, reason, channels=None):
        return Layout([(self._new(channels, reason), channels)])

    def _taint(self, layout, reason):
        for group, _ in layout.segments:
            reasons = self._reasons[self._root(group)]
            if reason not in reasons:
                reasons.append(reason)

    # Walking the graph.

    def _walk(self, model, inputs):
        """The layout of `model`'s output, given its inputs' layouts."""
        outputs = {}
        if isinstance(model, keras.Sequential):
            layout = inputs[0] if inputs else self._fixed("the model's input")
            for layer in model.layers:
                layout = self._visit(layer, [layout])
            return layout
        names = _input_names(model)
        outputs.update(zip(names, inputs))
        config = model.get_config()
        by_name = {layer.name: layer for layer in model.operations}
        for entry in config["layers"]:
            if entry["name"] in outputs:
                continue
            layer = by_name[entry["name"]]
            nodes = entry.get("inbound_nodes", [])
            producers = _graph._history_names(nodes)
            ins = [outputs[name] for name in producers]
            if len(nodes) > 1:
                for layout in ins:
                    self._taint(layout, f"layer {layer.name!r} is called more than once")
                outputs[layer.name] = self._fixed(f"layer {layer.name!r} is shared")
                continue
            outputs[layer.name] = self._visit(layer, ins)
        names = [entry[0] for entry in _graph._flatten_names(config["output_layers"])]
        for extra in names[1:]:
            self._taint(outputs[extra], "its channels are a model output")
        return outputs[names[0]]

    def _visit(self, layer, ins):
        if isinstance(layer, keras.Model) and _graph.is_graph_model(layer):
            for layout in ins:
                self._taint(layout, f"they enter nested model {layer.name!r}, whose input is fixed")
            inner = [self._fixed(f"the input of nested model {layer.name!r}") for _ in ins]
            layout = self._walk(layer, inner)
            if len(keras.tree.flatten(layer.outputs)) > 1:
                reason = f"they leave nested model {layer.name!r}, which has several outputs"
                self._taint(layout, reason)
                return self._fixed(reason)
            return layout
        inner = self._unwrap(layer)
        self.layers[id(layer)] = layer
        if ins:
            self.input_layouts[id(layer)] = ins[0]
        layout = self._layout_after(layer, inner, ins)
        self.output_layouts[id(layer)] = layout
        return layout

    def _layout_after(self, layer, inner, ins):
        reason = _unfollowable(inner, ins)
        if reason is not None:
            for layout in ins:
                self._taint(layout, reason)
            return self._fixed(reason, _out_channels(inner))
        if isinstance(inner, PRODUCERS):
            group = self._new(_out_channels(inner))
            self._producers[group].append(layer)
            return Layout([(group, _out_channels(inner))])
        if isinstance(inner, (keras.layers.BatchNormalization, *DEPTHWISE)):
            if len(ins[0].segments) > 1:
                reason = f"{type(inner).__name__} {layer.name!r} acts on concatenated channels"
                self._taint(ins[0], reason)
                return self._fixed(reason, ins[0].channels)
            for group, _ in ins[0].segments:
                self._members[self._root(group)].append(layer)
        if isinstance(inner, _ELEMENTWISE):
            return self._merge(layer, ins)
        if isinstance(inner, keras.layers.Concatenate):
            joined = Layout([segment for layout in ins for segment in layout.segments])
            if any(count is None for _, count in joined.segments):
                self._taint(joined, f"{layer.name!r} joins them with channels of unknown count")
            return joined
        if isinstance(inner, keras.layers.Flatten):
            return Layout(ins[0].segments, flattened=True)
        return ins[0]

    def _merge(self, layer, ins):
        shapes = {tuple(count for _, count in layout.segments) for layout in ins}
        if len(shapes) > 1 or any(layout.flattened != ins[0].flattened for layout in ins):
            reason = f"{type(layer).__name__} {layer.name!r} joins unlike channel layouts"
            for layout in ins:
                self._taint(layout, reason)
            return ins[0]
        for layout in ins[1:]:
            for (first, _), (second, _) in zip(ins[0].segments, layout.segments):
                self._join(first, second)
        return ins[0]

    def _collect(self):
        groups = {}
        for group in range(len(self._parent)):
            root = self._root(group)
            if self._producers[root] and root not in groups:
                groups[root] = Group(
                    index=len(groups),
                    channels=self._channels[root],
                    producers=self._producers[root],
                    members=self._members[root],
                    reasons=self._reasons[root],
                )
        self._by_root = groups
        for layer_id, layout in self.input_layouts.items():
            for group, _ in layout.segments:
                found = groups.get(self._root(group))
                layer = self.layers[layer_id]
                if found is not None and isinstance(self._unwrap(layer), PRODUCERS):
                    if layer not in found.consumers:
                        found.consumers.append(layer)
        return list(groups.values())

    def group_of(self, group_number):
        """The `Group` a layout segment's group number belongs to, or None (an input)."""
        return self._by_root.get(self._root(group_number))


def _input_names(model):
    if isinstance(model, keras.Sequential):
        return ["input"]
    config = model.get_config()
    return [entry[0] for entry in _graph._flatten_names(config["input_layers"])]


def _out_channels(layer):
    if isinstance(layer, keras.layers.Dense):
        return layer.units
    if isinstance(layer, PRODUCERS):
        return layer.filters
    return None


def _unfollowable(layer, ins):
    """Why the channels entering (or made by) `layer` cannot shrink through it, or None."""
    name = f"{type(layer).__name__} {layer.name!r}"
    if any(layout.flattened for layout in ins) and not isinstance(
        layer, (keras.layers.Dense, keras.layers.Dropout)
    ):
        return f"they are flattened into {name}, which is not Dense"
    if _graph.is_foreign_wrapper(layer):
        return f"{name} wraps another layer, whose channels it keeps whole"
    if isinstance(layer, keras.layers.Wrapper):
        return f"{name} wraps another layer (strip tfkd's wrappers first)"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"{name} is channels_first"
    if isinstance(layer, PRODUCERS):
        if getattr(layer, "groups", 1) != 1:
            return f"{name} is a grouped convolution"
        if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
            return f"{name} is quantized or has LoRA"
        return None
    if isinstance(layer, DEPTHWISE):
        return None if layer.depth_multiplier == 1 else f"{name} has depth_multiplier > 1"
    if isinstance(layer, keras.layers.BatchNormalization):
        return (
            None
            if layer.axis in (-1, [-1]) or _is_last_axis(layer)
            else f"{name} is not over channels"
        )
    if isinstance(layer, _ACTIVATIONS):
        return None if _keeps_zero(layer) else f"{name} does not map 0 to 0"
    if isinstance(layer, keras.layers.Concatenate):
        last = layer.axis == -1 or layer.axis == _rank(layer) - 1
        return None if last else f"{name} does not join on the channel axis"
    if isinstance(
        layer, (_PASS_THROUGH, _ELEMENTWISE, keras.layers.Flatten, keras.layers.InputLayer)
    ):
        return None
    return f"they reach {name}, which the surgery cannot follow"


def _is_last_axis(layer):
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    return axis == _rank(layer) - 1


def _rank(layer):
    """The rank of `layer`'s input (the layers asked about keep it), or 0 when it was
    neither called in a graph nor built. A layer inside tfkd's wrapper was never called
    in the graph, only built: before, a BatchNormalization(axis=3) (ResNet50's) read as
    not over channels there, and `shrink` cut its producer but not the consumer."""
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return _graph.built_rank(layer) or 0


def _keeps_zero(layer):
    """Whether the activation `layer` acts on each value alone and maps 0 to 0."""
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    if "softmax" in name:
        return False
    zeros = np.zeros((1, 3), "float32")
    values = keras.ops.convert_to_numpy(layer(zeros))
    return bool(np.all(values == 0))


def flat_spread(layout, rows):
    """How many positions a `Flatten` spread `layout`'s channels over, from the `rows` of
    the Dense kernel that reads it."""
    return 1 if not layout.flattened else rows // max(layout.channels or 1, 1)


def spread_indices(kept, total, positions):
    """Rows of a Dense kernel to keep after a Flatten of `positions` x `total` channels,
    channels last, keeping the channels `kept`."""
    return (np.arange(positions)[:, None] * total + np.asarray(kept)[None, :]).reshape(-1)
