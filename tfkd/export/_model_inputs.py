"""What `TFLiteModel` takes: its inputs (one array, or one per input of the file), an
example to time, and class labels, each checked before the interpreter runs."""

import math

import numpy as np


def check_array(x):
    """Refuses a dataset or generator for `x`, which `predict` does not iterate."""
    if hasattr(x, "element_spec") or not hasattr(x, "__len__"):
        raise TypeError(
            "`x` must be an array of inputs (numpy, or a list of numbers). Received: x of "
            f"type {type(x).__name__}. For a tf.data.Dataset of (x, y) batches: "
            "np.concatenate([x for x, _ in dataset])."
        )


def check_labels(y, count):
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != count:
        raise ValueError(
            "`y` must hold one integer class label per sample of `x`. Received: y of shape "
            f"{labels.shape} for {count} samples of x. Pass labels of shape ({count},) "
            "(for one-hot labels, `y.argmax(-1)`)."
        )
    floats = labels.dtype.kind == "f"
    whole = labels.dtype.kind in "iu" or (
        floats and bool(np.all(np.isfinite(labels) & (labels == np.round(labels))))
    )
    if not whole:
        # Before: float labels were truncated (0.9 read as class 0) and strings failed in int().
        which = "values that are not whole numbers" if floats else f"dtype {labels.dtype}"
        raise TypeError(
            f"`y` must hold integer class labels. Received: y with {which}, e.g. "
            f"{labels.ravel()[:3].tolist()}. Map them to class ids 0, 1, ... first."
        )
    return labels.astype(np.int64)


def one_example(details, sample, name):
    """`sample` as a batch of one example of the input `details` describes; zeros of its
    shape for `None`, which needs an input without open sizes."""
    signature = [int(size) for size in details["shape_signature"][1:]]
    if sample is None:
        if min(signature, default=0) < 0:
            raise ValueError(
                f"`{name}` is needed: the model's input leaves sizes open (e.g. a text's "
                f"length). Received: {name}=None for an input of shape {[None, *signature]} "
                "(-1: open). Pass one example, e.g. sample=x_test[:1]."
            )
        return np.zeros([1, *signature], details["dtype"])
    sample = np.asarray(sample)
    if min(signature, default=0) >= 0:
        if sample.size != math.prod(signature):
            raise ValueError(
                f"`{name}` must be one example of the model's input {[None, *signature]}, "
                f"with or without its batch axis. Received: {name} of shape {sample.shape}."
            )
        return sample.reshape([1, *signature])
    return sample[None] if sample.ndim == len(signature) else sample


def fit_rank(x, details):
    """`x` as a batch of the input `details` describes: as Keras does, `(N, 28, 28)` images
    feed a `(28, 28, 1)` input. Refused where its rank or known sizes differ, or it holds
    no example: before, LiteRT failed to prepare the file on one example without its batch
    axis (an UnsafeFileError, as for a hostile file), and no example gave `[]`."""
    expected = [int(size) for size in details["shape_signature"]]
    if not expected:  # a scalar input, resized to the batch (`_interpreter._fixed_batch`)
        return x
    one, received = x.ndim == len(expected) - 1, x.shape  # one example without its batch axis?
    if one and expected[-1] == 1:
        x = x[..., None]
    known = all(size < 0 or size == got for size, got in zip(expected[1:], x.shape[1:]))
    if x.ndim != len(expected) or not known or not len(x):
        shape = [None if size < 0 else size for size in expected[1:]]
        raise ValueError(
            f"`x` must be a batch of one or more inputs of shape {[None, *shape]} (input "
            f"{details['name']!r}). Received: x of shape {received}."
            + (" For one example, add its batch axis: x[None]." if one else "")
        )
    return x


def by_input(x, names, name):
    """The values of the dict `x` in the order of `names` (a file's several inputs)."""
    if not isinstance(x, dict):
        raise TypeError(
            f"`{name}` must be a dict from input name to array: the file has "
            f"{len(names)} inputs, {names}. Received: {name} of type {type(x).__name__}. "
            "`tfkd.export_tflite` names them after the Keras model's inputs: "
            "`dict(zip([tensor.name for tensor in model.inputs], x))`."
        )
    if set(x) != set(names):
        raise ValueError(
            f"`{name}` must have one array for each input of the file, {names}. "
            f"Received: {name} with keys {list(x)}."
        )
    return [x[input_name] for input_name in names]
