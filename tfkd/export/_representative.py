"""Turns the many forms of calibration data into one numpy array per model input."""

import numpy as np

from tfkd._checks import check_finite_array

# Stands for the one input of a model that has none yet (never called): its data must
# come in batches.
_UNKNOWN_INPUT = None


def collect(data, inputs, limit, name="representative_data"):
    """Up to `limit` samples of `data` as a list with one array per model input.

    `inputs` are the model's `_signature.ModelInput`s, or `None` for a model that has
    no input shape yet (taken to have one input). `name`: the argument `data` was
    given as, which errors name.
    """
    names = [_UNKNOWN_INPUT] if inputs is None else [model_input.name for model_input in inputs]
    if _is_labelled_arrays(data, len(names)):
        data = data[0]  # (x, y) or (x, y, sample_weight), as `fit` takes them
    if isinstance(data, np.ndarray) or _is_arrays(data, len(names)):
        arrays = _checked([np.asarray(array) for array in _per_input(data, names, name)], name)
        return [array[:limit] for array in arrays]
    elements = data() if callable(data) and not hasattr(data, "__iter__") else data
    if not hasattr(elements, "__iter__"):
        raise TypeError(
            f"`{name}` must be a numpy array (or a list/dict of arrays, one per "
            "input), a tf.data.Dataset, or an iterable of batches. "
            f"Received: {name} of type {type(data).__name__}."
        )
    batches, count = [], 0
    for element in elements:
        arrays = [
            np.asarray(array) for array in _per_input(_inputs_of(element, names), names, name)
        ]
        if inputs is not None:  # unbatched elements (one sample each) get a batch axis
            arrays = [
                array if array.ndim == len(model_input.shape) + 1 else array[None]
                for array, model_input in zip(arrays, inputs, strict=True)
            ]
        batches.append(arrays)
        count += len(arrays[0])
        if count >= limit:
            break
    if not batches:
        raise ValueError(f"`{name}` is empty. Received: no elements.")
    return _checked([np.concatenate(parts)[:limit] for parts in zip(*batches, strict=True)], name)


def _checked(arrays, name):
    """`arrays`, refused when they hold no sample, objects or strings, or NaN or infinite
    values (the converter would calibrate on them without complaint, and leave the
    layers in float)."""
    for array in arrays:
        if array.ndim == 0 or len(array) == 0:
            raise ValueError(
                f"`{name}` holds no samples. Received: {name} of shape {array.shape}. "
                "Pass a few hundred training inputs."
            )
        check_finite_array(name, array)
    return arrays


def _is_arrays(data, count):
    if isinstance(data, dict):
        return all(isinstance(value, np.ndarray) for value in data.values())
    return (
        isinstance(data, (list, tuple))
        and len(data) == count
        and all(isinstance(value, np.ndarray) for value in data)
    )


def _is_labelled_arrays(data, count):
    """Whether `data` is `(x, y)` or `(x, y, sample_weight)` numpy arrays of one length for
    a one-input model. Read as samples, the labels became one more batch (or, as long as a
    sample's features, one more sample to calibrate on)."""
    return (
        count == 1
        and isinstance(data, tuple)
        and len(data) in (2, 3)
        and all(isinstance(value, np.ndarray) and value.ndim > 0 for value in data)
        and len({len(value) for value in data}) == 1
    )


def _inputs_of(element, names):
    """Drops targets and sample weights from `(x, y)` / `(x, y, w)` elements."""
    if isinstance(element, (list, tuple)) and len(names) == 1 and len(element) in (1, 2, 3):
        return element[0]
    if isinstance(element, (list, tuple)) and len(element) in (2, 3):
        first = element[0]
        if isinstance(first, (list, tuple, dict)) and len(first) == len(names):
            return first
    return element


def _per_input(data, names, name):
    if isinstance(data, dict) and names == [_UNKNOWN_INPUT]:
        raise ValueError(
            f"The model has no inputs yet (never called), so `{name}` cannot "
            f"be given by input name. Received keys: {sorted(data)}. Pass an array, or call "
            "the model once on a batch first."
        )
    if isinstance(data, dict):
        missing = [input_name for input_name in names if input_name not in data]
        if missing:
            raise ValueError(
                f"`{name}` lacks model inputs {missing}. Received keys: {sorted(data)}."
            )
        return [data[input_name] for input_name in names]
    if len(names) == 1:
        return [data]
    if not isinstance(data, (list, tuple)) or len(data) != len(names):
        raise ValueError(
            f"The model has {len(names)} inputs {names}; `{name}` must give one "
            f"array per input. Received: an element of type {type(data).__name__}."
        )
    return list(data)


def as_model_inputs(samples, inputs, name="representative_data"):
    """`samples` in the dtype and shape each model input takes (`name`: the argument
    they were given as, which errors name).

    The dtype comes from the model, not the data: uint8 images calibrate a float32
    input with the float32 values Keras computes on, and token ids stay integers. A
    missing trailing axis of size 1 (`(N, 28, 28)` images for a `(28, 28, 1)` input)
    is added, as Keras adds it. Refused where every sample is the same (all zeros, one
    example repeated: a loader's bug): the int8 ranges would fit that one input, and the
    export's check against Keras, run on the same samples, would agree (1.0, where the
    file agreed with Keras on 0.72 of real inputs).
    """
    arrays = [
        _fit(array, model_input, name) for array, model_input in zip(samples, inputs, strict=True)
    ]
    if len(arrays[0]) > 1 and all(np.all(array == array[:1]) for array in arrays):
        raise ValueError(
            f"`{name}` holds {len(arrays[0])} samples that are all the same. Received: "
            f"{name} of shape {arrays[0].shape} whose samples all equal the first (all "
            "zeros, or one example repeated?). Pass a few hundred different training inputs."
        )
    return arrays


def _fit(array, model_input, name):
    expected = (None, *model_input.shape)
    if array.ndim == len(expected) - 1 and expected[-1] == 1:
        array = array[..., None]
    compatible = array.ndim == len(expected) and all(
        want is None or want == got for want, got in zip(expected, array.shape, strict=True)
    )
    if not compatible:
        raise ValueError(
            f"`{name}` does not fit model input {model_input.name!r} of shape "
            f"{expected}. Received: samples of shape {array.shape}. Pass inputs shaped like "
            "the model's: an array of samples, or a dataset of batches."
        )
    # Finite float64 values can overflow the model's float32 (or float16) input, and the
    # converter crashes the process calibrating on the infinities.
    check_finite_array(name, array, model_input.dtype)
    return array.astype(model_input.dtype)
