"""Losses on intermediate features: FitNets hints and attention transfer.

`FeatureDistillation` compares the features themselves (through a learned projection
when the widths differ); attention transfer compares where each network's activations
are large, so teacher and student layers may differ in width without a projection.
Relational KD, which compares how the examples of a batch lie relative to each other,
is in `relational.py`.
"""

import math

import keras
from keras import ops

from tfkd import _checks
from tfkd._checks import is_number, shown
from tfkd.distill._checks import (
    check_same_shape,
    check_scalar,
    same_known_dimensions,
    tensor_shape,
)
from tfkd.distill.losses import DistillationLoss

_NORM_FLOOR = 1e-12


def mean_squared_error(teacher_outputs, student_outputs):
    """Per-example mean squared difference between two feature tensors.

    Args:
        teacher_outputs: Teacher features, shape `(batch, ...)`.
        student_outputs: Student features of the same shape.

    Returns:
        A tensor of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> a = np.ones((2, 3), dtype="float32")
    >>> keras.ops.convert_to_numpy(mean_squared_error(a, a * 3)).tolist()
    [4.0, 4.0]
    """
    check_same_shape(teacher_outputs, student_outputs, "mean_squared_error")
    difference = ops.cast(student_outputs, "float32") - ops.cast(teacher_outputs, "float32")
    squared = ops.reshape(ops.square(difference), (ops.shape(difference)[0], -1))
    return ops.mean(squared, axis=-1)


def attention_map_distance(teacher_features, student_features, *, exponent=2.0):
    """Per-example attention transfer loss (Zagoruyko & Komodakis, ICLR 2017).

    The attention map of features of shape `(batch, H, W, channels)` is the mean
    over channels of `|f| ** exponent`, flattened and divided by its L2 norm.
    The loss is the mean over positions of the squared difference of the two
    maps, as in the authors' code (`(at(x) - at(y)).pow(2).mean()`); the paper
    writes the (unsquared) L2 distance. The value is at most `4 / (H * W)`, which
    is why the authors multiply it by 500 (their beta / 2): give it a large
    weight in `distillation_loss_weights`.

    Args:
        teacher_features: Teacher features, shape `(batch, ..., channels)` with
            at least one spatial axis.
        student_features: Student features with the same spatial axes; the
            channels may differ.
        exponent: The `p` of `|f| ** p`, >= 1. Larger values favour the most
            active positions. Defaults to `2.0`.

    Returns:
        A tensor of shape `(batch,)`, 0 where the two maps agree.

    Example:

    >>> import numpy as np
    >>> teacher = np.ones((1, 2, 2, 8), dtype="float32")
    >>> student = np.array([[[[2.0], [0.0]], [[0.0], [0.0]]]], dtype="float32")
    >>> float(attention_map_distance(teacher, student)[0])
    0.25
    """
    teacher_shape = tensor_shape("teacher_features", teacher_features, min_rank=3)
    student_shape = tensor_shape("student_features", student_features, min_rank=3)
    if (
        teacher_shape
        and student_shape
        and not same_known_dimensions(teacher_shape[:-1], student_shape[:-1])
    ):
        raise ValueError(
            "`attention_map_distance` compares features of the same batch and spatial "
            f"size (channels may differ). Received: teacher_features of shape "
            f"{teacher_shape} and student_features of shape {student_shape}."
        )
    check_scalar("exponent", exponent, lambda name, value: _validate_exponent(value))
    difference = _attention_map(teacher_features, exponent) - _attention_map(
        student_features, exponent
    )
    return ops.mean(ops.square(difference), axis=-1)


def _attention_map(features, exponent):
    features = ops.cast(features, "float32")
    energy = ops.mean(ops.power(ops.abs(features), exponent), axis=-1)
    flat = ops.reshape(energy, (ops.shape(energy)[0], -1))
    return flat / _safe_norm(flat, axis=-1, keepdims=True)


def _safe_norm(x, axis, keepdims=False):
    # Floors the norm at 1e-12 (as torch's `normalize`), and its square before the
    # square root, whose gradient at 0 (a map of dead ReLUs) would be infinite.
    squared = ops.sum(ops.square(x), axis=axis, keepdims=keepdims)
    return ops.sqrt(ops.maximum(squared, _NORM_FLOOR**2))


def _validate_exponent(exponent):
    if not is_number(exponent):
        raise TypeError(
            f"`exponent` must be a number >= 1. Received: exponent={shown(exponent)} "
            f"of type {type(exponent).__name__}."
        )
    if not 1 <= exponent < math.inf:
        raise ValueError(
            f"`exponent` must be a finite number >= 1. Received: exponent={exponent}. Below "
            "1 the gradient of |f| ** p is infinite at the zeros a ReLU leaves; the paper "
            "uses 2."
        )


