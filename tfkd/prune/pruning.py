"""`prune`, `strip` and `summary`: pruning whole Keras models."""

import numbers
import re
import warnings

import keras
import numpy as np

from tfkd import _checks, _graph, _kernels
from tfkd.prune import _unreached, schedules
from tfkd.prune.wrapper import (
    PrunedLayer,
    PruningGroup,
    check_pattern_fits,
    check_schedule_fits_pattern,
)

_SCOPES = ("layer", "global")
_SUBCLASSED_FIX = (
    "Wrap the layers to prune with tfkd.prune.PrunedLayer(layer, schedule) inside the "
    "model's __init__, or build the model with the functional API."
)


def prune(model, schedule, *, pattern="unstructured", scope="layer", include=None, exclude=None):
    """Returns a copy of `model` whose kernels are pruned by magnitude during training.

    Each selected layer is wrapped in a `PrunedLayer` that masks its kernel (a
    SeparableConv's pointwise kernel: its depthwise kernel stays dense) and updates
    the mask by itself in training calls, following `schedule`; train the result with
    `fit`, or as the student of a `tfkd.Distiller`. `model` itself is not changed. Call
    `strip` on the trained model to get plain Keras layers with the zeros in place.

    Args:
        model: a Sequential or functional Keras model; nested models are descended into.
            A layer of your own class is kept whole (its code makes the layers it holds):
            a warning names the layers it holds that would be pruned; wrap them in
            `PrunedLayer` in its code, or `exclude` it.
        schedule: a `tfkd.prune.PruningSchedule`, or a target sparsity in [0, 1) for
            `ConstantSparsity(sparsity)`.
        pattern: `"unstructured"`, or `"N:M"` to keep N of every M weights along each
            kernel's input channels (`"2:4"` for XNNPACK and sparse tensor cores). The
            pattern fixes the sparsity, `1 - N/M`, so `schedule` must end at it (0.5
            for `"2:4"`); the schedule says when masks update. Defaults to
            `"unstructured"`.
        scope: `"layer"` gives every layer the schedule's sparsity; `"global"` uses one
            magnitude ranking over all selected layers, so layers with many small
            weights lose more. Defaults to `"layer"`.
        include: which layers to prune: a list of layer names (or regular expressions
            matching whole names, e.g. `"conv.*"`) and/or layer classes, or a function
            `layer -> bool`. Defaults to every Dense, convolution and Embedding.
        exclude: layers to leave dense, in the same forms. Defaults to none.

    Returns:
        A new Keras model with `PrunedLayer`s, compiled as `model` was (as
        `keras.models.clone_model` makes it): compile it to choose its optimizer.

    Raises:
        TypeError: `model` is not a Sequential or functional model, or an included layer
            cannot be pruned.
        ValueError: a bad schedule, pattern or scope, a schedule that ends at another
            sparsity than an N:M pattern's, a layer name that does not exist, a pattern
            that does not fit a layer, or nothing to prune.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> x, y = np.random.rand(64, 8), np.random.rand(64, 4)
    >>> pruned = tfkd.prune.prune(model, tfkd.prune.ConstantSparsity(0.5, frequency=1))
    >>> pruned.compile(optimizer="adam", loss="mse")
    >>> _ = pruned.fit(x, y, epochs=1, verbose=0)
    >>> round(tfkd.prune.summary(pruned).sparsity, 2)
    0.5
    """
    _graph.require_graph_model(model, "tfkd.prune.prune", _SUBCLASSED_FIX)
    schedule = schedules.get(schedule)
    n_of_m = _checks.parse_pattern(pattern)
    check_schedule_fits_pattern(schedule, pattern)
    if scope not in _SCOPES:
        raise ValueError(f"`scope` must be one of {_SCOPES}. Received: scope={scope!r}.")
    if scope == "global" and n_of_m is not None:
        raise ValueError(
            f"An N:M pattern fixes the sparsity of each group, so it has no global threshold. "
            f"Received: pattern={pattern!r}, scope='global'. Use scope='layer'."
        )
    layers = list(_graph.leaf_layers(model))
    if any(isinstance(layer, PrunedLayer) for layer in layers):
        raise ValueError(
            f"Model {model.name!r} is already pruned. Call tfkd.prune.strip(model) first "
            "to prune it again with a new schedule."
        )
    selected = _select(layers, include, exclude)
    for layer in selected:
        check_pattern_fits(layer, pattern)
    group = PruningGroup() if scope == "global" else None
    selected_ids = {id(layer) for layer in selected}

    def transform(layer):
        if id(layer) not in selected_ids:
            return None
        wrapper = PrunedLayer(_graph.copy_layer(layer), schedule, pattern=pattern, group=group)
        return wrapper, lambda new, old=layer: _graph.set_weights(new.layer, old.get_weights())

    return _graph.rebuild(model, transform)


