"""Small image classifiers that export fully int8: the CNN the pipeline builds from
`{"architecture": "cnn", ...}`, and the one the examples, benchmarks and
`saved_models/build_teachers.py` build their Fashion-MNIST teacher and student with;
`compile_classifier`, how tfkd compiles every classifier it trains; and `save`, how it
writes a trained model with its metadata."""

import json
import os

from tfkd import _atomic, _checks

__all__ = ["cnn", "compile_classifier", "save"]


def _positive_int(value):
    return _checks.is_integer(value) and value > 0


# Each option of `cnn` (and of a config's `{"architecture": "cnn", ...}`): what it
# accepts, whether a value has the right type, and whether it is accepted. Checked
# here, without Keras, so that configs are checked before TensorFlow loads.
CNN_OPTIONS = {
    "filters": (
        "a non-empty list of positive integers",
        lambda v: isinstance(v, list | tuple) and all(map(_checks.is_integer, v)),
        lambda v: bool(v) and all(map(_positive_int, v)),
    ),
    "batch_norm": ("true or false", lambda v: isinstance(v, bool), lambda v: True),
    "pool_every": ("a positive integer", _checks.is_integer, _positive_int),
    "dense_units": (
        "a positive integer or null",
        lambda v: v is None or _checks.is_integer(v),
        lambda v: v is None or _positive_int(v),
    ),
    "dropout": ("a number in [0, 1)", _checks.is_number, lambda v: 0 <= v < 1),
}


def check_cnn_option(option, value, options=CNN_OPTIONS):
    """Raises unless `value` is accepted for `cnn`'s `option` (or that of another table
    like `CNN_OPTIONS`): a TypeError for a wrong type, a ValueError for a value out of
    range."""
    accepted, right_type, valid = options[option]
    if not right_type(value) or not valid(value):
        raise (ValueError if right_type(value) else TypeError)(
            f"`{option}` must be {accepted}. Received: {option}={value!r}"
        )


def check_cnn_fits(input_shape, filters, pool_every=1, dense_units=None):
    """Raises a ValueError unless images of `input_shape` are large enough for the 2x2 max
    poolings `cnn` puts in (each halves the height and width, rounding down)."""
    poolings = (len(filters) - 1) // pool_every + bool(dense_units)
    side = min(input_shape[:2])
    if side < 2**poolings:
        most = side.bit_length() - 1
        raise ValueError(
            f"`filters` makes {len(filters)} blocks, which pool the images {poolings} times "
            "(2x2 max pooling after every `pool_every`-th block but the last, and once more "
            f"with `dense_units`); images of {input_shape[0]}x{input_shape[1]} can be pooled "
            f"{most} times. Received: filters={filters!r}, pool_every={pool_every!r}, "
            f"dense_units={dense_units!r}. Use fewer blocks, or a larger `pool_every`."
        )


