"""Logits losses beyond classic KD: decoupled KD and DIST (correlation of predictions).

Both read the class logits of teacher and student (a `tfkd.Distiller` gives them the
log-probabilities of a model that ends in a softmax, which softmax treats exactly as
logits), so the two outputs must have the same shape.
"""

import keras
from keras import ops

from tfkd.distill import schedules
from tfkd.distill._checks import check_same_shape, check_scalar, check_temperature, validate_weight
from tfkd.distill.losses import DEFAULT_TEMPERATURE, DistillationLoss, scheduled_temperature

# Pushes the target class out of a softmax: exp(-1e9) is exactly 0 in float32.
_MASKED = -1e9
# Pearson correlation of a constant vector: the denominator's floor (as the authors'
# 1e-8), and a square-root argument floor that keeps its gradient finite.
_CORRELATION_EPSILON = 1e-8


def decoupled_kl_divergence(
    teacher_outputs,
    student_outputs,
    *,
    temperature=1.0,
    target_weight=1.0,
    non_target_weight=8.0,
):
    """Per-example decoupled KD (Zhao et al., CVPR 2022), target = teacher's top class.

    Splits the KL divergence of `softmax(logits / T)` into two terms and weighs
    them separately: TCKD, the KL of the binary distributions
    `(p_target, 1 - p_target)`, and NCKD, the KL of the distributions over the
    other classes (renormalised without the target). Classic KD equals
    `TCKD + (1 - p_target_teacher) * NCKD`, so the teacher's confident examples
    teach little about the non-target classes; DKD removes that factor:
    `T^2 * (target_weight * TCKD + non_target_weight * NCKD)`.

    The paper takes the labelled class as the target. tfkd losses see only the
    two models' outputs, so the target is the teacher's top class: DKD then
    needs no labels and works on unlabelled data too. Where the teacher is
    right the two agree.

    Args:
        teacher_outputs: Teacher logits, shape `(batch, ..., classes)`,
            at least 2 classes.
        student_outputs: Student logits, same shape.
        temperature: Softmax temperature, > 0. Defaults to `1.0`.
        target_weight: Weight of TCKD (the paper's alpha), >= 0.
            Defaults to `1.0`.
        non_target_weight: Weight of NCKD (the paper's beta), >= 0.
            Defaults to `8.0`.

    Returns:
        A tensor of shape `(batch, ...)`: >= 0, and 0 where the outputs agree
        up to a constant per example.

    Example:

    >>> import numpy as np
    >>> teacher = np.array([[3.0, 1.0, 0.0]], dtype="float32")
    >>> student = np.array([[0.0, 1.0, 3.0]], dtype="float32")
    >>> round(float(decoupled_kl_divergence(teacher, student, temperature=2.0)[0]), 4)
    11.2562
    """
    check_same_shape(teacher_outputs, student_outputs, "decoupled_kl_divergence")
    _check_numbers(temperature, target_weight=target_weight, non_target_weight=non_target_weight)
    teacher = ops.cast(teacher_outputs, "float32") / temperature
    student = ops.cast(student_outputs, "float32") / temperature
    target = ops.one_hot(ops.argmax(teacher, axis=-1), teacher.shape[-1]) > 0.5
    target_part = _binary_kl(teacher, student, target)
    teacher_rest = ops.log_softmax(ops.where(target, _MASKED, teacher), axis=-1)
    student_rest = ops.log_softmax(ops.where(target, _MASKED, student), axis=-1)
    terms = ops.exp(teacher_rest) * (teacher_rest - student_rest)
    non_target_part = ops.maximum(ops.sum(ops.where(target, 0.0, terms), axis=-1), 0.0)
    return (target_weight * target_part + non_target_weight * non_target_part) * temperature**2


def _binary_kl(teacher, student, target):
    """KL((p_t, 1 - p_t) || (p_s, 1 - p_s)) of the target class, from log-probabilities.

    `log(1 - p)` comes from a log-sum-exp over the other classes, so a teacher
    certain of its class (p = 1 - 1e-9) gives a finite value, unlike `log(1 - p)`.
    """

    def log_target_and_rest(logits):
        total = ops.logsumexp(logits, axis=-1)
        target_logit = ops.sum(ops.where(target, logits, 0.0), axis=-1)
        rest = ops.logsumexp(ops.where(target, _MASKED, logits), axis=-1)
        return target_logit - total, rest - total

    teacher_target, teacher_rest = log_target_and_rest(teacher)
    student_target, student_rest = log_target_and_rest(student)
    divergence = ops.exp(teacher_target) * (teacher_target - student_target) + ops.exp(
        teacher_rest
    ) * (teacher_rest - student_rest)
    return ops.maximum(divergence, 0.0)


