"""Argument checks that every subpackage shares: flags, numbers in a range, seeds.

Each fails early with the Keras template: what is wrong, `Received: name=value`, and
what is accepted; a `TypeError` for a value of the wrong type, a `ValueError` for one
out of range. Numbers are Python's or numpy's (`np.float32(2.0)`), never bools. No
Keras or numpy import here: configs are checked before TensorFlow loads.
"""

import math
import numbers
import os
import re
import warnings

SEED_LIMIT = 2**32  # numpy's and Keras's seeds are in [0, 2**32)
# The largest count (of epochs, examples in a batch...) a config may give: TensorFlow holds
# them in 32- or 64-bit integers, and a larger one overflows after the stages before ran.
COUNT_LIMIT = 2**31 - 1
# The temperatures whose softened logits and T**2 float32 keeps finite, with room: a
# temperature that float32 rounds to 0 (1e-300, say) or whose square it rounds to
# infinity (1e20) made every loss NaN. The losses are finite from 1e-20 to 1e19.
TEMPERATURE_RANGE = (1e-20, 1e18)
# The largest alpha of a mixup or CutMix Beta distribution: above it float32 rounds it to
# infinity (1e300, say) and the mix ratio to NaN. Above 1e6 every mix is 0.5 to within 4e-4.
MIXING_ALPHA_LIMIT = 1e30


def is_number(value):
    """A real number, numpy's included, but not a bool (numpy's bool is not a number)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    """An integer, numpy's included, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def shown(value, limit=80):
    """`repr(value)`, cut to `limit` characters for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_flag(name, value):
    """`value` as a bool, or a TypeError naming `name`; numpy's bool passes."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not (isinstance(value, bool) or numpy_bool):
        raise TypeError(
            f"`{name}` must be True or False. Received: {name}={shown(value)} "
            f"of type {type(value).__name__}."
        )
    return bool(value)


def check_keras_model(model):
    """A TypeError unless `model` is a `keras.Model` (any kind: Sequential, functional,
    subclassed)."""
    import keras  # here: configs are checked without it

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a Keras model. Received: model of type {type(model).__name__}. "
            "Pass a keras.Model (Sequential, functional or subclassed)."
        )


def check_finite_array(name, value, dtype=None):
    """`value` as a numpy array of numbers that `dtype` (what it will be cast to, if
    given) holds finite; raises naming `name` otherwise.

    A `TypeError` for arrays of objects (`None` among numbers casts to NaN), strings or
    bytes; a `ValueError` for NaN or infinite values, counted, and for finite values too
    large for a float `dtype`, which the cast would turn to infinity (float64 `1e300` for
    a float32 input). Integer and bool arrays pass. numpy is imported here, not above:
    configs are checked without it.
    """
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        raise TypeError(
            f"`{name}` must be an array of numbers (bool, integer or float). Received: "
            f"{name} of dtype {array.dtype} and shape {array.shape}. Convert it with "
            f"np.asarray({name}, 'float32'); an object array may hide None or strings."
        )
    if array.dtype.kind in "fc":
        finite = np.isfinite(array)
        if not finite.all():
            where = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise ValueError(
                f"`{name}` holds {int(np.sum(~finite))} NaN or infinite values (of "
                f"{array.size}), on which no model computes anything meaningful. Received: "
                f"{name} with {array[where].item()!r} at index {where}. Pass finite values: "
                "drop or fill in the examples that hold them."
            )
    if dtype is not None and np.dtype(dtype).kind == "f" and array.size:
        _check_fits(name, array, np.dtype(dtype))
    return array


def _check_fits(name, array, dtype):
    import numpy as np

    largest = max(abs(array.min().item()), abs(array.max().item()))
    with np.errstate(over="ignore"):  # the overflow is what is checked
        if np.isfinite(np.asarray(largest, dtype)):
            return
        count = int(np.sum(np.isinf(array.astype(dtype))))
    limit = float(np.finfo(dtype).max)
    raise ValueError(
        f"`{name}` holds {count} values too large for {dtype.name}, which turns them to "
        f"infinity. Received: {name} of dtype {array.dtype} whose largest magnitude is "
        f"{largest:.4g} ({dtype.name} holds up to {limit:.4g}). Pass inputs scaled as the "
        "model was trained on them."
    )


def non_finite_weights(model):
    """The paths of `model`'s weights (non-trainable ones too: batch-norm statistics, a
    quantization-aware model's ranges) that hold NaN or infinite values."""
    import numpy as np

    # `numpy()`, not `keras.ops.convert_to_numpy`, whose call of TensorFlow's `__array__`
    # warns under numpy 2.
    return [weight.path for weight in model.weights if not np.all(np.isfinite(weight.numpy()))]