@keras.saving.register_keras_serializable(package="tfkd")
class FeatureDistillation(DistillationLoss):
    """Pulls a student layer's output towards a teacher layer's output (FitNets).

    When the two layers differ in width (last axis), a learned linear
    projection maps the student's features to the teacher's width; it trains
    with the student and is not part of the student model. Other axes must
    match (pick layers at the same spatial resolution).

    Args:
        teacher_layer_name: Name of the teacher layer to imitate.
        student_layer_name: Name of the student layer that imitates it.
        projection: `"auto"` adds a projection only when widths differ,
            `"always"` adds one in every case, `"never"` requires equal widths.
            Defaults to `"auto"`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    >>> loss = FeatureDistillation(teacher_layer_name="conv_2", student_layer_name="conv_1")
    >>> loss.projection
    'auto'
    """

    requires_layer_names = True

    def __init__(
        self, teacher_layer_name=None, student_layer_name=None, projection="auto", **kwargs
    ):
        super().__init__(
            teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, **kwargs
        )
        if projection not in ("auto", "always", "never"):
            raise ValueError(
                f"Unknown projection. Received: projection={projection!r}. "
                "Accepted: 'auto', 'always', 'never'."
            )
        self.projection = projection
        self.projection_layer = None

    def build(self, teacher_outputs_shape, student_outputs_shape):
        teacher_shape, student_shape = tuple(teacher_outputs_shape), tuple(student_outputs_shape)
        if len(teacher_shape) != len(student_shape) or teacher_shape[1:-1] != student_shape[1:-1]:
            raise ValueError(
                f"FeatureDistillation can project the last axis only, but the other axes "
                f"differ. Received: teacher layer {self.teacher_layer_name!r} output shape "
                f"{teacher_shape}, student layer {self.student_layer_name!r} output shape "
                f"{student_shape}. Choose layers with the same rank and spatial size."
            )
        widths_differ = teacher_shape[-1] != student_shape[-1]
        if widths_differ and self.projection == "never":
            raise ValueError(
                f"Teacher layer {self.teacher_layer_name!r} has width {teacher_shape[-1]} and "
                f"student layer {self.student_layer_name!r} width {student_shape[-1]}, and "
                "projection='never'. Use projection='auto' to learn a projection."
            )
        if self.projection == "always" or widths_differ:
            self.projection_layer = keras.layers.Dense(
                teacher_shape[-1], use_bias=False, name="projection"
            )
            self.projection_layer.build(student_shape)
        self.built = True

    def call(self, teacher_outputs, student_outputs):
        if self.projection_layer is not None:
            student_outputs = self.projection_layer(student_outputs)
        return mean_squared_error(teacher_outputs, student_outputs)

    def get_config(self):
        config = super().get_config()
        config.update(projection=self.projection)
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionTransfer(DistillationLoss):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017) between two feature maps.

    Asks the student's layer to be active where the teacher's is: each map is
    reduced to a normalised spatial attention map (see
    `attention_map_distance`), so the layers may differ in channels but must
    have the same spatial size. The loss is small (at most `4 / (H * W)`):
    the authors weigh it by 500, e.g. `distillation_loss_weights=[1.0, 500.0]`
    next to a logits loss.

    Args:
        teacher_layer_name: Name of the teacher layer, output `(batch, H, W, C_t)`.
        student_layer_name: Name of the student layer, output `(batch, H, W, C_s)`.
        exponent: The `p` of `|f| ** p`, >= 1. Defaults to `2.0`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    >>> loss = AttentionTransfer(teacher_layer_name="block_3", student_layer_name="conv_2")
    >>> loss.exponent
    2.0
    """

    requires_layer_names = True

    def __init__(self, teacher_layer_name=None, student_layer_name=None, exponent=2.0, **kwargs):
        super().__init__(
            teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, **kwargs
        )
        _validate_exponent(exponent)
        self.exponent = float(exponent)

    def build(self, teacher_outputs_shape, student_outputs_shape):
        teacher_shape, student_shape = tuple(teacher_outputs_shape), tuple(student_outputs_shape)
        if len(teacher_shape) < 3 or teacher_shape[1:-1] != student_shape[1:-1]:
            raise ValueError(
                "AttentionTransfer compares spatial attention maps, so both layers need "
                "the same spatial size (channels may differ). Received: teacher layer "
                f"{self.teacher_layer_name!r} output shape {teacher_shape}, student layer "
                f"{self.student_layer_name!r} output shape {student_shape}. Choose feature maps "
                "(batch, H, W, channels) of the same H and W."
            )
        self.built = True

    def call(self, teacher_outputs, student_outputs):
        return attention_map_distance(teacher_outputs, student_outputs, exponent=self.exponent)

    def get_config(self):
        config = super().get_config()
        config.update(exponent=self.exponent)
        return config


# Names that moved to `relational.py`: still importable from here, with a DeprecationWarning.
_MOVED = {"RelationalDistillation": "relational", "relational_distance": "relational"}


def __getattr__(name):
    return _checks.moved_name(__name__, name, _MOVED)