def correlation_distance(
    teacher_outputs,
    student_outputs,
    *,
    temperature=1.0,
    inter_class_weight=1.0,
    intra_class_weight=1.0,
):
    """DIST (Huang et al., NeurIPS 2022): one minus Pearson correlations of predictions.

    With `p = softmax(logits / T)`, the inter-class term is `1 - pearson(p_t, p_s)`
    over the classes of each example, and the intra-class term is `1 - mean over
    classes of pearson(p_t[:, c], p_s[:, c])` over the batch. The loss is
    `T^2 * (inter_class_weight * inter + intra_class_weight * intra)`. Correlation
    ignores the scale and offset of the predictions, so a student far weaker
    than its teacher is asked to rank classes (and examples) as the teacher
    does, not to match its confidence as KL does.

    The intra-class term is a property of the batch: each example gets an equal
    share, so the per-example values average to the paper's batch loss. It
    needs batches of at least 2 examples (one example has no correlation over
    the batch; its intra-class term is 1 and has no gradient).

    Args:
        teacher_outputs: Teacher logits, shape `(batch, ..., classes)`.
        student_outputs: Student logits, same shape.
        temperature: Softmax temperature, > 0. Defaults to `1.0`.
        inter_class_weight: Weight of the per-example term (the paper's beta),
            >= 0. Defaults to `1.0`.
        intra_class_weight: Weight of the per-class term over the batch (the
            paper's gamma), >= 0. Defaults to `1.0`.

    Returns:
        A tensor of shape `(batch, ...)`, in `[0, 2 * T^2 * (sum of weights)]`;
        0 where the predictions are equal.

    Example:

    >>> import numpy as np
    >>> teacher = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], dtype="float32")
    >>> values = correlation_distance(teacher, teacher * 2.0)
    >>> [round(v, 4) for v in keras.ops.convert_to_numpy(values).tolist()]
    [0.0023, 0.0118]
    """
    check_same_shape(teacher_outputs, student_outputs, "correlation_distance")
    _check_numbers(
        temperature, inter_class_weight=inter_class_weight, intra_class_weight=intra_class_weight
    )
    teacher = ops.softmax(ops.cast(teacher_outputs, "float32") / temperature, axis=-1)
    student = ops.softmax(ops.cast(student_outputs, "float32") / temperature, axis=-1)
    inter_class = 1.0 - _pearson(teacher, student, axis=-1)
    classes = teacher.shape[-1]
    intra_class = 1.0 - ops.mean(
        _pearson(ops.reshape(teacher, (-1, classes)), ops.reshape(student, (-1, classes)), axis=0)
    )
    combined = inter_class_weight * inter_class + intra_class_weight * intra_class
    return combined * temperature**2


def _check_numbers(temperature, **weights):
    check_temperature(temperature)
    for name, weight in weights.items():
        check_scalar(name, weight, validate_weight)


def _pearson(a, b, axis):
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norms = _norm(a, axis) * _norm(b, axis)
    return ops.sum(a * b, axis=axis) / (norms + _CORRELATION_EPSILON)


def _norm(x, axis):
    # sqrt has an infinite gradient at 0 (a student whose predictions are all equal).
    squared = ops.sum(ops.square(x), axis=axis)
    return ops.sqrt(ops.maximum(squared, _CORRELATION_EPSILON**2))


class _LogitsLoss(DistillationLoss):
    """A loss that reads class logits (the Distiller checks shapes and converts softmax
    outputs): the class's `function` of `(teacher_outputs, student_outputs, *,
    temperature, **weights)`, with `weights` (each >= 0, named as the function's
    arguments) as the class's attributes and config."""

    function = None

    def __init__(self, temperature, teacher_layer_name, student_layer_name, weights, **kwargs):
        super().__init__(
            teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, **kwargs
        )
        self.temperature = scheduled_temperature(temperature)
        for name, weight in weights.items():
            validate_weight(name, weight)
            setattr(self, name, float(weight))
        self._weight_names = tuple(weights)

    @property
    def reads_logits(self):
        return True

    def build(self, teacher_outputs_shape, student_outputs_shape):
        classes = teacher_outputs_shape[-1]
        if classes is not None and classes < 2:
            raise ValueError(
                f"{type(self).__name__} compares the classes of each example, so it needs "
                f"at least 2 classes. Received: teacher outputs of shape "
                f"{tuple(teacher_outputs_shape)}. Use LogitsDistillation for a binary "
                "classifier's single logit."
            )
        self.built = True

    def call(self, teacher_outputs, student_outputs):
        return self.function(
            teacher_outputs,
            student_outputs,
            temperature=schedules.value_at_current_step(self.temperature),
            **self._weights(),
        )

    def _weights(self):
        return {name: getattr(self, name) for name in self._weight_names}

    def get_config(self):
        config = super().get_config()
        config.update(temperature=schedules.serialize(self.temperature), **self._weights())
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "temperature": schedules.deserialize(config["temperature"])})


