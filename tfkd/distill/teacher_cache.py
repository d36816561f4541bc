"""Teacher outputs computed once: `teacher_outputs` runs the teacher (and keeps what it
computed in a file, if asked), `with_teacher_outputs` packs them with the inputs for
`Distiller.fit`, which then runs the student only.

The file cache is keyed by the inputs, the teacher's architecture and its weights, and
what is read from the teacher; what a file holds is checked before it is used.
"""

import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from tfkd import _atomic, _graph, _hashing
from tfkd._checks import check_number
from tfkd.datasets._files import npz_sizes_problem
from tfkd.distill import _taps, _validation

__all__ = ["teacher_outputs", "with_teacher_outputs"]

OUTPUT = _taps.OUTPUT  # the key of the teacher's final output
STUDENT_INPUTS = "student_inputs"
TEACHER_OUTPUTS = "teacher_outputs"


RUNTIMES = ("keras", "litert")
_LITERT_CHECK_ROWS = 64  # inputs `export_tflite` checks the `.tflite` on


def teacher_outputs(teacher, x, layers=(), batch_size=256, verbose=0, cache=None, runtime="keras"):
    """Runs `teacher` on `x` once; returns what distillation reads, for `with_teacher_outputs`.

    The same as `Distiller.predict_teacher`, without building a `Distiller`: the final
    output under `"output"` and each layer of `layers` under `"layer:NAME"`, from one
    forward pass. With `cache`, the outputs are also kept in a `.npz` file: a later call
    (in this process or another) with the same inputs, the same teacher (architecture,
    layer configs and weights) and the same `layers` loads them instead of running the
    teacher, once the file is checked (one finite row per input). Any change recomputes
    and overwrites the file, which is written atomically. Only valid for inputs that are
    not randomly augmented during training.

    With `runtime="litert"`, the teacher is converted to a float32 `.tflite` (checked
    against Keras on the first inputs, as `tfkd.export_tflite` checks every file) and run
    by the LiteRT interpreter with XNNPACK, one thread per CPU core: on CPU, several times
    faster than Keras's `predict` for convolutional teachers, and equal to it within
    float32 rounding. It computes the final output only, from one input array.

    Args:
        teacher: a Keras model (a Sequential model never called is built on `x`).
        x: inputs (numpy array, dict or list of arrays, or a `tf.data.Dataset` yielding
            inputs only; a dataset cannot be cached).
        layers: names of teacher layers whose outputs feature losses read (their
            `teacher_layer_name`). Defaults to `()`.
        batch_size: batch size of the teacher's forward passes. Defaults to `256`.
        verbose: progress bar, as for `keras.Model.predict`. Defaults to `0`.
        cache: path of a `.npz` file to keep the outputs in. Defaults to `None`.
        runtime: `"keras"` (the model's `predict`) or `"litert"` (see above). Defaults
            to `"keras"`.

    Returns:
        A dict of numpy arrays, one per output read.

    Example:

    ```python
    cached = tfkd.distill.teacher_outputs(teacher, x_train, cache="cache/teacher.npz")
    distiller.fit(tfkd.distill.with_teacher_outputs(x_train, cached), y_train)
    ```
    """
    _validation.validate_model("teacher", teacher)
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"`layers` must be a list of layer names. Received: layers={layers!r}")
    shapes = _taps.input_shapes(teacher)
    if shapes is None and not hasattr(x, "element_spec"):
        shapes = [tuple(array.shape[1:]) for _, array in _flatten(x)]
    taps = _taps.TapModel(teacher, "teacher", list(layers), shapes)
    return predict(taps, x, batch_size, verbose, cache, runtime)


def litert_outputs(teacher, x, verbose=0):
    """`{"output": ...}`: `teacher` on the array `x`, through a float32 `.tflite` run by
    the LiteRT interpreter (XNNPACK, one thread per core). `tfkd.export_tflite` checks the
    file against Keras on the first inputs and raises `ValueError` if they disagree."""
    from tfkd.export import TFLiteModel, export_tflite

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "teacher.tflite")
        export_tflite(teacher, path, representative_data=x[:_LITERT_CHECK_ROWS])
        interpreter = TFLiteModel(path, num_threads=os.cpu_count() or 1)
        if interpreter.num_outputs != 1:
            raise ValueError(
                "`runtime='litert'` needs a teacher with one output; this one has "
                f"{interpreter.num_outputs}. Use runtime='keras'."
            )
        # Small batches keep XNNPACK's activations in cache (measured: 64 beats 256).
        return {OUTPUT: interpreter.predict(x, batch_size=64, verbose=verbose)}


