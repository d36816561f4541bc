"""Argument checks of the distillation losses, schedules and mixing functions.

Each fails early with the Keras template: what is wrong, `Received: name=value`,
what is accepted. Numbers are Python's or numpy's; a tensor argument (a schedule's
value inside a training step) passes the value checks, which cannot read it
while tracing.
"""

import numbers

import keras
import numpy as np

from tfkd._checks import check_number, shown
from tfkd._checks import check_temperature as check_temperature_range

_NUMERIC_DTYPES = ("float", "bfloat", "int", "uint")


def is_tensor(value):
    """A tensor, variable or array (not a numpy scalar, which is a number)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic)


def validate_temperature(temperature, name="temperature"):
    """Raises a clear error unless `temperature` is a positive number."""
    check_temperature_range(name, temperature)


def check_temperature_value(name, temperature):
    """`validate_temperature` with the arguments in `check(name, value)` order (as
    `schedules.validate` calls its check)."""
    validate_temperature(temperature, name)


def validate_weight(name, weight):
    """Raises a clear error unless `weight` (argument `name`) is a number >= 0."""
    check_number(name, weight, low=0, hint="Use 0 to switch the term off.")


def check_scalar(name, value, check):
    """`check(name, value)` on a number; a tensor passes (its value is unknown while tracing)."""
    if not is_tensor(value):
        check(name, value)


def check_temperature(temperature):
    """`validate_temperature` on a number; a tensor (a schedule's value) passes."""
    check_scalar("temperature", temperature, check_temperature_value)


def tensor_shape(name, value, min_rank=1):
    """The shape of `value`, a tensor or (nested list of) numbers with `min_rank` axes or more.

    Returns None for a tensor of unknown rank.
    """
    if not is_tensor(value):
        array = None
        if isinstance(value, (list, tuple, numbers.Number)) and not isinstance(value, bool):
            try:
                array = np.asarray(value)
            except ValueError:  # a ragged list
                array = None
        if array is None or array.dtype.kind not in "iuf":
            raise TypeError(
                f"`{name}` must be a tensor or array of numbers. Received: {name}="
                f"{shown(value)} of type {type(value).__name__}."
            )
        value = array
    if not _numeric(value.dtype):
        raise TypeError(f"`{name}` must hold numbers. Received: {name} of dtype {value.dtype}.")
    try:
        shape = tuple(value.shape)
    except ValueError:  # a TensorFlow tensor of unknown rank
        return None
    if len(shape) < min_rank:
        raise ValueError(
            f"`{name}` must have at least {min_rank} axes (the batch first). Received: "
            f"{name} of shape {shape}."
        )
    return shape


def check_same_shape(teacher_outputs, student_outputs, name):
    """Raises a clear error where two outputs' known dimensions differ: the maths would
    broadcast them into a wrong, finite loss."""
    teacher_shape = tensor_shape("teacher_outputs", teacher_outputs)
    student_shape = tensor_shape("student_outputs", student_outputs)
    if teacher_shape is None or student_shape is None:
        return
    if not same_known_dimensions(teacher_shape, student_shape):
        raise ValueError(
            f"`{name}` compares outputs of the same shape. Received: teacher_outputs of "
            f"shape {teacher_shape} and student_outputs of shape {student_shape}."
        )


def same_known_dimensions(first, second):
    """Whether two shapes have the same rank and agree wherever both sizes are known."""
    return len(first) == len(second) and all(
        a is None or b is None or a == b for a, b in zip(first, second)
    )


def _numeric(dtype):
    try:
        return keras.backend.standardize_dtype(dtype).startswith(_NUMERIC_DTYPES)
    except (ValueError, TypeError, AttributeError):
        return False