def check_finite_weights(model):
    """A ValueError naming the layers and weights of `model` that hold NaN or infinite
    values: every file made from them computes NaN, and LiteRT can crash running one."""
    bad = non_finite_weights(model)
    if not bad:
        return
    layers = sorted({path.split("/")[0] for path in bad})
    raise ValueError(
        f"Model {model.name!r} has NaN or infinite weights in layer(s) {layers}, from which "
        f"no working file can be made. Received: {len(bad)} non-finite variable(s) "
        f"{shown(bad, 300)}. Training on a batch that holds NaN or inf (or diverging, with "
        "too high a learning rate) makes weights NaN, and so does the first call of a "
        "quantization-aware model on such a batch (it sets the ranges). Check the data with "
        "np.isfinite, then train again from finite weights."
    )


def check_float32_compute(model, what, makes_layers=False):
    """A ValueError naming the layers of `model` that compute in float16 or bfloat16 (a
    `mixed_float16` policy), which `what` cannot take, and where `what` `makes_layers`,
    a global policy of that kind (its new layers would take it): before, clustering failed
    in a multiplication of half and float tensors, a quantization-aware export in a float16
    fake-quantization, and a float export told to pass select_tf_ops."""
    import keras

    half = ("float16", "bfloat16")
    layers = [
        layer.name
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "compute_dtype", "float32") in half
    ]
    if layers:
        raise ValueError(
            f"{what} takes models that compute in float32. Received: model={model.name!r} "
            f"with layers that compute in float16 or bfloat16 (a mixed precision policy): "
            f"{shown(layers, 300)}. Build the model again under "
            "keras.mixed_precision.set_global_policy('float32') and copy the trained weights "
            "into it (new.set_weights(model.get_weights()))."
        )
    policy = keras.mixed_precision.global_policy()
    if makes_layers and policy.compute_dtype in half:
        raise ValueError(
            f"{what} makes new layers, which take the global dtype policy, and they must "
            f"compute in float32. Received: the global dtype policy {policy.name!r}. Call "
            "keras.mixed_precision.set_global_policy('float32') first."
        )


def check_number(
    name,
    value,
    *,
    low=None,
    high=None,
    low_open=False,
    high_open=False,
    integer=False,
    allow_none=False,
    hint="",
):
    """Returns `value` (an `int` for `integer=True`; Keras layers refuse numpy integers)
    if it is a finite number within the bounds, else raises naming `name`.

    Args:
        name: the argument's name, for the message.
        value: what was received.
        low, high: the bounds, or None for none; `low_open` / `high_open` leave the
            bound itself out.
        integer: whether only integers are accepted.
        allow_none: whether `None` is accepted (and returned).
        hint: a sentence added to the message of a value out of range.
    """
    if value is None and allow_none:
        return None
    accepted = _accepted(low, high, low_open, high_open, integer, allow_none)
    if not (is_integer(value) if integer else is_number(value)):
        raise TypeError(
            f"`{name}` must be {accepted}. Received: {name}={shown(value)} "
            f"of type {type(value).__name__}"
        )
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or not _finite(value):
        extra = f". {hint}" if hint else ""
        raise ValueError(f"`{name}` must be {accepted}. Received: {name}={shown(value)}{extra}")
    return int(value) if integer else value


def _finite(value):
    """Whether `value` is finite as a float: an integer past float's range is not (before,
    `math.isfinite` raised an OverflowError on a config's 400-digit `epochs`)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_seed(value, name="seed", allow_none=False):
    """`check_number` for a random seed: an integer in [0, 2**32), or None if allowed."""
    return check_number(
        name, value, low=0, high=SEED_LIMIT, high_open=True, integer=True, allow_none=allow_none
    )


def check_learning_rate(value, name):
    """A learning rate: a finite number > 0, or a schedule (any callable instance, as
    `keras.optimizers.schedules.LearningRateSchedule` is), which Adam takes too."""
    if callable(value) and not isinstance(value, type):
        return value
    return check_number(name, value, low=0, low_open=True)


def check_shape(value, name, length=None):
    """`value` as a tuple of positive ints; `None` sizes are allowed unless `length` is given."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"`{name}` must be a tuple of sizes, e.g. (28, 28, 1). Received: {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    value = tuple(value)
    allow_none = length is None
    bad = [
        size
        for size in value
        if not (size is None and allow_none)
        and (not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1)
    ]
    if bad or not value or (length is not None and len(value) != length):
        count = f"{length} " if length else ""
        raise ValueError(
            f"`{name}` must be a tuple of {count}positive ints. Received: {name}={value!r}."
        )
    return tuple(None if size is None else int(size) for size in value)


def check_path(path, name):
    """`path` as a str, or a TypeError for anything that is not a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a path (str or os.PathLike). Received: {name}={path!r} of type "
            f"{type(path).__name__}."
        )
    return os.fspath(path)


def check_c_identifier(value, name):
    """Raises unless `value` is a C identifier (it names generated C arrays and files)."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
        raise ValueError(
            f"`{name}` must be a C identifier (letters, digits and _, not starting with "
            f"a digit, at most 64 characters). Received: {name}={shown(value)}."
        )
    return value


def check_file(path, name, accepted):
    path = check_path(path, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No file at `{name}`. Received: {name}={path!r}. Accepted: {accepted}."
        )
    return path


# How `tfkd.prune.prune_channels` ranks channels; here, so that configs are checked
# without Keras.
CHANNEL_IMPORTANCES = ("l1", "l2", "batch_norm", "taylor")


def parse_pattern(pattern):
    """A pruning pattern: `"unstructured"` -> None; `"2:4"` -> (2, 4) (keep N of every M
    weights along the input channels). Raises a ValueError on anything else."""
    if pattern == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern) if isinstance(pattern, str) else None
    if match is None or not 0 < int(match.group(1)) < int(match.group(2)):
        raise ValueError(
            "`pattern` must be 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'). "
            f"Received: pattern={pattern!r}"
        )
    return int(match.group(1)), int(match.group(2))