def predict(taps, x, batch_size, verbose, cache, runtime="keras"):
    """`taps.predict(x)` (a `_taps.TapModel` of the teacher) with `runtime="keras"`, or
    `litert_outputs` of its model with `"litert"`, through the file `cache`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"`runtime` must be one of {RUNTIMES}. Received: runtime={runtime!r}")
    if x is None:
        raise TypeError("`x` must be the inputs the student will be trained on. Received: x=None.")
    batch_size = check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
    if runtime == "litert" and (taps.layer_names or not isinstance(x, np.ndarray)):
        raise ValueError(
            "`runtime='litert'` computes the teacher's final output from one numpy array. "
            f"Received: layers={list(taps.layer_names)!r}, x of type {type(x).__name__}; "
            "use runtime='keras' for layer outputs, several inputs or a dataset."
        )

    def compute():
        if runtime == "litert":
            return litert_outputs(taps.model, x, verbose)
        return taps.predict(x, batch_size=batch_size, verbose=verbose)

    if cache is None:
        return compute()
    if hasattr(x, "element_spec") or not isinstance(cache, (str, os.PathLike)):
        raise TypeError(
            "`cache` must be a file path, and `x` arrays (a dataset cannot be "
            f"fingerprinted). Received: cache={cache!r}, x of type {type(x).__name__}."
        )
    keys = [_taps.key(name) for name in taps.layer_names] + [_taps.OUTPUT]
    return load_or_compute(os.fspath(cache), fingerprint(x, taps.model, keys), rows(x), compute)


def load_or_compute(path, stamp, rows, compute):
    """The outputs kept at `path` if written with `stamp` (`fingerprint(...)`) and `rows`
    finite rows each; else `compute()`, saved there. For callers that must know whether
    the teacher ran (the pipeline logs it)."""
    outputs = load(path, stamp, rows)
    if outputs is None:
        outputs = compute()
        save(path, outputs, stamp)
    return outputs


def with_teacher_outputs(x, teacher_outputs):
    """Packs inputs with cached teacher outputs for `Distiller.fit`.

    Args:
        x: The student's inputs.
        teacher_outputs: What `teacher_outputs(teacher, x)` (or
            `Distiller.predict_teacher(x)`) returned, for the
            same examples in the same order; or an array: the teacher's final
            output, in the form the teacher gives it (probabilities for a
            teacher that ends in a softmax, else logits), which the Distiller
            converts as it converts the teacher's.

    Returns:
        A dict that `Distiller.fit` accepts as `x`: the Distiller reads the
        teacher outputs from it instead of running the teacher.

    Example:

    ```python
    cached = distiller.predict_teacher(x_train)
    distiller.fit(tfkd.distill.with_teacher_outputs(x_train, cached), y_train)
    ```
    """
    if hasattr(teacher_outputs, "shape") and hasattr(teacher_outputs, "dtype"):
        teacher_outputs = {_taps.OUTPUT: teacher_outputs}
    _validation.check_cached_outputs(x, teacher_outputs)
    return {STUDENT_INPUTS: x, TEACHER_OUTPUTS: teacher_outputs}


def split_teacher_outputs(x):
    """Returns `(student_inputs, cached_teacher_outputs or None)`."""
    if isinstance(x, dict) and set(x) == {STUDENT_INPUTS, TEACHER_OUTPUTS}:
        return x[STUDENT_INPUTS], dict(x[TEACHER_OUTPUTS])
    return x, None


_FINGERPRINT = "__fingerprint__"


def fingerprint(x, model, keys):
    """SHA-256 over the inputs (array or dict of arrays), the teacher (`_graph.model_sha256`:
    its architecture, including the code of layers outside Keras, and its weights) and
    `keys`."""
    digest = hashlib.sha256()
    for name, array in _flatten(x):
        digest.update(f"{name}:{_hashing.array_sha256(array)};".encode())
    digest.update(_graph.model_sha256(model).encode())
    digest.update(json.dumps(sorted(keys)).encode())
    return digest.hexdigest()


def load(path, expected, rows):
    """The cached dict at `path` if its fingerprint is `expected` and each array holds
    `rows` finite floating-point rows, else None (the caller recomputes and overwrites)."""
    if not os.path.isfile(path):
        return None
    try:
        # A header may declare any size: checked against the file first (a MemoryError).
        if npz_sizes_problem(path) is not None:
            return None
        with np.load(path, allow_pickle=False) as stored:
            if str(stored[_FINGERPRINT]) != expected:
                return None
            outputs = {key: stored[key] for key in stored.files if key != _FINGERPRINT}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
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
