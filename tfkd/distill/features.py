"""Losses on intermediate features: attention transfer and relational KD.

Unlike `FeatureDistillation`, neither compares the features themselves, so teacher
and student layers may differ in width without a projection: attention transfer
compares where each network's activations are large, relational KD compares how
the examples of a batch lie relative to each other.
"""

import math

import keras
from keras import ops

from tfkd._checks import is_number, shown
from tfkd.distill._checks import check_scalar, same_known_dimensions, tensor_shape, validate_weight
from tfkd.distill.losses import DistillationLoss

_NORM_FLOOR = 1e-12
# Pairs of examples closer than this fraction of the batch's mean squared distance
# count as coincident, and their angles as 0 (as for a zero vector in the authors'
# code): angles come from a Gram matrix, whose float32 rounding would otherwise
# make the direction between near-duplicates noise.
_COINCIDENT = 1e-4


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


def relational_distance(teacher_outputs, student_outputs, *, distance_weight=1.0, angle_weight=2.0):
    """Per-example relational KD (Park et al., CVPR 2019): distances and angles in the batch.

    Each example's features are flattened. The distance-wise term compares the
    pairwise Euclidean distances of the batch, each side divided by its mean
    distance; the angle-wise term compares the cosines of the angles that every
    triplet forms (vertex at the first example). Both use the smooth L1 (Huber,
    delta 1) difference, as the authors' code. Example `i`'s value averages the
    pairs and triplets it anchors, so the mean over the batch is the paper's
    loss `distance_weight * distance + angle_weight * angle`.

    Teacher and student features may have different sizes. The angle term costs
    `batch ** 3` memory and time: on 2 CPU cores, forward and backward take
    about 25 ms for a batch of 128 and 200 ms for 256.

    Args:
        teacher_outputs: Teacher features or logits, shape `(batch, ...)`.
        student_outputs: Student features or logits, shape `(batch, ...)`.
        distance_weight: Weight of the distance-wise term, >= 0.
            Defaults to `1.0`.
        angle_weight: Weight of the angle-wise term, >= 0 (0 skips its
            computation). Defaults to `2.0`.

    Returns:
        A tensor of shape `(batch,)`: 0 where the two batches have the same
        shape up to rotation, translation and scale.

    Example:

    >>> import numpy as np
    >>> teacher = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype="float32")
    >>> values = relational_distance(teacher, teacher * 3.0 + 1.0)
    >>> round(float(keras.ops.max(values)), 6)
    0.0
    """
    teacher_shape = tensor_shape("teacher_outputs", teacher_outputs)
    student_shape = tensor_shape("student_outputs", student_outputs)
    if (
        teacher_shape
        and student_shape
        and not same_known_dimensions(teacher_shape[:1], student_shape[:1])
    ):
        raise ValueError(
            "`relational_distance` compares two batches of the same examples. Received: "
            f"teacher_outputs of shape {teacher_shape} and student_outputs of shape "
            f"{student_shape}: the batch sizes differ."
        )
    check_scalar("distance_weight", distance_weight, validate_weight)
    check_scalar("angle_weight", angle_weight, validate_weight)
    teacher, student = _gram(teacher_outputs), _gram(student_outputs)
    total = ops.zeros((ops.shape(teacher[0])[0],), "float32")
    if distance_weight:
        total = total + distance_weight * _distance_term(teacher, student)
    if angle_weight:
        total = total + angle_weight * _angle_term(teacher, student)
    return total


def _gram(features):
    """Returns `(gram matrix, squared pairwise distances)` of the flattened, centred batch."""
    features = ops.cast(features, "float32")
    features = ops.reshape(features, (ops.shape(features)[0], -1))
    # Distances and angles ignore translation; centring keeps the Gram small and exact.
    features = features - ops.mean(features, axis=0, keepdims=True)
    gram = ops.matmul(features, ops.transpose(features))
    squared_norms = ops.sum(ops.square(features), axis=-1)
    squared_distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram
    return gram, ops.maximum(squared_distances, 0.0)


