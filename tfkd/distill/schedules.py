"""Schedules for distillation: a temperature or a loss weight that follows the training step.

A schedule is any callable `schedule(step) -> value`, like a pruning schedule or a
learning-rate schedule; the objects of `keras.optimizers.schedules` work as they
are (and are saved with the model), e.g. a temperature that falls from 4 to 1:

```python
temperature = keras.optimizers.schedules.PolynomialDecay(4.0, 1000, end_learning_rate=1.0)
loss = tfkd.distill.LogitsDistillation(temperature=temperature)
```

The `Distiller` evaluates schedules at its optimizer's step (`optimizer.iterations`,
from 0) inside each training step; a loss called on its own reads step 0.
"""

import contextlib
import contextvars

import keras
from keras import ops

_STEP = contextvars.ContextVar("tfkd_distillation_step", default=None)


@contextlib.contextmanager
def at_step(step):
    """Evaluates every schedule read inside the block at `step` (a scalar tensor)."""
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


def value_at_current_step(value):
    """`value` itself, or a schedule's value at the current step, as float32."""
    if not callable(value):
        return value
    step = _STEP.get()
    step = ops.zeros((), "int64") if step is None else step
    return ops.cast(value(step), "float32")


def validate(name, value, check):
    """Returns `value`, a number that passes `check(name, number)` or a schedule.

    A schedule is checked through its value at step 0, so a wrong one fails
    when the loss is made and not in the middle of training.
    """
    if not callable(value) or isinstance(value, bool):
        check(name, value)
        return value
    try:
        first = float(ops.convert_to_numpy(value(0)))
    except Exception as error:
        raise TypeError(
            f"`{name}` is callable, so it is read as a schedule `{name}(step) -> number`, "
            f"but calling it at step 0 failed ({type(error).__name__}: {error}). "
            f"Received: {name}={value!r}."
        ) from error
    check(f"{name}(0)", first)
    return value


def serialize(value):
    """A number as it is; a schedule as a Keras config (a Keras schedule object saves)."""
    return keras.saving.serialize_keras_object(value) if callable(value) else value


def deserialize(value):
    return keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value
