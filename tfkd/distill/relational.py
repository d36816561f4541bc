"""Relational KD (Park et al., CVPR 2019): the student learns how the examples of a batch
lie relative to each other in the teacher's space (their distances and angles), not the
teacher's features themselves, so the two layers may differ in width."""

import keras
from keras import ops

from tfkd.distill._checks import check_scalar, same_known_dimensions, tensor_shape, validate_weight
from tfkd.distill.losses import DistillationLoss

_NORM_FLOOR = 1e-12
# Pairs of examples closer than this fraction of the batch's mean squared distance
# count as coincident, and their angles as 0 (as for a zero vector in the authors'
# code): angles come from a Gram matrix, whose float32 rounding would otherwise
# make the direction between near-duplicates noise.
_COINCIDENT = 1e-4


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
        if not distance_weight and not angle_weight:  # before, a loss that is always 0
            raise ValueError(
                "RelationalDistillation needs a term: `distance_weight` or `angle_weight` "
                f"> 0. Received: distance_weight={distance_weight!r}, "
                f"angle_weight={angle_weight!r}."
            )
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