def _huber(x):
    absolute = ops.abs(x)
    return ops.where(absolute < 1.0, 0.5 * ops.square(x), absolute - 0.5)


def _off_diagonal(size):
    indices = ops.arange(size)
    return indices[:, None] != indices[None, :]


def _normalized_distances(squared_distances):
    size = ops.shape(squared_distances)[0]
    off_diagonal = _off_diagonal(size)
    distances = ops.where(off_diagonal, ops.sqrt(ops.maximum(squared_distances, _NORM_FLOOR)), 0.0)
    pairs = ops.maximum(ops.cast(size * (size - 1), "float32"), 1.0)
    mean = ops.sum(distances) / pairs
    return distances / ops.maximum(mean, _NORM_FLOOR)


def _distance_term(teacher, student):
    teacher = _normalized_distances(teacher[1])
    student = _normalized_distances(student[1])
    return ops.mean(_huber(student - teacher), axis=-1)


def _angles(gram_and_distances):
    """`cos[a, b, c]`: the cosine of the angle at `a` between `b - a` and `c - a`."""
    gram, squared_distances = gram_and_distances
    size = ops.shape(gram)[0]
    pairs = ops.maximum(ops.cast(size * (size - 1), "float32"), 1.0)
    typical = ops.sum(squared_distances) / pairs
    apart = squared_distances > _COINCIDENT * typical
    lengths = ops.sqrt(ops.maximum(squared_distances, _NORM_FLOOR))
    squared_norms = ops.diagonal(gram)
    # (b - a).(c - a) = G[b, c] - G[a, b] - G[a, c] + G[a, a]
    dot = gram[None, :, :] - gram[:, :, None] - gram[:, None, :] + squared_norms[:, None, None]
    cosines = dot / (lengths[:, :, None] * lengths[:, None, :])
    valid = ops.logical_and(apart[:, :, None], apart[:, None, :])
    return ops.where(valid, ops.clip(cosines, -1.0, 1.0), 0.0)


def _angle_term(teacher, student):
    difference = _angles(student) - _angles(teacher)
    return ops.mean(_huber(difference), axis=(1, 2))


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


@keras.saving.register_keras_serializable(package="tfkd")
class RelationalDistillation(DistillationLoss):
    """Relational knowledge distillation (RKD, Park et al., CVPR 2019).

    Asks the student to place the examples of each batch as the teacher does:
    the same relative pairwise distances and the same angles between triplets
    (see `relational_distance`). The features are flattened, and their sizes
    may differ, so it needs no projection. Reads the models' outputs by
    default, or the named layers (e.g. the pooled features before the head).
    A batch quantity: use batches of 16 or more, and on CPU at most about 128
    (the angle term grows as `batch ** 3`; `angle_weight=0` removes it).

    Args:
        teacher_layer_name: Teacher layer to read, `None` for its output.
            Defaults to `None`.
        student_layer_name: Student layer to read, `None` for its output.
            Defaults to `None`.
        distance_weight: Weight of the distance-wise term, >= 0.
            Defaults to `1.0`.
        angle_weight: Weight of the angle-wise term, >= 0. Defaults to `2.0`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    >>> loss = RelationalDistillation(teacher_layer_name="features", student_layer_name="features")
    >>> loss.distance_weight, loss.angle_weight
    (1.0, 2.0)
    """

    def __init__(
        self,
        teacher_layer_name=None,
        student_layer_name=None,
        distance_weight=1.0,
        angle_weight=2.0,
        **kwargs,
    ):
        super().__init__(
            teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, **kwargs
        )
        validate_weight("distance_weight", distance_weight)
        validate_weight("angle_weight", angle_weight)
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)

    def call(self, teacher_outputs, student_outputs):
        return relational_distance(
            teacher_outputs,
            student_outputs,
            distance_weight=self.distance_weight,
            angle_weight=self.angle_weight,
        )

    def get_config(self):
        config = super().get_config()
        config.update(distance_weight=self.distance_weight, angle_weight=self.angle_weight)
        return config
