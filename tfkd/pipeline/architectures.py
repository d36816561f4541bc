"""Models a config can ask for by name: `{"architecture": "cnn", ...}` or `{"path": "x.keras"}`."""

import os

from tfkd.pipeline import _store
from tfkd.pipeline.stage import KerasModel, invalid_argument

ARCHITECTURES = ("cnn",)


def cnn(
    input_shape,
    num_classes,
    *,
    filters=(24, 48, 96),
    batch_norm=True,
    dense_units=None,
    dropout=0.0,
    seed=0,
):
    """A small image classifier that exports fully int8: conv blocks, max pooling, logits.

    Each entry of `filters` is a 3x3 convolution (+ BatchNormalization) + ReLU block,
    followed by 2x2 max pooling except after the last. Then, without `dense_units`,
    global average pooling; with it, 2x2 max pooling, flattening (the classifier keeps
    where features are) and a ReLU Dense layer of `dense_units`. Then dropout and a
    Dense layer with `num_classes` logits. Pixels are divided by 255 inside the model.
    """
    import keras  # here, so that configs are checked without loading TensorFlow

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for index, width in enumerate(filters):
        name = f"conv{index + 1}"
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=name)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if index < len(filters) - 1:
            x = keras.layers.MaxPooling2D(name=f"pool{index + 1}")(x)
    if dense_units:
        x = keras.layers.MaxPooling2D(name=f"pool{len(filters)}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(dense_units, activation="relu", name="features")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


_CNN_OPTIONS = {
    "filters": (
        "a non-empty list of positive integers",
        lambda value: isinstance(value, list | tuple) and value and all(map(_positive_int, value)),
    ),
    "batch_norm": ("true or false", lambda value: isinstance(value, bool)),
    "dense_units": ("a positive integer or null", lambda v: v is None or _positive_int(v)),
    "dropout": (
        "a number in [0, 1)",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1,
    ),
}


def check_spec(spec, argument):
    """Validates a model spec before any work; raises naming `argument`."""
    if isinstance(spec, KerasModel):
        _check_copyable(spec, argument)
        return
    if not isinstance(spec, dict) or ("architecture" in spec) == ("path" in spec):
        raise invalid_argument(
            argument,
            f"`{argument}` must be a mapping with either `architecture` (one of "
            f"{list(ARCHITECTURES)}, plus its options) or `path` (a `.keras` file), or a Keras "
            f"model. Received: {argument}={spec!r}",
            ValueError if isinstance(spec, dict) else TypeError,
        )
    if "path" in spec:
        if set(spec) != {"path"}:
            raise invalid_argument(
                argument, f"A `path` spec takes no other keys. Received: {argument}={spec!r}"
            )
        check_model_file(spec["path"], f"{argument}.path")
        return
    if spec["architecture"] not in ARCHITECTURES:
        raise invalid_argument(
            argument,
            f"Unknown architecture. Received: {argument}.architecture={spec['architecture']!r}. "
            f"Available: {list(ARCHITECTURES)}",
        )
    unknown = set(spec) - {"architecture", *_CNN_OPTIONS}
    if unknown:
        raise invalid_argument(
            argument,
            f"Unknown option(s) {sorted(unknown)} for architecture {spec['architecture']!r}. "
            "Accepted: "
            + ", ".join(f"{name} ({kind})" for name, (kind, _) in _CNN_OPTIONS.items()),
        )
    for name, (kind, valid) in _CNN_OPTIONS.items():
        if name in spec and not valid(spec[name]):
            raise invalid_argument(
                argument,
                f"`{argument}.{name}` must be {kind}. Received: {name}={spec[name]!r}",
            )


def build(spec, data, seed):
    """A new model from a spec, for `data`'s input shape and classes.

    A Keras model is copied with its weights (a pretrained model stays pretrained), and
    the caller's model is left as it was.
    """
    if isinstance(spec, KerasModel):
        return _store.copy_model(spec, data.input_shape)
    if "path" in spec:
        return _store.load_keras(spec["path"])
    options = {key: value for key, value in spec.items() if key != "architecture"}
    return cnn(data.input_shape, data.num_classes, seed=seed, **options)


def _check_copyable(model, argument):
    """Stages train a copy of a given model, so it must be one Keras can rebuild from its config."""
    from tfkd import _graph

    if not _graph.is_graph_model(model):
        raise invalid_argument(
            argument,
            f"`{argument}` must be a Sequential or functional Keras model: a stage trains a copy "
            f"with the same weights, and a subclassed model cannot be rebuilt from its config. "
            f"Received: {argument}={model.name!r} of type {type(model).__name__}. Build it "
            "with keras.Sequential([...]) or keras.Model(inputs, outputs).",
            TypeError,
        )


def check_model_file(path, argument, suffixes=(".keras",)):
    if not isinstance(path, str | os.PathLike):
        raise invalid_argument(
            argument, f"`{argument}` must be a file path. Received: {argument}={path!r}", TypeError
        )
    if not os.fspath(path).endswith(suffixes):
        raise invalid_argument(
            argument,
            f"`{argument}` must be a {' or '.join(suffixes)} file. "
            f"Received: {argument}={os.fspath(path)!r}",
        )
    if not os.path.isfile(path):
        raise invalid_argument(
            argument,
            f"Model file not found. Received: {argument}={os.fspath(path)!r} (absolute: "
            f"{os.path.abspath(path)!r}). Relative paths in a config are relative to the config "
            "file's directory.",
        )
