"""Several teachers at once: one model whose logits soften into their weighted average.

`teacher_ensemble([a, b])` is a functional model that runs every teacher on the same
inputs and outputs `T * log(sum_i w_i * softmax(z_i / T))`. Softened at the same
temperature `T` (as any logits loss does), these logits give exactly the weighted
average of the teachers' softened distributions, so every logits loss distils the
ensemble unchanged. Each teacher's logits stay reachable by name inside it: a loss
with `teacher_layer_name="a_logits"` reads teacher `a` alone, which gives one loss per
teacher.
"""

import math
import warnings

import keras
import numpy as np
from keras import ops

from tfkd import _graph
from tfkd._checks import check_flag, is_number, shown
from tfkd.distill import _probe, _taps
from tfkd.distill._checks import (
    check_temperature,
    same_known_dimensions,
    tensor_shape,
    validate_temperature,
)
from tfkd.distill.losses import log_of_probabilities


def softened_average(teacher_logits, weights, *, temperature=1.0):
    """Logits whose softmax at `temperature` is the weighted mean of the teachers' softened outputs.

    Args:
        teacher_logits: A list of `(batch, classes)` logits, one per teacher
            (for a softmax teacher, the log of its probabilities).
        weights: One weight per teacher, >= 0, summing to 1.
        temperature: The temperature the distillation loss softens with, > 0.

    Returns:
        `T * log(sum_i w_i * softmax(z_i / T))`, shape `(batch, classes)`.

    Example:

    >>> import numpy as np
    >>> a = np.log(np.array([[0.8, 0.2]], dtype="float32"))
    >>> b = np.log(np.array([[0.4, 0.6]], dtype="float32"))
    >>> z = softened_average([a, b], [0.5, 0.5])
    >>> [round(v, 4) for v in keras.ops.convert_to_numpy(keras.ops.softmax(z))[0].tolist()]
    [0.6, 0.4]
    """
    _check_logits(teacher_logits)
    weights = _check_weights(weights, len(teacher_logits), normalize=False)
    check_temperature(temperature)
    logs = [
        # log(w * p) = log(w) + log(p), summed over teachers in log space.
        ops.log_softmax(ops.cast(logits, "float32") / temperature, axis=-1) + math.log(weight)
        for logits, weight in zip(teacher_logits, weights)
        if weight > 0
    ]
    return temperature * ops.logsumexp(ops.stack(logs, axis=0), axis=0)


@keras.saving.register_keras_serializable(package="tfkd")
class TeacherLogits(keras.layers.Layer):
    """A teacher's logits inside an ensemble: its output, or the log of its probabilities."""

    def __init__(self, from_probabilities=False, **kwargs):
        super().__init__(**kwargs)
        check_flag("from_probabilities", from_probabilities)
        self.from_probabilities = from_probabilities

    def call(self, outputs):
        return log_of_probabilities(outputs) if self.from_probabilities else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "from_probabilities": self.from_probabilities}