def pattern_sparsity(pattern):
    """The sparsity an N:M `pattern` gives, `1 - N/M`; None for `"unstructured"`."""
    n_of_m = parse_pattern(pattern)
    return None if n_of_m is None else 1 - n_of_m[0] / n_of_m[1]


def check_sparsity_fits_pattern(pattern, sparsity, received):
    """Raises a ValueError unless the target `sparsity` is the N:M `pattern`'s: the
    pattern fixes the sparsity, and the schedule only says when masks update.
    `received` is the `name=value` the error shows for `sparsity`."""
    expected = pattern_sparsity(pattern)
    if expected is None or (
        sparsity is not None and math.isclose(sparsity, expected, abs_tol=1e-4)
    ):
        return
    n, m = parse_pattern(pattern)
    raise ValueError(
        f"Pattern {pattern!r} keeps {n} of every {m} weights, a sparsity of {expected:.4g}, "
        "and the schedule only says when masks update, so its target sparsity must be "
        f"{expected:.4g}. Received: pattern={pattern!r}, {received}. Use a target sparsity of "
        f"{expected:.4g}, or pattern='unstructured' for another sparsity."
    )


def renamed_arguments(owner, values, kwargs, renamed, stacklevel=4):
    """`values` (`{current name: value}`) with each deprecated name of `renamed`
    (`{old: current}`) that `kwargs` holds popped and moved to its current name, with a
    `DeprecationWarning`. A `TypeError` when an old name and its current one are both
    given (a current one is given when it is not `None`). `stacklevel`: as in
    `warnings.warn`, counted from here (4: the caller of a subclass's constructor)."""
    values = dict(values)
    for old, current in renamed.items():
        if old not in kwargs:
            continue
        if values.get(current) is not None:
            raise TypeError(
                f"{owner} got both `{old}` (deprecated) and `{current}`. Received: "
                f"{old}={shown(kwargs[old])}, {current}={shown(values[current])}. Pass "
                f"`{current}` only."
            )
        warnings.warn(
            f"{owner}: `{old}` is deprecated and will be removed; pass `{current}`.",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        values[current] = kwargs.pop(old)
    return values


def moved_name(module, name, moved):
    """A module's `__getattr__` for names that moved to a sibling module (`moved`:
    `{name: sibling}`): returns the name from there, with a `DeprecationWarning`."""
    if name not in moved:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    import importlib

    package, _, _ = module.rpartition(".")
    target = f"{package}.{moved[name]}"
    warnings.warn(
        f"`{module}.{name}` moved to `{target}.{name}`; import it from there (or from "
        f"`{package}`).",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(target), name)


def _accepted(low, high, low_open, high_open, integer, allow_none):
    """`"a positive integer"`, `"a number in [0, 1)"`, `"a finite number > 0"`..."""
    if integer and high is None and (low, low_open) in ((0, True), (1, False)):
        text = "a positive integer"
    elif integer and high is None and (low, low_open) == (0, False):
        text = "a non-negative integer"
    elif low is not None and high is not None:
        limit = "2**32" if high == SEED_LIMIT else f"{high}"
        text = f"{'an integer' if integer else 'a number'} in "
        text += f"{'(' if low_open else '['}{low}, {limit}{')' if high_open else ']'}"
    elif low is not None:
        text = f"{'an integer' if integer else 'a finite number'} {'>' if low_open else '>='} {low}"
    elif high is not None:
        text = f"{'an integer' if integer else 'a number'} {'<' if high_open else '<='} {high}"
    else:
        text = "an integer" if integer else "a finite number"
    return f"{text} or None" if allow_none else text


def fit_options(data, options):
    """`options` for `fit` on `data`: a `tf.data.Dataset` shuffles itself, so it gets
    `shuffle=False` unless the caller set it (fit's default True only makes Keras warn
    that it is ignored)."""
    if hasattr(data, "element_spec"):
        return {"shuffle": False, **options}
    return options


def check_batched(data, name):
    """Refuses a tf.data.Dataset of single `(x, y)` examples (labels of shape ()): Keras
    read each example as a batch and raised about shapes ("Argument `output` must have
    rank (ndim) `target.ndim - 1`" in `fine_tune`), naming neither the data nor the fix."""
    spec = getattr(data, "element_spec", None)
    labels = spec[1] if isinstance(spec, tuple) and len(spec) >= 2 else None
    if getattr(getattr(labels, "shape", None), "rank", None) == 0:
        raise ValueError(
            f"`{name}` must yield batches of (x, y), and it yields one example at a time "
            f"(labels of shape ()). Received: a tf.data.Dataset with element_spec {spec}. "
            "Batch it: `dataset.batch(32)`."
        )


def warn_non_finite_inputs(data, name):
    """Warns about NaN or infinite values in float numpy inputs (an array, or a list, tuple
    or dict of them; datasets and generators are left to the training's own checks): a
    model may handle them (`keras.ops.where(keras.ops.isnan(x), 0.0, x)`), so they are
    not refused; where it does not, the trained weights turn NaN and training stops at
    the epoch's end (`NonFiniteLossGuard`)."""
    import warnings

    import numpy as np

    if isinstance(data, np.ndarray):
        items = [(None, data)]
    elif isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return
    for key, value in items:
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            try:
                check_finite_array(name if key is None else f"{name}[{key!r}]", value)
            except ValueError as error:
                warnings.warn(
                    f"{error} Training goes on, for a model that replaces them; where the "
                    "trained weights turn NaN (on TensorFlow a ReLU hides a NaN input from "
                    "the loss, not from the gradient), it stops at the epoch's end.",
                    stacklevel=4,
                )


def check_fit_strategy(model):
    """Refuses `fit` under TensorFlow's `MultiWorkerMirroredStrategy` over several workers,
    where Keras 3 fails on the first batch with an error about `PerReplica` values
    (keras-team/keras#20585); one worker, `MirroredStrategy` and the other backends pass."""
    import sys

    tf = sys.modules.get("tensorflow")
    strategy = getattr(model, "distribute_strategy", None)  # the TensorFlow trainer's
    if tf is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    spec = strategy.cluster_resolver.cluster_spec()
    workers = sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker"))
    if workers > 1:
        raise RuntimeError(
            "Keras 3's `fit` cannot train under TensorFlow's MultiWorkerMirroredStrategy "
            f"across several workers: it fails on the first batch (keras-team/keras#20585). "
            f"Received: a model made under a MultiWorkerMirroredStrategy of {workers} workers. "
            "Train on several processes or hosts with the JAX backend instead: "
            "KERAS_BACKEND=jax, jax.distributed.initialize(...) on each, then "
            "keras.distribution.set_distribution(keras.distribution.DataParallel("
            "devices=jax.devices())) before the models are built (README, 'Several "
            "processes'). One worker, or MirroredStrategy on one machine, works."
        )


def check_temperature(name, value):
    """Raises naming `name` unless `value` is a number > 0 in `TEMPERATURE_RANGE`."""
    hint = "Typical values are 1 to 10."
    check_number(name, value, low=0, low_open=True, hint=hint)
    low, high = TEMPERATURE_RANGE
    hint += " Float32 turns values outside the range to 0 or infinity."
    return check_number(name, value, low=low, high=high, hint=hint)


def check_mixing_alpha(name, value):
    """Raises naming `name` unless `value` is a Beta alpha > 0 float32 holds."""
    return check_number(
        name,
        value,
        low=0,
        low_open=True,
        high=MIXING_ALPHA_LIMIT,
        hint="Typical values are 0.2 to 1.0; float32 turns values above the range to infinity.",
    )


def check_output_file(path):
    """`path` as a string, refused before any conversion unless a file can be written there."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            "`path` must be the path of the .tflite file to write. "
            f"Received: path={path!r} of type {type(path).__name__}."
        )
    path = os.fspath(path)
    # A path ending in a separator names a folder, existing or not (before: an error
    # about a temporary `.part` file inside it).
    folder_like = path.endswith(("/", os.sep)) or os.path.isdir(path)
    if not path or folder_like:
        raise ValueError(
            "`path` must name a file to write, such as 'model.tflite'. Received: "
            f"path={path!r}{', a directory' if path else ''}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(
            f"`path` cannot be written: {folder!r} is a file, not a directory. "
            f"Received: path={path!r}."
        )
    return path
