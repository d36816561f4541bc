"""What a model takes as input, for every kind of Keras model export meets.

Functional and built Sequential models list their inputs (`model.inputs`); subclassed
models only record the shape of their first call (`get_build_config`), as Keras's own
`model.export` reads it; a Sequential model without `keras.Input` has no inputs until it
is called, and export builds it on the calibration data.
"""

import collections

import keras
import numpy as np

# `shape` excludes the batch dimension.
ModelInput = collections.namedtuple("ModelInput", ["name", "shape", "dtype"])


def model_inputs(model):
    """One `ModelInput` per input of `model`, or `None` while it has no input shape yet."""
    try:
        tensors = model.inputs
    except (AttributeError, ValueError):  # Sequential before its first call, subclassed
        tensors = None
    if tensors:
        return [
            ModelInput(
                tensor.name, tuple(tensor.shape[1:]), keras.backend.standardize_dtype(tensor.dtype)
            )
            for tensor in tensors
        ]
    if not model.built:
        return None
    return _from_build_config(model)


def call_structure(model, arrays):
    """`arrays`, one per input in the order of `model.inputs`, as `model` takes them: one
    array, a list, or the dict a functional model was built on, which Keras does not
    take as a list."""
    structure = getattr(model, "_inputs_struct", None)
    if isinstance(structure, dict):
        return keras.tree.pack_sequence_as(structure, list(arrays))
    return arrays[0] if len(arrays) == 1 else list(arrays)


def _from_build_config(model):
    config = model.get_build_config() or {}
    shape = config.get("input_shape")
    dtype = keras.backend.standardize_dtype(model.input_dtype)
    if _is_shape(shape):
        return [ModelInput("input", tuple(shape[1:]), dtype)]
    if isinstance(shape, (list, tuple)) and shape and all(_is_shape(item) for item in shape):
        return [
            ModelInput(f"input_{index}", tuple(item[1:]), dtype) for index, item in enumerate(shape)
        ]
    raise ValueError(
        f"Cannot tell the inputs of model {model.name!r} ({type(model).__name__}) from its "
        f"first call. Received: build config {config}. Export supports subclassed models "
        "called on one tensor or on a list of tensors; for other signatures wrap it in a "
        "functional model: `inputs = keras.Input(shape); "
        "keras.Model(inputs, model(inputs))`."
    )


def _is_shape(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) >= 1
        and all(item is None or isinstance(item, int) for item in value)
    )


def require_inputs(model, first_batch):
    """`model_inputs(model)`, building a never-called model on `first_batch` if needed.

    Raises:
        ValueError: the model has no input shape and there is no batch to build it on.
    """
    inputs = model_inputs(model)
    if inputs is not None:
        return inputs
    if first_batch is None:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no input shape yet: it "
            "was never called or built, so there is nothing to export. Received: a model "
            "with no inputs and representative_data=None. Start it with "
            "`keras.Input(shape)`, call it once on a batch (`model(x[:1])`), or pass "
            "`representative_data` to build it on."
        )
    # Cast as Keras casts inputs (uint8 images build a float32 model, like `fit` does).
    batch = keras.tree.map_structure(
        lambda array: np.asarray(array, model.input_dtype), first_batch
    )
    try:
        model(batch)
    except Exception as error:  # whatever the model's own `call` raises
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) was never called, and calling it "
            "on the first batch of `representative_data` to build it failed. Received: a "
            f"batch of shape {np.shape(first_batch)}: {type(error).__name__}: {error}. Pass "
            "batches shaped like the model's inputs, or call the model once before export."
        ) from error
    return model_inputs(model)
