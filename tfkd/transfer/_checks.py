"""Argument checks of `tfkd.transfer`: each fails early, naming the argument and the value."""

import math
import numbers
import os

import keras

MOBILENET_POOLINGS = (None, "avg", "max")


def check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}.")


def check_positive_int(value, name):
    """`value` as an int (Keras layers refuse numpy integers)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}.")
    return int(value)


def check_dropout(dropout):
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool):
        raise TypeError(
            f"`dropout` must be a number in [0, 1). Received: dropout={dropout!r} of type "
            f"{type(dropout).__name__}."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}.")


def check_learning_rate(value, name):
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(value) and not isinstance(value, type)
    ):
        return  # Adam takes a schedule too
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a number > 0 or a learning rate schedule. Received: "
            f"{name}={value!r} of type {type(value).__name__}."
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}.")


def check_batch_size(batch_size):
    if batch_size is None:
        return  # Keras's default
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool):
        raise TypeError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r} "
            f"of type {type(batch_size).__name__}."
        )
    if batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}."
        )


def check_shape(value, name, length=None):
    """`value` as a tuple of positive ints; `None` sizes are allowed unless `length` is given."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"`{name}` must be a tuple of sizes, e.g. (28, 28, 1). Received: {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    value = tuple(value)
    allow_none = length is None
    bad = [
        size
        for size in value
        if not (size is None and allow_none)
        and (not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1)
    ]
    if bad or not value or (length is not None and len(value) != length):
        count = f"{length} " if length else ""
        raise ValueError(
            f"`{name}` must be a tuple of {count}positive ints. Received: {name}={value!r}."
        )
    return tuple(None if size is None else int(size) for size in value)


def check_path(path, name):
    """`path` as a str, or a TypeError for anything that is not a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a path (str or os.PathLike). Received: {name}={path!r} of type "
            f"{type(path).__name__}."
        )
    return os.fspath(path)


def check_file(path, name, accepted):
    path = check_path(path, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No file at `{name}`. Received: {name}={path!r}. Accepted: {accepted}."
        )
    return path


def check_mobilenet_arguments(input_shape, num_classes, include_top, pooling):
    """Checks the arguments of `mobilenet_v2`; returns `input_shape` as a tuple."""
    input_shape = check_shape(input_shape, "input_shape")
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), channels last. "
            f"Received: input_shape={input_shape!r}. Accepted: e.g. (224, 224, 3)."
        )
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool):
        raise TypeError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r} "
            f"of type {type(num_classes).__name__}."
        )
    check_positive_int(num_classes, "num_classes")
    check_bool(include_top, "include_top")
    if pooling not in MOBILENET_POOLINGS:
        raise ValueError(
            f"Unknown `pooling`. Received: pooling={pooling!r}. Accepted: {MOBILENET_POOLINGS}."
        )
    if include_top and pooling is not None:
        raise ValueError(
            "`pooling` applies only with `include_top=False`; the classifier always "
            f"averages. Received: pooling={pooling!r}, include_top=True. Pass "
            "include_top=False to get pooled features."
        )
    return input_shape