def strip(model):
    """Returns a copy of `model` with every `PrunedLayer` replaced by its plain layer.

    The kernels hold the pruned zeros, so the result saves, loads and exports without
    tfkd; `tfkd.export_tflite` calls this itself. A model without pruned layers comes
    back as a copy.

    Args:
        model: a Sequential or functional Keras model.

    Returns:
        A new Keras model.

    Example:

    ```python
    plain = tfkd.prune.strip(pruned)
    any(isinstance(layer, tfkd.prune.PrunedLayer) for layer in plain.layers)  # False
    ```
    """
    return _graph.strip(model)


class PruningSummary:
    """Sparsity of each prunable layer and overall; `str()` gives a table.

    Attributes:
        layers: one dict per layer: `name`, `path` (the names from the model's layers
            down to the layer, "branch/dense" in a nested model), `type`, `parameters`,
            `zeros`, `sparsity`, and `pattern_ok` when an N:M pattern was checked.
        sparsity: zeros / parameters over all rows.
    """

    def __init__(self, layers):
        self.layers = layers
        parameters = sum(row["parameters"] for row in layers)
        self.sparsity = sum(row["zeros"] for row in layers) / parameters if parameters else 0.0

    def __str__(self):
        width = max([24] + [len(row["path"]) + 2 for row in self.layers])
        kind = max([18] + [len(row["type"]) + 2 for row in self.layers])
        lines = [
            f"{'layer':<{width}}{'type':<{kind}}{'parameters':>12}{'zeros':>10}{'sparsity':>10}"
        ]
        for row in self.layers:
            lines.append(
                f"{row['path']:<{width}}{row['type']:<{kind}}{row['parameters']:>12}"
                f"{row['zeros']:>10}{row['sparsity']:>10.3f}"
                + ("" if "pattern_ok" not in row else f"  pattern ok: {row['pattern_ok']}")
            )
        lines.append(f"overall sparsity of prunable kernels: {self.sparsity:.3f}")
        return "\n".join(lines)

    def __repr__(self):
        return f"PruningSummary(sparsity={self.sparsity:.4f}, layers={len(self.layers)})"


def summary(model, pattern=None):
    """Reports the sparsity of every prunable kernel in `model`.

    Reads pruned (`PrunedLayer`), stripped and quantization-aware (`QuantizeWrapper`)
    layers, in nested and subclassed models too, and the kernels inside blocks of your
    own and wrappers not of tfkd (TimeDistributed), which `prune` keeps whole.

    Args:
        model: a Keras model.
        pattern: an `"N:M"` pattern to verify on every kernel, or `None` to verify each
            `PrunedLayer`'s own N:M pattern (if it has one). Defaults to `None`.

    Returns:
        A `PruningSummary`.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: `pattern` is not `None`, `"unstructured"` or `"N:M"`.
    """
    _checks.check_keras_model(model)
    if pattern is not None:
        _checks.parse_pattern(pattern)
    rows = []
    for path, layer in _graph.leaf_layer_paths(model, subclassed=True):
        row = _summary_row(layer, path, pattern)
        if row is not None:
            rows.append(row)
    return PruningSummary(rows)


