"""`ChannelMask`: zeroes whole output channels of a layer while the model trains, one
mask per channel group, so `tfkd.prune.shrink` can then remove them."""

import keras
from keras import ops

from tfkd import _checks
from tfkd._wrapper import is_frozen
from tfkd.prune import schedules
from tfkd.prune._channel_graph import DEPTHWISE, PRODUCERS
from tfkd.prune.wrapper import PruningGroup, _group_joined, _join_group, saved_schedule

IMPORTANCES = _checks.CHANNEL_IMPORTANCES


def channel_scores(kernel, importance="l1"):
    """The `"l1"` or `"l2"` norm of each output channel (last axis) of `kernel`."""
    flat = ops.reshape(kernel, (-1, kernel.shape[-1]))
    if importance == "l2":
        return ops.sqrt(ops.sum(ops.square(flat), axis=0))
    return ops.sum(ops.abs(flat), axis=0)


def taylor_step(kernel, previous):
    """`|sum over each output channel of w * (w - w_previous)|`: one step's first-order
    Taylor estimate of the loss change from removing the channel (`w * gradient`), with
    the gradient read from the optimizer's update, up to the learning rate."""
    return ops.abs(ops.sum(ops.reshape(kernel * (kernel - previous), (-1, kernel.shape[-1])), 0))


def group_scores(kernels, batch_norms, importance):
    """A group's channel importance from its producers' `kernels` and its
    BatchNormalization layers: `"batch_norm"` sums |gamma| (falling back to `"l1"` where a
    BatchNormalization has no scale, or there is none), `"l1"`/`"l2"` sum kernel norms."""
    if importance == "batch_norm":
        if batch_norms and all(layer.scale for layer in batch_norms):
            return sum(ops.abs(layer.gamma) for layer in batch_norms)
        importance = "l1"
    return sum(channel_scores(kernel, importance) for kernel in kernels)


def keep_mask(scores, mask, sparsity):
    """Keeps the `ceil((1 - sparsity) * channels)` best-scored channels (at least one)
    among those `mask` still keeps; removed channels never come back."""
    channels = scores.shape[0]
    remove = ops.minimum(
        ops.cast(ops.floor(ops.cast(sparsity, "float32") * channels), "int32"), channels - 1
    )
    scores = ops.where(mask > 0, ops.cast(scores, "float32"), -1.0)
    ranks = ops.argsort(ops.argsort(-scores))
    return ops.cast(ops.less(ranks, channels - remove), mask.dtype)


class ChannelGroup(PruningGroup):
    """The `ChannelMask`s of the layers whose channels shrink together (joined by an `Add`,
    or a convolution and its BatchNormalization). The first member holds the mask."""

    @property
    def leader(self):
        return self.members[0]

    def frozen(self):
        """Whether a layer that makes the group's channels is frozen (`trainable = False`):
        the mask then stays as it is, as a frozen layer's pruning mask does. A frozen
        BatchNormalization (the usual way to fine-tune) does not hold it."""
        return any(is_frozen(m) for m in self.members if m.role == "producer")

    def scores(self, importance):
        producers = [m for m in self.members if m.role == "producer"]
        kernels = [m.layer.kernel for m in producers]
        if importance == "taylor":  # ties (no update seen yet) broken by the l1 norm
            taylor = sum(ops.convert_to_tensor(m.taylor_score) for m in producers)
            return taylor + 1e-9 * group_scores(kernels, [], "l1")
        batch_norms = [m.layer for m in self.members if m.role == "batch_norm"]
        return group_scores(kernels, batch_norms, importance)


