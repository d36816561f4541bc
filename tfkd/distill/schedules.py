"""Schedules for distillation: a temperature or a loss weight that follows the training step.

A schedule is any callable `schedule(step) -> value`, like a pruning schedule or a
learning-rate schedule; the objects of `keras.optimizers.schedules` work as they
are (and are saved with the model), e.g. a temperature that falls from 4 to 1:

```python
temperature = keras.optimizers.schedules.PolynomialDecay(4.0, 1000, end_learning_rate=1.0)
loss = tfkd.distill.LogitsDistillation(temperature=temperature)
```

The `Distiller` evaluates schedules at its own count of training steps (from 0,
one per batch of `fit`, saved with it) inside each training step; a loss called on
its own reads step 0.
"""

import contextlib
import contextvars
import numbers

import keras
from keras import ops

from tfkd._checks import is_number, shown
from tfkd.distill._checks import is_tensor

__all__ = ["at_step", "value_at_current_step"]

_STEP = contextvars.ContextVar("tfkd_distillation_step", default=None)


def at_step(step):
    """Evaluates every schedule read inside the block at `step`.

    Args:
        step: The training step, an int >= 0 or a scalar integer tensor or
            variable; `None` reads step 0.

    Returns:
        A context manager.
    """
    _check_step(step)
    return _at_step(step)


@contextlib.contextmanager
def _at_step(step):
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


def value_at_current_step(value):
    """`value` itself, or a schedule's value at the current step, as float32.

    Args:
        value: A number, a scalar tensor, or a schedule `value(step) -> number`.

    Returns:
        `value` itself, or the schedule's value as a float32 tensor.
    """
    if not callable(value):
        if not (is_number(value) or is_tensor(value)):
            raise TypeError(
                "`value` must be a number, a tensor or a schedule `value(step) -> number`. "
                f"Received: value={shown(value)} of type {type(value).__name__}."
            )
        return value
    step = _STEP.get()
    step = ops.zeros((), "int64") if step is None else step
    try:
        result = value(step)
    except TypeError as error:
        raise TypeError(
            "`value` is callable, so it is read as a schedule `value(step) -> number`, but "
            f"calling it with the step failed ({error}). Received: value={shown(value)}."
        ) from error
    if not (is_number(result) or is_tensor(result)):
        raise TypeError(
            "`value` is a schedule, which must return a number. Received: value="
            f"{shown(value)}, which returned {shown(result)} of type {type(result).__name__}."
        )
    return ops.cast(result, "float32")


def _check_step(step):
    if step is None:
        return
    if is_tensor(step):
        dtype, shape = keras.backend.standardize_dtype(step.dtype), tuple(step.shape)
        if "int" not in dtype:
            raise TypeError(f"`step` must be an integer tensor. Received: step of dtype {dtype}.")
        if shape:
            raise ValueError(f"`step` must be a scalar. Received: step of shape {shape}.")
        return
    if not isinstance(step, numbers.Integral) or isinstance(step, bool):
        raise TypeError(
            f"`step` must be an int >= 0, a scalar integer tensor or None. Received: "
            f"step={shown(step)} of type {type(step).__name__}."
        )
    if step < 0:
        raise ValueError(f"`step` must be >= 0 (the first step is 0). Received: step={step}.")


def validate(name, value, check, steps=(0,)):
    """Returns `value`, a number that passes `check(name, number)` or a schedule.

    A schedule is checked through its values at `steps` (step 0 when a loss or a
    Distiller is made; `Distiller.fit` checks the steps it will run, see
    `steps_to_check`), so a wrong one fails before training and not in its middle.
    """
    if not callable(value) or isinstance(value, bool):
        check(name, value)
        return value
    for step in steps:
        try:
            number = float(ops.convert_to_numpy(value(step)))
        except Exception as error:
            raise TypeError(
                f"`{name}` is callable, so it is read as a schedule `{name}(step) -> number`, "
                f"but calling it at step {step} failed ({type(error).__name__}: {error}). "
                f"Received: {name}={value!r}."
            ) from error
        check(f"{name}({step})", number)
    return value


def steps_to_check(first, last):
    """The steps of `[first, last]` at which `Distiller.fit` reads its schedules: both
    ends and the powers of 10 between (a schedule is checked, not every step of it)."""
    powers = [10**exponent for exponent in range(1, 10) if first < 10**exponent < last]
    return sorted({first, *powers, last})


def serialize(value):
    """A number as it is; a schedule as a Keras config (a Keras schedule object saves)."""
    return keras.saving.serialize_keras_object(value) if callable(value) else value


def deserialize(value):
    return keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value