def _summary_row(layer, path, pattern):
    in_use = _kernels.kernel_in_use(layer)
    if in_use is None:
        return None
    inner, kernel = in_use[0], keras.ops.convert_to_numpy(in_use[1])
    if isinstance(layer, PrunedLayer):
        pattern = pattern or layer.pattern
    zeros = int(np.sum(kernel == 0))
    row = {
        "name": layer.name,
        "path": path,
        "type": type(inner).__name__,
        "parameters": int(kernel.size),
        "zeros": zeros,
        "sparsity": zeros / kernel.size,
    }
    n_of_m = _checks.parse_pattern(pattern) if pattern else None
    if n_of_m is not None and _kernels.input_channel_axis(inner) is not None:
        row["pattern_ok"] = follows_pattern(kernel, *n_of_m)
    return row


def follows_pattern(kernel, n, m, axis=-2):
    """Whether every group of `m` consecutive input channels of `kernel` has <= `n` nonzeros.

    Raises:
        TypeError, ValueError: unless `kernel` is an array of numbers, `n` and `m` are
            ints with 0 < n < m, and `axis` an axis of `kernel`.
    """
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (n, m)):
        raise TypeError(f"`n` and `m` must be ints. Received: n={n!r}, m={m!r}.")
    if not 0 < n < m:
        raise ValueError(f"`n` and `m` must satisfy 0 < n < m. Received: n={n}, m={m}.")
    array = np.asarray(kernel)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(
            "`kernel` must be an array of numbers (a layer's kernel). "
            f"Received: kernel={kernel!r:.80} of type {type(kernel).__name__}."
        )
    kernel = array
    if not isinstance(axis, numbers.Integral) or isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"`axis` must be an int. Received: axis={axis!r}.")
    if not -kernel.ndim <= axis < kernel.ndim:
        raise ValueError(
            f"`axis` must be an axis of `kernel` (of shape {kernel.shape}). Received: "
            f"axis={axis!r}."
        )
    moved = np.moveaxis(kernel, axis, -1)
    if moved.shape[-1] % m:
        return False
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    return bool(np.all(np.count_nonzero(groups, axis=-1) <= n))


def _select(layers, include, exclude, action="prune", stacklevel=3, warn=True):
    """The layers to `action` ("prune", "cluster"): those with a supported kernel, picked
    by `include` and `exclude`. With `warn`, warns about the layers that the selection
    would pick inside a block of the user's own class, which the rebuilt model keeps as
    they are (`stacklevel`: as in `warnings.warn`, counted from here)."""
    names, held, include_test, exclude_test = _selectors(layers, include, exclude)
    message = _unreached.message(held, include_test, exclude_test, action)
    if message and warn:
        warnings.warn(message, stacklevel=stacklevel)
    if warn and include_test is None:
        _warn_left_dense(
            [layer for layer in layers if layer not in held], exclude_test, action, stacklevel + 1
        )
    selected = []
    for layer in layers:
        if exclude_test is not None and exclude_test(layer):
            continue
        if include_test is None:
            if _kernels.unsupported_reason(layer) is None:
                selected.append(layer)
            continue
        if include_test(layer):
            reason = _kernels.unsupported_reason(layer)
            if reason is not None:
                raise TypeError(
                    f"Layer {layer.name!r} was selected by `include` but cannot be "
                    f"{action.rstrip('e')}ed: {reason}. Remove it from `include`."
                    + _held_hint(held, [layer])
                )
            selected.append(layer)
    if not selected:
        raise ValueError(
            f"Nothing to {action}: no selected layer has a kernel tfkd can {action}. Received: "
            f"include={include!r}, exclude={exclude!r}; the model's layers are "
            f"{sorted(names)}. Supported types: "
            f"{', '.join(sorted({t.__name__ for t in _kernels.SUPPORTED_TYPES}))}."
            + _held_hint(held, held)
        )
    return selected