@keras.saving.register_keras_serializable(package="tfkd")
class SoftenedAverage(keras.layers.Layer):
    """The layer of `teacher_ensemble`: `softened_average` of its inputs (no weights to train)."""

    def __init__(self, weights, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.teacher_weights = _check_weights(weights, None, normalize=False)
        validate_temperature(temperature)
        self.temperature = float(temperature)

    def call(self, teacher_logits):
        return softened_average(
            list(teacher_logits), self.teacher_weights, temperature=self.temperature
        )

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        config = super().get_config()
        config.update(weights=self.teacher_weights, temperature=self.temperature)
        return config


def teacher_ensemble(teachers, weights=None, temperature=1.0, name="teacher_ensemble"):
    """Joins teachers into one teacher whose softened output is their weighted average.

    Args:
        teachers: Two or more trained Keras models that take the same inputs and
            predict the same classes (logits, or probabilities from a final softmax).
        weights: One weight per teacher, >= 0, normalised to sum to 1.
            Defaults to `None` (equal weights).
        temperature: The temperature of the distillation loss that will read
            the ensemble; the average is taken at this temperature. Defaults to
            `1.0`, `LogitsDistillation`'s default.
        name: Model name. Defaults to `"teacher_ensemble"`.

    Returns:
        A functional `keras.Model` to pass as a `Distiller`'s teacher. Its layer
        `"<teacher name>_logits"` gives that teacher's logits alone.

    Raises:
        TypeError, ValueError: For fewer than two models, models whose input or
            output shapes differ, or bad weights or temperature.

    Example:

    ```python
    teacher = tfkd.distill.teacher_ensemble([cnn_teacher, mobilenet_teacher], temperature=2.0)
    distiller = tfkd.Distiller(teacher, student, temperature=2.0)
    ```
    """
    teachers = _check_teachers(teachers)
    weights = _check_weights(weights, len(teachers))
    validate_temperature(temperature)
    shapes = _taps.input_shapes(teachers[0])
    inputs = [keras.Input(shape) for shape in shapes]
    logits = []
    for teacher in teachers:
        outputs = _taps.single(teacher(_taps.single(inputs)))
        if len(outputs.shape) != 2 or outputs.shape[-1] == 1:
            raise ValueError(
                "The teachers of an ensemble must each output one (batch, classes) tensor, "
                "with 2 classes or more (a binary teacher: two logits, Dense(2)). Received: "
                f"{teacher.name!r} with outputs {outputs!r}."
            )
        from_probabilities = bool(_graph.ends_in_softmax(teacher))
        if not from_probabilities and not _taps.shows_logits(_graph.output_layer(teacher)):
            # A softmax the graph does not show (a subclassed model's, a Lambda's): its
            # probabilities read as logits would weigh the teachers wrongly.
            from_probabilities = _probe.hidden_probabilities(teacher)
            if from_probabilities:
                warnings.warn(
                    f"The teacher {teacher.name!r} gives probabilities (each row of its "
                    "output on stand-in inputs is >= 0 and sums to 1), though its graph "
                    "shows no final softmax; the ensemble averages them as probabilities.",
                    stacklevel=2,
                )
        logits.append(TeacherLogits(from_probabilities, name=f"{teacher.name}_logits")(outputs))
    if len({tuple(tensor.shape[1:]) for tensor in logits}) != 1:
        raise ValueError(
            "The teachers of an ensemble must predict the same classes. Received: output "
            f"shapes {[tuple(tensor.shape) for tensor in logits]}."
        )
    average = SoftenedAverage(weights, temperature, name="softened_average")
    return keras.Model(_taps.single(inputs), average(logits), name=name)


def _check_teachers(teachers):
    if not isinstance(teachers, (list, tuple)):
        raise TypeError(
            "`teachers` must be a list of two or more Keras models. Received: "
            f"teachers={shown(teachers)} of type {type(teachers).__name__}."
        )
    if len(teachers) < 2:
        raise ValueError(
            "`teachers` must be a list of two or more Keras models. Received: "
            f"teachers={shown(teachers)}. Pass a single teacher to the Distiller directly."
        )
    for index, teacher in enumerate(teachers):
        if not isinstance(teacher, keras.Model):
            raise TypeError(
                f"`teachers[{index}]` must be a Keras model. Received: teachers[{index}]="
                f"{shown(teacher)} of type {type(teacher).__name__}."
            )
    shapes = [_taps.input_shapes(teacher) for teacher in teachers]
    if shapes[0] is None or any(shape != shapes[0] for shape in shapes):
        raise ValueError(
            "The teachers of an ensemble must take inputs of the same, known shape. Received: "
            f"input shapes {shapes} (None: never called; call it once or give it a keras.Input)."
        )
    names = [teacher.name for teacher in teachers]
    if len(set(names)) != len(names):
        raise ValueError(
            f"The teachers must have distinct names, so that each can be read by name. "
            f"Received: names {names}. Pass `name=` when building or loading them."
        )
    return list(teachers)


def _check_weights(weights, count, normalize=True):
    """One float per teacher (`count` of them, any number if None), >= 0 and not all 0,
    scaled to sum to 1 if `normalize`."""
    if weights is None and normalize:
        return [1.0 / count] * count
    values = list(weights) if isinstance(weights, (list, tuple, np.ndarray)) else None
    if values is None or not all(is_number(w) for w in values):
        raise TypeError(
            f"`weights` must be a list of numbers, one per teacher. Received: "
            f"weights={shown(weights)} of type {type(weights).__name__}."
        )
    count = len(values) if count is None else count
    if len(values) != count or not all(0 <= w < math.inf for w in values) or not sum(values) > 0:
        raise ValueError(
            f"`weights` must be {count} finite numbers >= 0, one per teacher, not all 0. "
            f"Received: weights={shown(weights)}."
        )
    total = sum(values) if normalize else 1.0
    return [float(w) / total for w in values]


def _check_logits(teacher_logits):
    if not isinstance(teacher_logits, (list, tuple)):
        raise TypeError(
            "`teacher_logits` must be a list of (batch, classes) logits, one per teacher. "
            f"Received: teacher_logits={shown(teacher_logits)} of type "
            f"{type(teacher_logits).__name__}."
        )
    if not teacher_logits:
        raise ValueError(
            "`teacher_logits` needs the logits of one teacher or more. Received: "
            f"teacher_logits={teacher_logits!r}."
        )
    shapes = [tensor_shape(f"teacher_logits[{i}]", z) for i, z in enumerate(teacher_logits)]
    known = [shape for shape in shapes if shape is not None]
    if any(not same_known_dimensions(shape, known[0]) for shape in known):
        raise ValueError(
            "The teachers' logits must have the same shape. Received: teacher_logits of "
            f"shapes {shapes}."
        )
