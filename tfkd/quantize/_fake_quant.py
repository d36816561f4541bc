"""Fake quantization: round to the int8 grid TFLite will use, and back, in `keras.ops`.

`fake_quant` reproduces TensorFlow's `FakeQuantWithMinMaxVars` bit for bit (the
range is nudged so that 0.0 is exactly representable, values round half up), with
its gradient: straight through inside the range, zero outside. Training with it on
any backend therefore sees the numbers the integer model will compute. While a
model is exported, `export_mode()` makes the same call emit TensorFlow's own
fake-quant ops instead, which the TFLite converter reads as quantization
parameters.
"""

import contextlib
import numbers
import threading

import numpy as np
from keras import ops

# Guards against a zero-width range (an all-zero channel, a constant activation).
MIN_RANGE = 1e-6


class _Exports(threading.local):
    """How many `export_mode()` contexts this thread is in: another thread that trains a
    quantization-aware model meanwhile keeps its own fake quantization."""

    depth = 0


_EXPORTS = _Exports()


def exporting():
    """Whether this thread traces a model for export (inside `export_mode()`)."""
    return _EXPORTS.depth > 0


@contextlib.contextmanager
def export_mode():
    """Within this context (on this thread) `fake_quant` emits TensorFlow fake-quant ops
    (TF backend only)."""
    _EXPORTS.depth += 1
    try:
        yield
    finally:
        _EXPORTS.depth -= 1


def fake_quant(x, min_value, max_value, *, num_bits=8, narrow_range=False):
    """Quantizes `x` to `num_bits` over `[min_value, max_value]` and dequantizes it.

    Args:
        x: a tensor.
        min_value, max_value: scalars for one range, or vectors for one range per
            entry of the last axis of `x` (both of the same shape).
        num_bits: bits of the integer grid. Defaults to `8`.
        narrow_range: use `[1, 2**num_bits - 1]`, symmetric around 0 when the range
            is, as TFLite wants for weights. Defaults to `False`.

    Returns:
        A tensor like `x` holding only values of the integer grid.

    Raises:
        TypeError, ValueError: for an `x` that is not a tensor (a string, `None`),
            `num_bits` outside 2..16, a `narrow_range` that is not a bool, a range that is
            not numbers, ranges that are neither two scalars nor two vectors as long as
            the last axis of `x` (tensors too), or a range given as numbers whose minimum
            is not below its maximum (the values of tensors, e.g. a layer's range
            variables, are not checked).
    """
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(
            f"`x` must be a tensor of floats. Received: x={x!r:.80} of type {type(x).__name__}."
        )
    _check_bits(num_bits, narrow_range)
    min_value, max_value = _checked_range(x, min_value, max_value)
    if exporting():
        return _tensorflow_fake_quant(x, min_value, max_value, num_bits, narrow_range)
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = 2.0**num_bits - 1.0
    scale = (max_value - min_value) / (quant_max - quant_min)
    zero_point = ops.clip(quant_min - min_value / scale, quant_min, quant_max)
    zero_point = ops.floor(zero_point + 0.5)
    nudged_min = (quant_min - zero_point) * scale
    nudged_max = (quant_max - zero_point) * scale
    clipped = ops.minimum(ops.maximum(x, nudged_min), nudged_max)
    steps = ops.floor((clipped - nudged_min) * (1.0 / scale) + 0.5)
    quantized = steps * scale + nudged_min
    return clipped + ops.stop_gradient(quantized - clipped)


def _check_bits(num_bits, narrow_range):
    if isinstance(num_bits, (bool, np.bool_)) or not isinstance(num_bits, numbers.Integral):
        raise TypeError(f"`num_bits` must be an int. Received: num_bits={num_bits!r}.")
    if not 2 <= num_bits <= 16:
        raise ValueError(f"`num_bits` must be in 2..16. Received: num_bits={num_bits}.")
    if not isinstance(narrow_range, (bool, np.bool_)):
        raise TypeError(
            f"`narrow_range` must be True or False. Received: narrow_range={narrow_range!r}."
        )


def _checked_range(x, min_value, max_value):
    """Numbers and numpy arrays as float32 arrays, checked; tensors as they are, their
    shapes checked."""
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
            raise TypeError(
                f"`{name}` must be a number, or a vector of numbers for one range per channel. "
                f"Received: {name}={value!r:.80} of type {type(value).__name__}."
            )
    concrete = (numbers.Real, np.ndarray, list, tuple)
    if not (isinstance(min_value, concrete) and isinstance(max_value, concrete)):
        _check_shapes(x, min_value, max_value)
        return min_value, max_value
    low, high = _float_array("min_value", min_value), _float_array("max_value", max_value)
    _check_shapes(x, low, high)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise ValueError(
            "`min_value` must be below `max_value`, both finite. Received: "
            f"min_value={min_value!r:.80}, max_value={max_value!r:.80}."
        )
    return low, high


def _check_shapes(x, min_value, max_value):
    """Refuses ranges that are neither two scalars nor two vectors of one entry per channel
    (the last axis of `x`): the backends failed on broadcasting them, in their own words,
    and TensorFlow's per-channel op (export) on any other length."""
    x_shape, shapes = _shape(x), (_shape(min_value), _shape(max_value))
    if None in (x_shape, *shapes) or shapes == ((), ()):
        return  # an unknown rank (a TensorFlow graph) is left to the backend
    channels = x_shape[-1] if x_shape else -1  # a scalar `x` has no channels
    length = shapes[0][0] if len(shapes[0]) == 1 and shapes[0] == shapes[1] else -1
    if length != -1 and (length == channels or None in (length, channels)):
        return
    accepted = "()" if not x_shape else f"() or ({channels},)"
    raise ValueError(
        "`min_value` and `max_value` must be scalars (one range for all of `x`) or vectors "
        "with one range per entry of the last axis of `x` (per channel). Received: "
        f"min_value of shape {shapes[0]} and max_value of shape {shapes[1]} for x of shape "
        f"{x_shape}. Pass both of shape {accepted}."
    )


def _shape(value):
    """`value`'s shape as a tuple (None for an unknown size), or None for an unknown rank."""
    shape = getattr(value, "shape", None)
    if shape is None:
        shape = np.shape(value)
    try:
        return tuple(None if size is None else int(size) for size in shape)
    except (TypeError, ValueError):
        return None


def _float_array(name, value):
    try:
        return np.asarray(value, "float32")
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be a number, or a vector of numbers for one range per channel. "
            f"Received: {name}={value!r:.80}."
        ) from error


def _tensorflow_fake_quant(x, min_value, max_value, num_bits, narrow_range):
    import tensorflow as tf

    options = dict(num_bits=num_bits, narrow_range=narrow_range)
    if len(min_value.shape) == 0:
        return tf.quantization.fake_quant_with_min_max_vars(x, min_value, max_value, **options)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, min_value, max_value, **options
    )


def symmetric_range(weights, axis=None):
    """`(-a, a)` with `a` the largest magnitude of `weights`, per entry of `axis` if given."""
    magnitudes = ops.abs(weights)
    if axis is None:
        largest = ops.max(magnitudes)
    else:
        reduce = [dim for dim in range(len(weights.shape)) if dim != axis % len(weights.shape)]
        largest = ops.max(magnitudes, axis=reduce)
    largest = ops.maximum(largest, MIN_RANGE)
    return -largest, largest