def cnn(
    input_shape,
    num_classes,
    *,
    filters=(24, 48, 96),
    batch_norm=True,
    pool_every=1,
    dense_units=None,
    dropout=0.0,
    seed=0,
    name="cnn",
):
    """A small image classifier that exports fully int8: conv blocks, max pooling, logits.

    Each entry of `filters` is a 3x3 convolution (+ BatchNormalization) + ReLU block;
    2x2 max pooling follows every `pool_every`-th block, except the last. Then, without
    `dense_units`, global average pooling; with it, 2x2 max pooling, flattening (the
    classifier keeps where features are) and a ReLU Dense layer of `dense_units`. Then
    dropout and a Dense layer with `num_classes` logits (no softmax, as distillation
    wants). Pixels are divided by 255 inside the model.

    Args:
        input_shape: the shape of one image, `(height, width, channels)`.
        num_classes: how many logits.
        filters: the width of each conv block. Defaults to `(24, 48, 96)`.
        batch_norm: BatchNormalization after each convolution (which then has no
            bias). Defaults to `True`.
        pool_every: pool after every that many blocks. Defaults to `1`.
        dense_units: see above. Defaults to `None`.
        dropout: dropout rate before the logits. Defaults to `0.0`.
        seed: seeds Keras's initializers. Defaults to `0`.
        name: the model's name. Defaults to `"cnn"`.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> student = tfkd.models.cnn((28, 28, 1), 10, filters=(12, 24, 24), batch_norm=False)
    >>> student.count_params()
    8194
    """
    options = dict(
        filters=filters,
        batch_norm=batch_norm,
        pool_every=pool_every,
        dense_units=dense_units,
        dropout=dropout,
    )
    for option, value in options.items():
        check_cnn_option(option, value)
    input_shape = _check_shape(input_shape)
    check_cnn_fits(input_shape, filters, pool_every, dense_units)
    num_classes = _checks.check_number("num_classes", num_classes, low=1, integer=True)
    _checks.check_seed(seed)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string. Received: name={name!r}")
    import keras  # here, so that configs are checked without loading TensorFlow

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    pools = 0
    for index, width in enumerate(filters):
        block = f"conv{index + 1}"
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=block)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{block}_bn")(x)
        x = keras.layers.ReLU(name=f"{block}_relu")(x)
        if index < len(filters) - 1 and (index + 1) % pool_every == 0:
            pools += 1
            x = keras.layers.MaxPooling2D(name=f"pool{pools}")(x)
    if dense_units:
        x = keras.layers.MaxPooling2D(name=f"pool{pools + 1}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(dense_units, activation="relu", name="features")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def compile_classifier(model, learning_rate=1e-3, from_logits=True):
    """Compiles `model` as tfkd trains every classifier: Adam, sparse categorical
    cross-entropy on integer labels, and accuracy; returns it.

    Args:
        model: a Keras model (or a `tfkd.Distiller`: the loss is its task loss).
        learning_rate: Adam's learning rate, a number > 0 or a schedule.
            Defaults to `1e-3`.
        from_logits: whether the model outputs logits (no softmax). Defaults to `True`.

    Returns:
        `model`, compiled.

    Example:

    >>> model = tfkd.models.compile_classifier(tfkd.models.cnn((28, 28, 1), 10), 2e-3)
    >>> model.compiled
    True
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a Keras model. Received: model of type {type(model).__name__}"
        )
    _checks.check_learning_rate(learning_rate, "learning_rate")
    _checks.check_flag("from_logits", from_logits)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    return model


def save(model, path, metadata=None):
    """Writes `model` for inference, and its metadata, atomically.

    The file holds the architecture and weights but no optimizer state (which would
    triple an Adam-trained model's size): it is an uncompiled copy. Each file is
    written to a temporary name and renamed, so a crash leaves the old file or the new
    one, never half of one. The pipeline's stages and the teachers in `saved_models/`
    are written this way.

    Args:
        model: a Keras model.
        path: the `.keras` file to write; its directory is made if missing.
        metadata: a dict, written beside the model as `metadata.json` with `bytes`
            (the model file's size) added; it must be JSON-serialisable, which is
            checked before anything is written. Defaults to `None` (no metadata file).

    Returns:
        The metadata written (with `bytes`), or `None`.

    Example:

    ```python
    tfkd.models.save(model, "teacher/model.keras", {"accuracy": 0.93})
    ```
    """
    import keras

    from tfkd import _graph

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a Keras model. Received: model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"`model` has no weights yet: it was never built or called. Received: model "
            f"{model.name!r} of type {type(model).__name__}. Call it on a batch, or start a "
            "Sequential model with `keras.Input(shape)`, before saving it."
        )
    _checks.check_path(path, "path")
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"`path` must end in `.keras`. Received: path={os.fspath(path)!r}")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(
                "`metadata` must be a dict or None. "
                f"Received: metadata of type {type(metadata).__name__}"
            )
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"`metadata` must be JSON-serialisable: {error}. Received: metadata={metadata!r}"
            ) from None
    with _atomic.writing(path, suffix=".keras") as temporary:
        _graph.inference_copy(model).save(temporary)
    if metadata is None:
        return None
    metadata = {**metadata, "bytes": os.path.getsize(path)}
    metadata_path = os.path.join(os.path.dirname(os.path.abspath(path)), "metadata.json")
    _atomic.write_bytes(metadata_path, (json.dumps(metadata, indent=2) + "\n").encode())
    return metadata


def _check_shape(input_shape):
    valid = (
        isinstance(input_shape, list | tuple)
        and len(input_shape) == 3
        and all(map(_positive_int, input_shape))
    )
    if not valid:
        raise (ValueError if isinstance(input_shape, list | tuple) else TypeError)(
            "`input_shape` must be the shape of one image, (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(size) for size in input_shape)
