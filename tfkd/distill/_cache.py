"""A file cache for teacher outputs, keyed by the inputs and the teacher's weights."""

import hashlib
import io
import json
import os

import numpy as np

from tfkd import _atomic

_FINGERPRINT = "__fingerprint__"


def fingerprint(x, model, keys):
    """SHA-256 over the inputs (array or dict of arrays), the teacher's weights and `keys`."""
    digest = hashlib.sha256()
    for name, array in _flatten(x):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.data)
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy() if hasattr(weight, "numpy") else weight)
        digest.update(f"{weight.path}:{value.shape};".encode())
        digest.update(value.data)
    digest.update(json.dumps(sorted(keys)).encode())
    return digest.hexdigest()


def load(path, expected):
    """The cached dict at `path` if its fingerprint is `expected`, else None."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored[_FINGERPRINT]) != expected:
                return None
            return {key: stored[key] for key in stored.files if key != _FINGERPRINT}
    except (OSError, ValueError, KeyError):
        return None  # unreadable or partial: recomputed and overwritten


def save(path, outputs, stamp):
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **{key: np.asarray(value) for key, value in outputs.items()},
        **{_FINGERPRINT: np.asarray(stamp)},
    )
    _atomic.write_bytes(path, buffer.getvalue())


def _flatten(x):
    if isinstance(x, dict):
        for name in sorted(x):
            yield name, np.asarray(x[name])
    elif isinstance(x, (list, tuple)):
        for index, item in enumerate(x):
            yield str(index), np.asarray(item)
    else:
        yield "x", np.asarray(x)
