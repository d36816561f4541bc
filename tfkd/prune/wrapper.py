"""`PrunedLayer`: a layer whose kernel is multiplied by a mask that follows a schedule."""

import copy
import math
import numbers
import uuid
import warnings
import weakref

import keras
import numpy as np
from keras import ops

from tfkd import _checks, _kernels
from tfkd._wrapper import KernelWrapper, readable
from tfkd.prune import masks, schedules


class PruningGroup:
    """Layers pruned together by magnitude, as one set of weights (`scope="global"`).

    A model's `PrunedLayer`s share one group. Its config is a name and a size, and
    each member saves its position in the group with it: layers deserialized with the
    same name join the same group until it is complete, and a position that has joined
    already starts another copy, so a loaded or cloned model prunes globally too, even
    where nested models repeat layer names.
    """

    def __init__(self, name=None, size=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(
                "`name` must be a non-empty string, or None for a unique name. "
                f"Received: name={name!r} of type {type(name).__name__}."
            )
        integral = isinstance(size, numbers.Integral) and not isinstance(size, (bool, np.bool_))
        if size is not None and (not integral or size < 1):
            raise ValueError(
                "`size` must be an integer >= 1 (the number of layers in the group), or None. "
                f"Received: size={size!r}."
            )
        self.name = name or uuid.uuid4().hex
        self.size = None if size is None else int(size)
        self.members = []

    def mask_of(self, member, sparsity):
        """`member`'s new mask when the group's kernels, together, lose the fraction
        `sparsity` of their weights, those of smallest magnitude. Frozen members
        (`trainable = False`) keep their masks and are left out of the ranking."""
        members = [m for m in self.members if not m.frozen()]
        magnitudes = [ops.reshape(ops.abs(m.pruned_kernel()), (-1,)) for m in members]
        previous = [ops.reshape(m.mask, (-1,)) for m in members]
        keep = masks.magnitude_mask(
            ops.concatenate(magnitudes, axis=0), sparsity, ops.concatenate(previous, axis=0)
        )
        index = next(i for i, m in enumerate(members) if m is member)
        start = sum(int(magnitude.shape[0]) for magnitude in magnitudes[:index])
        own = ops.slice(keep, [start], [magnitudes[index].shape[0]])
        return ops.reshape(own, ops.shape(member.mask))

    def get_config(self):
        return {"name": self.name, "size": len(self.members)}

    def member_config(self, member):
        """The config `member` saves: the group's, and the member's position in it."""
        position = next(i for i, m in enumerate(self.members) if m is member)
        return {**self.get_config(), "member": position}


# Groups whose layers are being deserialized, by name, until all their members have
# joined: `{name: (group, the positions, or for older files the layer names, joined)}`.
_ASSEMBLING = {}


def _join_group(config, layer_name, group_class=PruningGroup):
    config = dict(config)
    member = config.pop("member", None)
    # Files saved before positions were saved identify members by layer name alone.
    key = layer_name if member is None else member
    group, joined = _ASSEMBLING.get(config["name"], (None, set()))
    if group is None or key in joined:
        group, joined = group_class(**config), set()
        _ASSEMBLING[config["name"]] = (group, joined)
    joined.add(key)
    return group


def _group_joined(group):
    if group is not None and group.size is not None and len(group.members) >= group.size:
        if _ASSEMBLING.get(group.name, (None,))[0] is group:
            del _ASSEMBLING[group.name]


@keras.saving.register_keras_serializable(package="tfkd")
class PrunedLayer(KernelWrapper):
    """Prunes the kernel of `layer` by magnitude while the model trains.

    In every training step the layer advances its `pruning_step` once, even where the
    model calls it at several places (except in JAX's eager steps, `run_eagerly=True` or
    `jit_compile=False`: there, once a call), and, at the steps its schedule names,
    recomputes its mask from the magnitudes of the kept weights; pruned weights never
    come back. Inference calls, and training calls while the layer is frozen
    (`trainable = False`, as BatchNormalization), leave the mask and step alone. The update runs
    inside the layer, so `fit` (plain, or as a `tfkd.Distiller` student) needs no
    callback. Use `tfkd.prune.prune` to wrap the layers of a whole model; wrap layers
    directly only inside a subclassed model.

    Args:
        layer: a Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D or
            Embedding layer.
        schedule: a `tfkd.prune.PruningSchedule`, or a target sparsity for
            `ConstantSparsity`.
        pattern: `"unstructured"` or `"N:M"` (keep N of every M weights along the input
            channels). An N:M pattern fixes the sparsity, `1 - N/M`, and the schedule
            says when masks update, so the schedule must end at that sparsity.
            Defaults to `"unstructured"`.
        group: a `PruningGroup` shared with the layers ranked by magnitude together, or
            `None` to prune this layer on its own. Defaults to `None`.
        **kwargs: passed to `keras.layers.Layer`; the name defaults to the layer's.

    Example:

    >>> dense = tfkd.prune.PrunedLayer(keras.layers.Dense(4), schedule=0.5)
    >>> tuple(dense(np.ones((2, 8)), training=True).shape)
    (2, 4)
    """

    # `_graph.strip` replaces the wrapper by its layer, holding `effective_weights()`.
    strippable = True
    action = "pruned"
    layer_kinds = " (Dense, a convolution or Embedding)"

    def __init__(self, layer, schedule, pattern="unstructured", group=None, **kwargs):
        if group is not None and not isinstance(group, PruningGroup):
            raise TypeError(
                "`group` must be a tfkd.prune.PruningGroup shared by the layers pruned "
                f"together, or None. Received: group={group!r:.80} of type "
                f"{type(group).__name__}."
            )
        schedule = schedules.get(schedule)
        check_schedule_fits_pattern(schedule, pattern)
        super().__init__(layer, **kwargs)
        self.schedule = schedule
        self.pattern = pattern
        self._n_of_m = _checks.parse_pattern(pattern)
        self.group = group
        if group is not None:
            group.members.append(self)
        self._stepped_in = None
        self._stepped_to = None

    def build_state(self, input_shape):
        kernel = self.raw_kernel()
        check_pattern_fits(self.layer, self.pattern)
        self.mask = self.add_weight(
            name="mask",
            shape=kernel.shape,
            initializer="ones",
            trainable=False,
            dtype=kernel.dtype,
        )
        self.pruning_step = self.add_weight(
            name="pruning_step", shape=(), initializer="zeros", trainable=False, dtype="int32"
        )

    def kernel_mask(self):
        return self.mask

    def pruned_kernel(self):
        """The kernel with the mask applied: what the layer computes with."""
        return self.masked_kernel()

    def call(self, inputs, training=False):
        # Frozen, it keeps its mask and step: its weights cannot train to make up for a
        # new mask.
        if training and not self.frozen() and self._first_call_of_step():
            self._update_mask()
        return _kernels.forward(self.layer, inputs, self.pruned_kernel())

    def _first_call_of_step(self):
        """Whether this is the layer's first call in the current training step, so that a
        layer called at several places (a siamese branch) advances its schedule once a
        step: before, once a call.

        Keras keeps one call context from the outermost layer call to its end, eager or
        traced; `_get_call_context` is the one private Keras API this reads. JAX's trainer
        runs the model's `call` in a stateless scope, outside any call context, so there
        each call site starts its own: a later call site of the traced step is the one
        that reads back the very step value that the first assigned (each trace reads its
        own values); before, it stepped again, and the schedule ran at twice the speed.
        """
        context = self._get_call_context()
        if self._stepped_in is not None and self._stepped_in() is context:
            return False
        if self._stepped_to is not None and self._assigned_in_this_trace():
            return False
        self._stepped_in = weakref.ref(context)
        return True

    def _assigned_in_this_trace(self):
        """Whether `pruning_step` holds the traced value this layer assigned it. Eager, the
        value assigned is the one the next step starts from (JAX's `run_eagerly=True` or
        `jit_compile=False`), so it cannot tell a step from the next: there, each call
        site of a layer called at several places still steps."""
        step = self.pruning_step.value
        return step is self._stepped_to() and readable(step) is None

    def _update_mask(self):
        step = ops.convert_to_tensor(self.pruning_step)
        mask = ops.cond(
            self.schedule.should_update(step),
            lambda: self._new_mask(self.schedule(step)),
            lambda: ops.convert_to_tensor(self.mask),
        )
        self.mask.assign(mask)
        # On TensorFlow and PyTorch, `pruning_step.value` is the variable, never this.
        self._stepped_to = weakref.ref(self.pruning_step.assign(step + 1))

    def _new_mask(self, sparsity):
        magnitudes = ops.abs(self.pruned_kernel())
        if self._n_of_m is not None:
            n, m = self._n_of_m
            structured = masks.n_of_m_mask(magnitudes, n, m)
            return ops.where(sparsity > 0, structured, ops.convert_to_tensor(self.mask))
        if self.group is not None:
            return self.group.mask_of(self, sparsity)
        return masks.magnitude_mask(magnitudes, sparsity, self.mask)

    def get_config(self):
        config = super().get_config()
        config["schedule"] = keras.saving.serialize_keras_object(self.schedule)
        config["pattern"] = self.pattern
        config["group"] = None if self.group is None else self.group.member_config(self)
        return config

    @classmethod
    def from_config(cls, config):
        wrapper = super().from_config(config)
        _group_joined(wrapper.group)
        return wrapper

    @classmethod
    def from_config_arguments(cls, config, layer):
        schedule = saved_schedule(config.pop("schedule"), config.get("pattern", "unstructured"))
        group = config.pop("group", None)
        group = None if group is None else _join_group(group, config.get("name", layer.name))
        return dict(config, schedule=schedule, group=group)


def check_schedule_fits_pattern(schedule, pattern):
    """Raises unless `schedule` ends at the sparsity an N:M `pattern` gives (`1 - N/M`)."""
    target = schedules.target_sparsity(schedule)
    received = f"schedule={schedule!r}, " + (
        "with no `target_sparsity` or `end_step` to read its final sparsity from"
        if target is None
        else f"ending at sparsity {target:.4g}"
    )
    _checks.check_sparsity_fits_pattern(pattern, target, received)


def saved_schedule(serialized, pattern="unstructured"):
    """The schedule a saved layer prunes by, from its serialized config.

    Layers saved before a falling `PolynomialDecay`, or a target sparsity at odds with
    an N:M `pattern`, were refused still load, with a warning, holding the schedule
    they ran: a falling one stayed at its initial sparsity (pruned weights never come
    back), and a pattern prunes to its own sparsity whatever the target.
    """
    serialized = copy.deepcopy(serialized)
    config = serialized.get("config") if isinstance(serialized, dict) else None
    key = next((k for k in ("target_sparsity", "final_sparsity") if k in (config or {})), None)
    if key is not None:
        _saved_target(config, key, _checks.pattern_sparsity(pattern))
    return keras.saving.deserialize_keras_object(serialized)


def _saved_target(config, key, pattern_sparsity):
    initial, target = config.get("initial_sparsity", 0.0), config[key]
    if not (_checks.is_number(target) and _checks.is_number(initial)):
        return  # the schedule's own check says what is wrong
    if pattern_sparsity is not None and target > 0:
        ran, why = pattern_sparsity, "its N:M pattern fixes the sparsity"
    elif initial > target:
        ran, why = initial, "it falls, and pruned weights never come back"
    else:
        return
    if not math.isclose(ran, target, abs_tol=1e-4):
        warnings.warn(
            f"A saved pruning schedule targets {key}={target!r}, but {why}: it pruned to "
            f"{ran:.4g}, and loads with {key}={ran:.4g}.",
            stacklevel=4,
        )
        config[key] = ran
        if "initial_sparsity" in config:
            config["initial_sparsity"] = min(initial, ran)


def check_pattern_fits(layer, pattern):
    """Raises when an N:M `pattern` cannot apply to `layer`'s kernel."""
    n_of_m = _checks.parse_pattern(pattern)
    if n_of_m is None:
        return
    axis = _kernels.input_channel_axis(layer)
    if axis is None:
        raise ValueError(
            f"Pattern {pattern!r} cannot apply to layer {layer.name!r} "
            f"({type(layer).__name__}): it has no input-channel axis to group. "
            "Exclude it with `exclude=[...]` or use pattern='unstructured'."
        )
    if not layer.built:  # a model never called: checked again when the wrapper builds
        return
    kernel = _kernels.kernel(layer)
    channels = kernel.shape[axis]
    if channels % n_of_m[1]:
        raise ValueError(
            f"Pattern {pattern!r} needs the input channels of layer {layer.name!r} to be a "
            f"multiple of {n_of_m[1]}. Received: a kernel of shape {tuple(kernel.shape)} with "
            f"{channels} input channels. Exclude the layer with `exclude=[{layer.name!r}]`."
        )