@keras.saving.register_keras_serializable(package="tfkd")
class DecoupledDistillation(_LogitsLoss):
    """Decoupled knowledge distillation (DKD, Zhao et al., CVPR 2022).

    Weighs the target-class and non-target-class parts of the KD loss
    separately (see `decoupled_kl_divergence`). The target is the teacher's top
    class, so no labels are needed and unlabelled examples can be used.
    The paper's CIFAR-100 setting is these weights with `temperature=4.0`;
    on ImageNet it used `temperature=1.0` and weights 0.5 and 0.5.

    Args:
        temperature: Softmax temperature, > 0, or a schedule of the step
            (`tfkd.distill.schedules`). Defaults to `1.0`, as
            `LogitsDistillation`.
        target_weight: Weight of the target-class term (alpha), >= 0.
            Defaults to `1.0`.
        non_target_weight: Weight of the non-target-class term (beta), >= 0.
            Defaults to `8.0`.
        teacher_layer_name: Teacher layer to read, `None` for its output.
            Defaults to `None`.
        student_layer_name: Student layer to read, `None` for its output.
            Defaults to `None`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    ```python
    loss = tfkd.distill.DecoupledDistillation(temperature=4.0)
    distiller = tfkd.Distiller(teacher, student, distillation_losses=loss)
    ```
    """

    function = staticmethod(decoupled_kl_divergence)

    def __init__(
        self,
        temperature=DEFAULT_TEMPERATURE,
        target_weight=1.0,
        non_target_weight=8.0,
        teacher_layer_name=None,
        student_layer_name=None,
        **kwargs,
    ):
        weights = {"target_weight": target_weight, "non_target_weight": non_target_weight}
        super().__init__(temperature, teacher_layer_name, student_layer_name, weights, **kwargs)


@keras.saving.register_keras_serializable(package="tfkd")
class CorrelationDistillation(_LogitsLoss):
    """DIST (Huang et al., NeurIPS 2022): correlation of predictions, within and across examples.

    Asks the student to rank the classes of each example as the teacher does
    (inter-class Pearson correlation) and to rank the examples of the batch for
    each class as the teacher does (intra-class correlation); see
    `correlation_distance`. Meant for a teacher much stronger than its student.
    The intra-class term uses the whole batch: prefer batches of 32 or more,
    and note that per-example sample weights do not weigh it.

    Args:
        temperature: Softmax temperature, > 0, or a schedule of the step
            (`tfkd.distill.schedules`). Defaults to `1.0`, as
            `LogitsDistillation` (the paper's ImageNet setting; on CIFAR-100 it
            used 4.0 with both weights 2.0).
        inter_class_weight: Weight of the per-example term (beta), >= 0.
            Defaults to `1.0`.
        intra_class_weight: Weight of the per-class term (gamma), >= 0.
            Defaults to `1.0`.
        teacher_layer_name: Teacher layer to read, `None` for its output.
            Defaults to `None`.
        student_layer_name: Student layer to read, `None` for its output.
            Defaults to `None`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    ```python
    loss = tfkd.distill.CorrelationDistillation(temperature=1.0)
    distiller = tfkd.Distiller(teacher, student, distillation_losses=loss)
    ```
    """

    function = staticmethod(correlation_distance)

    def __init__(
        self,
        temperature=DEFAULT_TEMPERATURE,
        inter_class_weight=1.0,
        intra_class_weight=1.0,
        teacher_layer_name=None,
        student_layer_name=None,
        **kwargs,
    ):
        weights = {
            "inter_class_weight": inter_class_weight,
            "intra_class_weight": intra_class_weight,
        }
        super().__init__(temperature, teacher_layer_name, student_layer_name, weights, **kwargs)
