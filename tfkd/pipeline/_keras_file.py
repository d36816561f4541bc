"""Reading `.keras` files that may be hostile: `load_keras`, and the checks it makes
before Keras allocates anything (the zip's declared sizes, the bytes of the variables the
config asks for).

Keras is imported inside the functions: `tfkd report` imports the run directory's store,
which imports this module, without it.
"""

import contextlib
import contextvars
import hashlib
import json
import math
import os
import re
import threading
import warnings
import zipfile


def load_keras(path):
    """`_load_keras(path)`; within `shared_loads`, the model loaded for the same file
    before, if any."""
    shared = _SHARED.get()
    if shared is None:
        return _load_keras(path)
    with _unreadable(path):
        status = os.stat(path)
    key = (os.path.realpath(path), status.st_size, status.st_mtime_ns)
    if key not in shared:
        shared[key] = _load_keras(path)
    return shared[key]


# The models `load_keras` loaded within `shared_loads`, by file; `None` outside it.
_SHARED = contextvars.ContextVar("tfkd_shared_loads", default=None)


@contextlib.contextmanager
def shared_loads():
    """Within it, `load_keras` loads each file once and returns that model again: for the
    checks before a run, which only read the models (a stage loads one of its own)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _load_keras(path):
    """`keras.saving.load_model` in safe mode (no Python code from the file), with tfkd's
    layers registered first: the `tfkd` command imports tfkd's subpackages only when they
    are used, and a file (a QAT model, say) may hold layers of one that this run has not
    used yet.

    The file may be hostile: its zip is checked first (a config of at most 64 MiB, no
    member that inflates over 100-fold past 64 MiB); then the bytes of the variables its
    config asks for are counted without allocating them (the model is built in a
    `keras.StatelessScope`) and refused past twice what its weights member holds, or that
    member and 64 MiB (`_VARIABLES_FACTOR`), so that a small config cannot fill memory
    with layers that fit in it. Whatever Keras raises on a file it cannot read (a bad zip,
    JSON or HDF5; classes that do not deserialize; memory that cannot be had) becomes a
    `ValueError` naming the file.

    A stateful RNN's state (not in the weights member) is counted from its shapes. A
    config that the count cannot build is refused with the count's error, which the
    load would raise too, after making the variables of the layers before the one that
    fails. Not counted: a config with a layer that makes a variable from a value (none
    of Keras's own): it loads unchecked, as before.

    The model is loaded uncompiled: a compiled file's compile config would build an
    optimizer (Adam with `amsgrad`, `use_ema` and gradient accumulation: five copies of
    the trainable variables) and metrics (`AUC(num_thresholds=10**9)`: lists and
    variables of 10^9 values) before any weight is read, and the pipeline compiles
    the models it trains itself.

    Raises:
        ValueError: the file cannot be read as a Keras model, or asks for more variables
            than it holds.
        ImportError: it needs keras-hub, which is not installed.
    """
    import keras

    import tfkd

    tfkd._import_all()
    with _unreadable(path):
        config, weights = _check_archive(path)
    if b'"keras_hub' in config:
        import keras_hub  # noqa: F401  (registers its layers, e.g. the BertBackbone)
    with _unreadable(path):
        _check_variables(config, *weights)
        return keras.saving.load_model(path, compile=False, safe_mode=True)


@contextlib.contextmanager
def _unreadable(path):
    """Raises what its body raises on a bad `.keras` file (`_UNREADABLE`, or memory that a
    config's sizes ask for and cannot get) as a `ValueError` naming the file, chained."""
    try:
        yield
    except Exception as error:
        out_of_memory = isinstance(error, MemoryError) or (
            type(error).__name__ == "ResourceExhaustedError"  # TensorFlow's, not imported here
        )
        if not (out_of_memory or isinstance(error, _UNREADABLE)):
            raise
        raise ValueError(
            f"{os.fspath(path)!r} cannot be read as a Keras model (a `.keras` file): "
            f"{type(error).__name__}: {str(error)[:500].rstrip('.')}."
        ) from error


# What reading a `.keras` file raises when the file is bad: the zip (BadZipFile), HDF5
# (OSError, RuntimeError), the JSON (ValueError, RecursionError when nested too deep)
# and a config whose classes or arguments do not deserialize (TypeError, KeyError,
# AttributeError, IndexError: a value of another type or length where Keras expects one).
_UNREADABLE = (
    zipfile.BadZipFile,
    OSError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
)
# The largest `config.json` read (real models' are kilobytes to a few megabytes), and how
# far a member may inflate past `_INFLATE_FREE` bytes (weights compress a few-fold).
_MOST_CONFIG_BYTES = 64 * 2**20
_MOST_INFLATION = 100
_INFLATE_FREE = 64 * 2**20


def _check_archive(path):
    """Checks the `.keras` zip's declared sizes (which bound what is read from it);
    returns its `config.json` and its weights member's name and declared bytes (the
    first of `_WEIGHTS_MEMBERS`, with 0 bytes, if it has none)."""
    with zipfile.ZipFile(path) as archive:
        # The declared sizes bound what may be read, so they are bounded by the file: a
        # member claiming 4 GB compressed in a 4 KB file let its config ask for 8 GB of
        # variables (the process crashed building them).
        stored = sum(info.compress_size for info in archive.infolist())
        if stored > os.path.getsize(path):
            raise ValueError(
                f"its members declare {stored} compressed bytes, more than the file's "
                f"{os.path.getsize(path)}"
            )
        for info in archive.infolist():
            inflates = info.file_size > max(_INFLATE_FREE, _MOST_INFLATION * info.compress_size)
            if inflates or (info.filename == "config.json" and info.file_size > _MOST_CONFIG_BYTES):
                raise ValueError(
                    f"member {info.filename!r} declares {info.file_size} bytes "
                    f"({info.compress_size} compressed), more than a Keras model holds"
                )
        with archive.open("config.json") as config:
            config = config.read()
        names = archive.namelist()
        member = next((name for name in _WEIGHTS_MEMBERS if name in names), None)
        if member is None:  # Keras refuses it, after building the model
            return config, (_WEIGHTS_MEMBERS[0], 0)
        return config, (member, archive.getinfo(member).file_size)


# The members Keras reads a `.keras` file's weights from, the first one present.
_WEIGHTS_MEMBERS = ("model.weights.h5", "model.weights.npz")
# Keras's HDF5 writer stores each variable's values uncompressed, so a real file's
# variables take at most its weights member's bytes: measured, 0.91 to 0.96 of them for
# MobileNetV2, MobileNetV3 and EfficientNetB0, far less for small models (whose HDF5
# headers dominate) and for files holding optimizer state. The slack (twice the member,
# or the member and 64 MiB when that is more) leaves room for what the count sees twice
# and Keras builds once (an object shared in the config: Keras's loader reuses it, the
# count, outside that loader, does not), while what a config can ask for stays
# proportional to the bytes the file declares.
_VARIABLES_FACTOR = 2
_VARIABLES_FREE = 64 * 2**20


def _check_variables(config, member, weights_bytes):
    """Refuses a config whose variables need more bytes than the file's weights hold."""
    asked = _variable_bytes(config)
    most = max(_VARIABLES_FACTOR * weights_bytes, weights_bytes + _VARIABLES_FREE)
    if asked is not None and asked > most:
        raise ValueError(
            f"its config asks for {asked} bytes of variables, and its weights member "
            f"{member!r} holds {weights_bytes} bytes (a real model stores all its "
            f"variables there; at most {most} bytes are accepted)"
        )


def _variable_bytes(config):
    """`_counted_bytes(config)`, once for each config of the last `_MOST_COUNTED`: a run
    loads a file more than once (its checks, then the stage)."""
    key = hashlib.sha256(config).digest()
    if key not in _COUNTED:
        if len(_COUNTED) >= _MOST_COUNTED:
            del _COUNTED[next(iter(_COUNTED))]  # the oldest
        _COUNTED[key] = _counted_bytes(config)
    return _COUNTED[key]


# The counts of the configs counted last, by their SHA-256.
_COUNTED = {}
_MOST_COUNTED = 16


def _counted_bytes(config):
    """The bytes of the variables the model in `config` makes (uncompiled),
    counted without allocating them; `None` if a layer makes a variable from a value
    (which a stateless scope refuses).

    The model is built in a thread of its own: Keras's global state (the uninitialized
    variables a `keras.StatelessScope` registers, the counters that name new objects) is
    the thread's, so nothing of this build reaches the load that follows.

    Raises:
        What building the model raises: the load would raise it too, after making the
        variables of the layers built before the one that fails.
    """
    outcome = []

    def count():
        try:
            outcome.append(_count_variables(config))
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=count)
    thread.start()
    thread.join()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


# Keras's words when a variable is made from a value in a stateless scope.
_MADE_FROM_A_VALUE = "create a variable while in a stateless scope"


def _count_variables(config):
    import keras

    # The load does not compile (`load_keras`).
    config = _mark_stateful(dict(json.loads(config), compile_config=None))
    try:
        with warnings.catch_warnings():  # the load repeats them
            warnings.simplefilter("ignore")
            with keras.StatelessScope(initialize_variables=False):
                model = keras.saving.deserialize_keras_object(config, safe_mode=True)
                # In the scope: the trace's own stateless scope, left outside any
                # other, would initialize (allocate) the model's variables.
                states = _state_bytes(model)
    except ValueError as error:
        if _MADE_FROM_A_VALUE not in str(error):
            raise
        return None  # a layer that cannot be counted so: loaded unchecked, as before
    variables = {id(variable): variable for variable in model.weights}.values()
    return sum(_value_bytes(v.shape, v.dtype) for v in variables) + states


# A stateful RNN makes its state from a value (zeros of its batch size), which allocates
# it and which a stateless scope refuses: the count builds each one with `stateful`
# set to this, falsy for Keras (no state is made) and an `int`, not a `bool`, so that
# `_state_bytes` finds the layer afterwards and counts the state from its shapes.
_STATEFUL = 0


def _mark_stateful(config):
    """`config` with each truthy `stateful` (an RNN's, a Bidirectional's) `_STATEFUL`."""
    if isinstance(config, dict):
        return {
            key: _STATEFUL if key == "stateful" and value else _mark_stateful(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_mark_stateful(item) for item in config]
    return config


def _state_bytes(model):
    """The bytes of the states the RNN layers marked by `_mark_stateful` make in a real
    build: their shapes are traced symbolically, for the batch size each was built with."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if not isinstance(layer, keras.layers.RNN) or type(layer.stateful) is not int:
            continue
        shapes = layer.get_build_config() or {}
        sequences = shapes.get("input_shape") or shapes.get("shapes_dict", {}).get(
            "sequences_shape"
        )
        if sequences and sequences[0] is not None:  # Keras refuses a stateful RNN without
            states = _initial_states(layer, sequences[0])
            total += sum(_value_bytes(state.shape, state.dtype) for state in states)
    return total


def _initial_states(layer, batch_size):
    """The shapes and dtypes of `layer`'s initial states for `batch_size`, traced
    symbolically (`compute_output_spec`): nothing is allocated."""
    import keras

    class InitialState(keras.Operation):
        def call(self, batch_size):
            return layer.get_initial_state(batch_size)

    return keras.tree.flatten(InitialState().compute_output_spec(batch_size))


def _value_bytes(shape, dtype):
    return math.prod(shape) * _dtype_bytes(dtype)


def _dtype_bytes(dtype):
    """Bytes a value of `dtype` takes: its bits (`bfloat16`, `float8_e4m3fn`), rounded up
    to a byte; 1 for `bool` and other dtypes without a width."""
    bits = re.search(r"\d+", str(dtype))
    return -(-int(bits.group()) // 8) if bits else 1