@keras.saving.register_keras_serializable(package="tfkd")
class ChannelMask(keras.layers.Wrapper):
    """Multiplies the output channels of `layer` by its group's 0/1 channel mask.

    The group's first member recomputes the mask in training calls at the steps the
    schedule names, keeping the channels with the highest importance; the others read it,
    so a convolution, its BatchNormalization and the layers an `Add` joins it with lose
    the same channels. While a layer making the group's channels is frozen
    (`trainable = False`), the mask and step stay as they are. Use
    `tfkd.prune.prune_channels` to wrap a whole model, and `tfkd.prune.shrink` to remove
    the masked channels.

    Args:
        layer: a Dense or convolution layer (it makes the channels), a
            BatchNormalization or a depthwise convolution (it acts on each channel).
        schedule: a `tfkd.prune.PruningSchedule`, or a fraction of channels for
            `ConstantSparsity`.
        group: the `ChannelGroup` this layer's channels belong to.
        importance: `"l1"` or `"l2"` (norm of each channel's weights), `"batch_norm"`
            (|gamma| of the group's BatchNormalization) or `"taylor"` (|w * gradient|
            summed per channel and accumulated over the steps). Defaults to `"l1"`.
        **kwargs: passed to `keras.layers.Layer`; the name defaults to the layer's.
    """

    def __init__(self, layer, schedule, group, importance="l1", **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`layer` must be a Keras layer (Dense, a convolution, BatchNormalization or "
                f"a depthwise convolution). Received: layer={layer!r:.80} of type "
                f"{type(layer).__name__}."
            )
        if not isinstance(group, ChannelGroup):
            raise TypeError(
                "`group` must be a tfkd.prune.ChannelGroup shared by the layers whose "
                f"channels shrink together. Received: group={group!r:.80} of type "
                f"{type(group).__name__}."
            )
        check_importance(importance)
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("trainable", layer.trainable)  # as `KernelWrapper` does
        super().__init__(layer, **kwargs)
        self.role = _role(layer)
        self.schedule = schedules.get(schedule)
        self.importance = importance
        self.group = group
        group.members.append(self)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        if self.group.leader is self:
            channels = self.layer.compute_output_shape(input_shape)[-1]
            self.mask = self.add_weight(
                name="mask", shape=(channels,), initializer="ones", trainable=False
            )
            self.pruning_step = self.add_weight(
                name="pruning_step", shape=(), initializer="zeros", trainable=False, dtype="int32"
            )
        if self.role == "producer" and self.importance == "taylor":
            kernel = self.layer.kernel
            self.previous_kernel = self.add_weight(
                name="previous_kernel", shape=kernel.shape, initializer="zeros", trainable=False
            )
            self.restart_taylor()
            self.taylor_score = self.add_weight(
                name="taylor_score", shape=(kernel.shape[-1],), initializer="zeros", trainable=False
            )
        self.built = True

    def call(self, inputs, training=False, **kwargs):
        # The arguments the wrapped layer's graph node recorded (a BatchNormalization's
        # `mask`) pass through, so a shrunk model can call the plain layer with them.
        outputs = self.layer(inputs, training=training, **kwargs)
        if training and not self.group.frozen():
            if self.role == "producer" and self.importance == "taylor":
                self._update_taylor_score()
            if self.group.leader is self:
                self._update_mask()
        mask = ops.convert_to_tensor(self.group.leader.mask)
        return outputs * ops.cast(mask, outputs.dtype)

    def _update_taylor_score(self):
        kernel = ops.convert_to_tensor(self.layer.kernel)
        self.taylor_score.assign(self.taylor_score + taylor_step(kernel, self.previous_kernel))
        self.previous_kernel.assign(kernel)

    def restart_taylor(self):
        """Starts the `"taylor"` estimate from the kernel the layer holds now: call it
        after setting the wrapped layer's weights, or the first step scores the change
        from the kernel the layer was built with."""
        self.previous_kernel.assign(self.layer.kernel)

    def _update_mask(self):
        step = ops.convert_to_tensor(self.pruning_step)
        mask = ops.cond(
            self.schedule.should_update(step),
            lambda: keep_mask(
                self.group.scores(self.importance),
                ops.convert_to_tensor(self.mask),
                self.schedule(step),
            ),
            lambda: ops.convert_to_tensor(self.mask),
        )
        self.mask.assign(mask)
        self.pruning_step.assign(step + 1)

    def kept_channels(self):
        """The number of channels the group's mask keeps now."""
        return int(ops.convert_to_numpy(ops.sum(self.group.leader.mask)))

    @staticmethod
    def strip_model(model):
        """`tfkd.prune.shrink(model)`: how `strip` and export remove these masks."""
        from tfkd.prune.channels import shrink

        return shrink(model)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["schedule"] = keras.saving.serialize_keras_object(self.schedule)
        config["importance"] = self.importance
        config["group"] = self.group.member_config(self)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        schedule = saved_schedule(config.pop("schedule"))
        group = _join_group(config.pop("group"), config.get("name", layer.name), ChannelGroup)
        wrapper = cls(layer, schedule, group, **config)
        _group_joined(group)
        return wrapper


def _role(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batch_norm"
    if isinstance(layer, DEPTHWISE):
        return "depthwise"
    if isinstance(layer, PRODUCERS):
        return "producer"
    raise TypeError(
        "`layer` has no channels a ChannelMask can prune. Received: "
        f"layer={layer.name!r} of type {type(layer).__name__}. Accepted: Dense, "
        "Conv1D/2D/3D, BatchNormalization, DepthwiseConv1D/2D."
    )


def check_importance(importance):
    if importance not in IMPORTANCES:
        raise ValueError(
            f"`importance` must be one of {IMPORTANCES}. Received: importance={importance!r}."
        )
    return importance