def _warn_left_dense(layers, exclude_test, action, stacklevel):
    """Warns about the trainable weight matrices of Keras's layer types that tfkd cannot
    `action` (Conv2DTranspose, EinsumDense, MultiHeadAttention, LSTM...), which it leaves
    as they are: before, with no word, and the summary's sparsity of the layers it did
    read as the model's (0.798 where 0.042 of every kernel was zero). Blocks and wrappers
    have their own warning (`_unreached`); a layer of the user's own class is theirs."""
    left = [
        layer
        for layer in layers
        if type(layer).__module__.startswith("keras.")
        and (exclude_test is None or not exclude_test(layer))
        and _kernels.unsupported_reason(layer) is not None
        and any(len(weight.shape) >= 2 for weight in layer.trainable_weights)
    ]
    if left:
        shown = [f"{layer.name} ({type(layer).__name__})" for layer in left[:10]]
        weights = sum(layer.count_params() for layer in left)
        warnings.warn(
            f"tfkd cannot {action} the weights of {len(left)} layer(s), {weights:,} "
            f"parameters, which it leaves as they are: {shown}"
            f"{' and more' if len(left) > 10 else ''}. Its summary counts the layers it "
            f"does {action}. Pass their names in `exclude` to leave them without this warning.",
            stacklevel=stacklevel,
        )


def _selectors(layers, include, exclude):
    """`layers`' names, the blocks among them with what they hold (`_graph.held_layers`),
    and the `include` and `exclude` predicates (None where not given)."""
    names = {layer.name for layer in layers}
    held = _graph.held_layers(layers)
    tests = [_selector(a, v, names, held) for a, v in (("include", include), ("exclude", exclude))]
    return names, held, *tests


def _unreached_layers(model, include=None, exclude=None, action="prune"):
    """The warning `prune` (or `cluster_weights`, with `action="cluster"`) gives for the
    layers inside blocks of the user's own class, and inside wrappers not of tfkd, that it
    leaves as they are, or None (for a stage, which logs it once). `model` and the
    selectors as `prune` checks them."""
    _, held, *tests = _selectors(list(_graph.leaf_layers(model)), include, exclude)
    return _unreached.message(held, *tests, action)


def _held_hint(held, blocks):
    """Where `blocks` (some of `held`'s keys) hold layers with kernels: a sentence that
    says so, for an error about them; "" where they hold none."""
    paths = [
        path
        for block in blocks
        for path, layer, _ in held.get(block, [])
        if _kernels.unsupported_reason(layer) is None
    ]
    if not paths:
        return ""
    return (
        f" Layers of your own class, and wrappers not of tfkd (TimeDistributed), are kept "
        f"whole, with what they hold: {paths}; wrap those in the code that makes them, or "
        "take them out of the wrapper."
    )


def _selector(argument, value, names, held=None):
    """A predicate `layer -> bool` from names, classes or a function; None for None.
    `held` ({block: layers}) names the blocks that hold a name not in `names`."""
    if value is None:
        return None
    if callable(value) and not isinstance(value, type):
        return value
    if isinstance(value, (str, type)):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            raise TypeError(
                f"`{argument}` must be layer names, layer classes, or a function "
                f"layer -> bool. Received: {argument}={value!r:.80} of type "
                f"{type(value).__name__}."
            ) from None
    wanted_names = set()
    wanted_types = []
    for item in items:
        if isinstance(item, str):
            wanted_names.add(item)
        elif isinstance(item, type):
            wanted_types.append(item)
        else:
            raise TypeError(
                f"`{argument}` must be layer names, layer classes, or a function layer -> bool. "
                f"Received: {argument} containing {item!r} of type {type(item).__name__}."
            )
    unknown = sorted(
        item for item in wanted_names if not any(_name_matches(item, n) for n in names)
    )
    if unknown:
        inside = sorted(
            f"{layer.name!r} is inside {block.name!r} (as {path!r})"
            for block, layers in (held or {}).items()
            for path, layer, _ in layers
            if any(_name_matches(item, layer.name) for item in unknown)
        )
        where = (
            f" ({'; '.join(inside)}: layers of your own class, or wrappers not of tfkd "
            "such as TimeDistributed, which tfkd keeps whole and cannot select what they "
            "hold)"
            if inside
            else ""
        )
        raise ValueError(
            f"`{argument}` names layers that are not in the model. Received: {unknown}. "
            f"The model's layers are {sorted(names)}{where}."
        )
    return lambda layer: (
        any(_name_matches(item, layer.name) for item in wanted_names)
        or isinstance(layer, tuple(wanted_types))
    )


def _name_matches(expression, name):
    """Whether `expression`, a layer name or a regular expression, matches all of `name`."""
    if expression == name:
        return True
    try:
        return re.fullmatch(expression, name) is not None
    except re.error:
        return False
