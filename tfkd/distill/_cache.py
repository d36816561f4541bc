"""A file cache for teacher outputs, keyed by the inputs, the teacher's architecture and its
weights; what a file holds is checked before it is used."""

import hashlib
import inspect
import io
import json
import os

import numpy as np

from tfkd import _atomic

_FINGERPRINT = "__fingerprint__"


def fingerprint(x, model, keys):
    """SHA-256 over the inputs (array or dict of arrays), the teacher's architecture (each
    layer's class and config, and the code of classes outside Keras: a changed
    preprocessing layer holds no weights), its weights and `keys`."""
    digest = hashlib.sha256()
    for name, array in _flatten(x):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.data)
    digest.update(json.dumps(architecture(model), default=repr).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy() if hasattr(weight, "numpy") else weight)
        digest.update(f"{weight.path}:{value.shape};".encode())
        digest.update(value.data)
    digest.update(json.dumps(sorted(keys)).encode())
    return digest.hexdigest()


def architecture(model):
    """What defines `model`'s computation besides its weights, as plain data."""
    layers = []
    for layer in model._flatten_layers(include_self=True):
        cls = type(layer)
        try:
            config = layer.get_config()
        except (NotImplementedError, TypeError, ValueError):  # a subclass without a config
            config = None
        code = None
        if not cls.__module__.startswith("keras."):
            try:
                code = inspect.getsource(cls)
            except (OSError, TypeError):  # defined where no source is kept
                code = None
        layers.append([f"{cls.__module__}.{cls.__qualname__}", config, code])
    return layers


def load(path, expected, rows):
    """The cached dict at `path` if its fingerprint is `expected` and each array holds
    `rows` finite floating-point rows, else None (the caller recomputes and overwrites)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored[_FINGERPRINT]) != expected:
                return None
            outputs = {key: stored[key] for key in stored.files if key != _FINGERPRINT}
    except (OSError, ValueError, KeyError, EOFError):
        return None  # unreadable or partial
    for value in outputs.values():
        if value.dtype.kind != "f" or value.ndim < 1 or len(value) != rows:
            return None
        if not np.all(np.isfinite(value)):
            return None
    return outputs or None


def save(path, outputs, stamp):
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **{key: np.asarray(value) for key, value in outputs.items()},
        **{_FINGERPRINT: np.asarray(stamp)},
    )
    _atomic.write_bytes(path, buffer.getvalue())


def rows(x):
    """The number of examples in `x` (an array, or a dict or list of arrays)."""
    return len(next(_flatten(x))[1])


def _flatten(x):
    if isinstance(x, dict):
        for name in sorted(x):
            yield name, np.asarray(x[name])
    elif isinstance(x, (list, tuple)):
        for index, item in enumerate(x):
            yield str(index), np.asarray(item)
    else:
        yield "x", np.asarray(x)
