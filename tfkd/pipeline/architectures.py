"""Models a config can ask for: `{"architecture": "cnn", ...}`, `{"path": "x.keras"}`, or any
`keras.applications` constructor, `{"application": "MobileNetV3Small", ...}`."""

import os

from tfkd.models import CNN_OPTIONS, check_cnn_option, cnn
from tfkd.pipeline import _store
from tfkd.pipeline.stage import KerasModel, invalid_argument

ARCHITECTURES = ("cnn",)
SPEC_KINDS = ("architecture", "path", "application")
# The options of an `application` spec that tfkd reads itself; the others go to the
# keras.applications constructor.
APPLICATION_OPTIONS = ("application", "image_size", "weights")


def check_spec(spec, argument):
    """Validates a model spec before any work; raises naming `argument`.

    An `application` spec is checked here as far as it can be without Keras (a config
    is checked before TensorFlow loads); its constructor's arguments are checked when the
    pipeline builds it, before any stage runs."""
    if isinstance(spec, KerasModel):
        _check_copyable(spec, argument)
        return
    if not isinstance(spec, dict) or sum(kind in spec for kind in SPEC_KINDS) != 1:
        raise invalid_argument(
            argument,
            f"`{argument}` must be a mapping with one of `architecture` (one of "
            f"{list(ARCHITECTURES)}, plus its options), `path` (a `.keras` file) or "
            "`application` (a keras.applications constructor, e.g. 'MobileNetV3Small', plus "
            f"its arguments), or a Keras model. Received: {argument}={spec!r}",
            ValueError if isinstance(spec, dict) else TypeError,
        )
    if "application" in spec:
        _check_application(spec, argument)
        return
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
    unknown = set(spec) - {"architecture", *CNN_OPTIONS}
    if unknown:
        raise invalid_argument(
            argument,
            f"Unknown option(s) {sorted(unknown)} for architecture {spec['architecture']!r}. "
            "Accepted: "
            + ", ".join(f"{name} ({kind})" for name, (kind, *_) in CNN_OPTIONS.items()),
        )
    for name in CNN_OPTIONS:
        if name in spec:
            try:
                check_cnn_option(name, spec[name])
            except (TypeError, ValueError) as error:
                raise invalid_argument(argument, f"`{argument}.{str(error)[1:]}") from None


def build(spec, data, seed):
    """A new model from a spec, for `data`'s input shape and classes.

    A Keras model is copied with its weights (a pretrained model stays pretrained), and
    the caller's model is left as it was.
    """
    if isinstance(spec, KerasModel):
        from tfkd import _graph

        return _graph.copy_model(spec, data.input_shape)
    if "path" in spec:
        return _store.load_keras(spec["path"])
    if "application" in spec:
        return application(spec, data.input_shape, data.num_classes, seed)
    options = {key: value for key, value in spec.items() if key != "architecture"}
    return cnn(data.input_shape, data.num_classes, seed=seed, **options)


def application(spec, input_shape, num_classes, seed=0):
    """A classifier on a `keras.applications` model: the data's inputs, resized to
    `image_size` (when given) and repeated to 3 channels for `weights` other than `None`
    (ImageNet's are RGB), into the constructor's model without its top (`include_top=False`,
    average pooling), then a Dense layer of `num_classes` logits.

    Args:
        spec: `{"application": name, "image_size": int, "weights": None | "imagenet" |
            a file, **constructor arguments}` (e.g. `alpha`, `minimalistic`).

    Raises:
        ValueError, TypeError: a name keras.applications does not have, or arguments its
            constructor refuses, with the `argument` attribute `"application"`.
    """
    import keras

    name = spec["application"]
    constructor = getattr(keras.applications, name, None)
    if not (isinstance(constructor, type) or callable(constructor)) or name.startswith("_"):
        raise invalid_argument(
            "application",
            f"keras.applications has no model {name!r}. Received: application={name!r}. "
            "Use a constructor's name, e.g. 'MobileNetV3Small', 'MobileNetV2', 'EfficientNetB0'.",
        )
    options = {key: value for key, value in spec.items() if key not in APPLICATION_OPTIONS}
    weights = spec.get("weights")
    size = spec.get("image_size")
    height, width, channels = input_shape
    shape = (size or height, size or width, 3 if weights is not None else channels)
    keras.utils.set_random_seed(seed)
    try:
        base = constructor(
            input_shape=shape, include_top=False, weights=weights, pooling="avg", **options
        )
    except (TypeError, ValueError) as error:
        raise invalid_argument(
            "application",
            f"keras.applications.{name} refused the spec: {error} Received: {spec!r}",
            type(error),
        ) from None
    inputs = keras.Input(tuple(input_shape), name="inputs")
    x = inputs
    if size:
        x = keras.layers.Resizing(size, size, name="resize")(x)
    if shape[-1] != channels:
        x = keras.layers.Concatenate(name="to_rgb")([x] * (shape[-1] // channels))
    outputs = keras.layers.Dense(num_classes, name="logits")(base(x))
    return keras.Model(inputs, outputs, name=name.lower())


def check_buildable(spec, data, argument):
    """Builds an `application` spec once, before any stage runs: its constructor checks
    its arguments (other specs are checked by `check_spec`)."""
    if isinstance(spec, dict) and "application" in spec:
        try:
            application(spec, data.input_shape, data.num_classes)
        except (ValueError, TypeError) as error:
            raise invalid_argument(argument, str(error), type(error)) from None


def _check_application(spec, argument):
    name = spec["application"]
    if not isinstance(name, str) or not name.isidentifier():
        raise invalid_argument(
            argument,
            f"`{argument}.application` must name a keras.applications constructor, e.g. "
            f"'MobileNetV3Small'. Received: {argument}.application={name!r}",
            TypeError if not isinstance(name, str) else ValueError,
        )
    size = spec.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 32):
        raise invalid_argument(
            argument,
            f"`{argument}.image_size` must be an integer >= 32 (the side the images are "
            f"resized to; keras.applications need 32 or more). Received: "
            f"{argument}.image_size={size!r}",
        )
    weights = spec.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise invalid_argument(
            argument,
            f"`{argument}.weights` must be null (random initialisation), 'imagenet' (needs "
            f"internet once) or a weights file. Received: {argument}.weights={weights!r}",
            TypeError,
        )


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
