"""Turns the many forms of calibration data into one numpy array per model input."""

import numpy as np


def collect(data, model, limit):
    """Up to `limit` samples of `data` as a list with one array per model input."""
    input_shapes = [tuple(tensor.shape) for tensor in model.inputs]
    if isinstance(data, np.ndarray) or _is_arrays(data, len(input_shapes)):
        return [np.asarray(array)[:limit] for array in _per_input(data, model)]
    elements = data() if callable(data) and not hasattr(data, "__iter__") else data
    if not hasattr(elements, "__iter__"):
        raise TypeError(
            "`representative_data` must be a numpy array (or a list/dict of arrays, one per "
            "input), a tf.data.Dataset, or an iterable of batches. "
            f"Received: representative_data of type {type(data).__name__}."
        )
    batches, count = [], 0
    for element in elements:
        arrays = [np.asarray(array) for array in _per_input(_inputs_of(element, model), model)]
        arrays = [
            array if array.ndim == len(shape) else array[None]
            for array, shape in zip(arrays, input_shapes, strict=True)
        ]
        batches.append(arrays)
        count += len(arrays[0])
        if count >= limit:
            break
    if not batches:
        raise ValueError("`representative_data` is empty. Received: no elements.")
    return [np.concatenate(parts)[:limit] for parts in zip(*batches, strict=True)]


def _is_arrays(data, count):
    if isinstance(data, dict):
        return all(isinstance(value, np.ndarray) for value in data.values())
    return (
        isinstance(data, (list, tuple))
        and len(data) == count
        and all(isinstance(value, np.ndarray) for value in data)
    )


def _inputs_of(element, model):
    """Drops targets and sample weights from `(x, y)` / `(x, y, w)` elements."""
    if isinstance(element, (list, tuple)) and len(model.inputs) == 1 and len(element) in (1, 2, 3):
        return element[0]
    if isinstance(element, (list, tuple)) and len(element) in (2, 3):
        first = element[0]
        if isinstance(first, (list, tuple, dict)) and len(first) == len(model.inputs):
            return first
    return element


def _per_input(data, model):
    names = [tensor.name for tensor in model.inputs]
    if isinstance(data, dict):
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(
                f"`representative_data` lacks model inputs {missing}. "
                f"Received keys: {sorted(data)}."
            )
        return [data[name] for name in names]
    if len(names) == 1:
        return [data]
    if not isinstance(data, (list, tuple)) or len(data) != len(names):
        raise ValueError(
            f"The model has {len(names)} inputs {names}; `representative_data` must give one "
            f"array per input. Received: an element of type {type(data).__name__}."
        )
    return list(data)
