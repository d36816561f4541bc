"""Models a config can ask for: `{"architecture": "cnn" | "text_cnn", ...}`,
`{"path": "x.keras"}`, any `keras.applications` constructor,
`{"application": "MobileNetV3Small", ...}`, or a keras-hub classifier preset folder,
`{"preset": "DIR"}`."""

import inspect
import os

from tfkd import _checks, _presets
from tfkd.models import CNN_OPTIONS, check_cnn_fits, check_cnn_option, cnn
from tfkd.pipeline import _keras_file
from tfkd.pipeline.stage import KerasModel, invalid_argument

# The options of `tfkd.text.conv_classifier` a config may set (its sizes come from the data).
TEXT_CNN_OPTIONS = {
    name: ("a positive integer", _checks.is_integer, lambda v: v > 0)
    for name in ("embedding_dim", "filters", "kernel_size")
} | {
    "hidden_units": ("an integer >= 0", _checks.is_integer, lambda v: v >= 0),
    "dropout": CNN_OPTIONS["dropout"],
}
# Each architecture's options, and the inputs it takes.
ARCHITECTURES = {"cnn": CNN_OPTIONS, "text_cnn": TEXT_CNN_OPTIONS}
ARCHITECTURE_INPUTS = {"cnn": "images", "text_cnn": "token ids"}
SPEC_KINDS = ("architecture", "path", "application", "preset")
# The options of `cnn` that decide how often it pools.
CNN_POOLING = ("filters", "pool_every", "dense_units")
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
            f"{list(ARCHITECTURES)}, plus its options), `path` (a `.keras` file), "
            "`application` (a keras.applications constructor, e.g. 'MobileNetV3Small', plus "
            "its arguments) or `preset` (a keras-hub classifier preset folder), or a Keras "
            f"model. Received: {argument}={spec!r}",
            ValueError if isinstance(spec, dict) else TypeError,
        )
    if "application" in spec:
        _check_application(spec, argument)
        return
    if "preset" in spec:
        _check_preset(spec, argument)
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
    options = ARCHITECTURES[spec["architecture"]]
    # Every bad option at once (`tfkd check` lists each config error): before, the first.
    problems = []
    unknown = set(spec) - {"architecture", *options}
    if unknown:
        accepted = ", ".join(f"{name} ({kind})" for name, (kind, *_) in options.items())
        problems.append(
            ValueError(
                f"Unknown option(s) {sorted(unknown)} for architecture "
                f"{spec['architecture']!r}. Accepted: {accepted}"
            )
        )
    for name in options:
        if name in spec:
            try:
                check_cnn_option(name, spec[name], options)
            except (TypeError, ValueError) as error:
                problems.append(type(error)(f"`{argument}.{str(error)[1:]}"))
    if problems:
        kind = TypeError if all(isinstance(p, TypeError) for p in problems) else ValueError
        raise invalid_argument(argument, "; ".join(map(str, problems)), kind)


def build(spec, data, seed):
    """A new model from a spec, for `data`'s input shape and classes.

    A Keras model is copied with its weights (a pretrained model stays pretrained), and
    the caller's model is left as it was. A `clustered` spec (only a `cluster` stage's
    output, see `clustered`) gives the model its stage clusters, stripped; a `quantized`
    one (a `quantize_aware` stage's) the model quantization-aware; a `shrunk` one (a
    `prune_channels` stage's) the model with as many channels removed; a `transfer`
    spec (only a `transfer` stage's output) the classifier that stage makes, untrained.
    """
    if isinstance(spec, dict) and "clustered" in spec:
        return spec["stage"].clustered(build(spec["clustered"], data, seed), stripped=True)
    if isinstance(spec, dict) and "quantized" in spec:
        return spec["stage"].quantized(build(spec["quantized"], data, seed))
    if isinstance(spec, dict) and "shrunk" in spec:
        return spec["stage"].shrunk(build(spec["shrunk"], data, seed))
    if isinstance(spec, dict) and "transfer" in spec:
        return spec["transfer"].classifier(data)
    if isinstance(spec, KerasModel):
        from tfkd import _graph

        return _graph.copy_model(spec, data.input_shape)
    if "path" in spec:
        return _keras_file.load_keras(spec["path"])
    if "preset" in spec:
        from tfkd.transfer import load_preset

        return load_preset(spec["preset"])
    if "application" in spec:
        return application(spec, data.input_shape, data.num_classes, seed)
    options = {key: value for key, value in spec.items() if key != "architecture"}
    if spec["architecture"] == "text_cnn":
        return text_cnn(data, seed, **options)
    return cnn(data.input_shape, data.num_classes, seed=seed, **options)


def clustered(spec, stage):
    """The spec of the model `stage` (a `cluster` stage) makes from `spec`'s, or None
    where `spec` is None (unknown)."""
    return None if spec is None else {"clustered": spec, "stage": stage}


def quantized(spec, stage):
    """The spec of the model `stage` (a `quantize_aware` stage) makes from `spec`'s, or
    None where `spec` is None (unknown)."""
    return None if spec is None else {"quantized": spec, "stage": stage}


def shrunk(spec, stage):
    """The spec of the model `stage` (a `prune_channels` stage) makes from `spec`'s, or
    None where `spec` is None (unknown)."""
    return None if spec is None else {"shrunk": spec, "stage": stage}


def may_be_quantized(spec):
    """Whether the model of `spec` may be quantization-aware: False where the spec says
    it is not (an architecture, a preset, an application, a transfer stage's classifier),
    True where it says it is (a `quantize_aware` stage's), the model's answer for a Keras
    model, None where only the built model can tell (a `.keras` file) or `spec` is None."""
    while isinstance(spec, dict) and "clustered" in spec:
        spec = spec["clustered"]
    if isinstance(spec, dict) and "quantized" in spec:
        return True
    if isinstance(spec, dict) and "shrunk" in spec:
        return False  # `shrink` gives plain Keras layers
    if isinstance(spec, KerasModel):
        from tfkd.quantize import is_quantized

        return is_quantized(spec)
    return None if spec is None or "path" in spec else False


def trained(spec):
    """The spec of a model trained further from `spec`'s: clustered kernels no longer
    hold their clusters, the architecture is the same."""
    while isinstance(spec, dict) and "clustered" in spec:
        spec = spec["clustered"]
    return spec


def text_cnn(data, seed, **options):
    """`tfkd.text.conv_classifier` for `data`'s token ids: its vocabulary size is the
    tokenizer's (else the largest id + 1), its sequence length the data's."""
    import keras

    from tfkd.text import conv_classifier

    if data.tokenizer is not None:
        vocabulary_size = data.tokenizer.vocabulary_size
    else:
        vocabulary_size = int(max(data.x_train.max(), data.x_test.max())) + 1
    keras.utils.set_random_seed(seed)
    return conv_classifier(
        vocabulary_size, data.num_classes, sequence_length=data.input_shape[0], **options
    )


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
    except Exception as error:  # Keras's download: a bare Exception ("URL fetch failure")
        if not isinstance(weights, str) or weights.endswith(".h5"):
            raise
        raise invalid_argument(
            "application",
            f"keras.applications.{name} could not get its {weights!r} weights: {error}. "
            f"Received: weights={weights!r}. Run once where the internet is reachable (Keras "
            "keeps them in ~/.keras/models), or pass a .h5 file, or weights: null.",
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
    """Checks that an `architecture` takes the data's inputs, and builds an `application`
    spec once, before any stage runs: its constructor checks its arguments (other specs
    are checked by `check_spec`)."""
    if isinstance(spec, dict) and "architecture" in spec:
        wanted = ARCHITECTURE_INPUTS[spec["architecture"]]
        if wanted != input_kind(data):
            raise invalid_argument(
                argument,
                f"Architecture {spec['architecture']!r} takes {wanted}, and the data are "
                f"{input_kind(data)} of shape {data.input_shape}. Received: {argument}={spec!r}. "
                f"Use "
                + " or ".join(repr(n) for n, kind in ARCHITECTURE_INPUTS.items() if kind != wanted)
                + ".",
            )
        if spec["architecture"] == "cnn":
            _check_cnn_fits(spec, data, argument)
            check_pixels(data, argument, f"{spec!r}", "Architecture 'cnn' divides them by 255")
    if isinstance(spec, KerasModel):
        check_fits(spec, data, argument, repr(spec.name))
    if isinstance(spec, dict) and "path" in spec:
        model = load_checked(spec["path"], f"{argument}.path")
        check_fits(model, data, f"{argument}.path", repr(spec["path"]))
    if isinstance(spec, dict) and "application" in spec:
        if data.x_train.ndim != 4:
            raise invalid_argument(
                argument,
                "keras.applications models take images of shape (height, width, channels), "
                f"and the data are {input_kind(data)} of shape {data.input_shape}. Received: "
                f"{argument}={spec!r}. For token ids, use {{architecture: text_cnn}}.",
            )
        try:
            application(spec, data.input_shape, data.num_classes)
        except (ValueError, TypeError) as error:
            raise invalid_argument(argument, str(error), type(error)) from None


def _check_cnn_fits(spec, data, argument):
    defaults = {name: inspect.signature(cnn).parameters[name].default for name in CNN_POOLING}
    options = {name: spec.get(name, default) for name, default in defaults.items()}
    try:
        check_cnn_fits(data.input_shape, **options)
    except ValueError as error:
        raise invalid_argument(argument, f"`{argument}.{str(error)[1:]}") from None


def load_checked(path, argument):
    """The `.keras` file at `path`, loaded; a file that cannot be read raises naming
    `argument`."""
    try:
        return _keras_file.load_keras(path)
    except ValueError as error:
        raise invalid_argument(
            argument, f"{error} Received: {argument}={os.fspath(path)!r}"
        ) from error


def check_pixels(data, argument, received, scaling):
    """Raises naming `argument` where float images hold no value above 1: the model
    (`scaling` says how) takes pixels of 0 to 255. Before, images scaled to [0, 1] in an
    `.npz` trained with no word: a transfer teacher reached 0.20 accuracy on them, 0.72
    on the same images as 0-255."""
    import numpy as np

    x = data.x_train
    if x.ndim != 4 or x.dtype.kind != "f" or not x.size:
        return
    largest = float(np.max(x))
    if largest <= 1.0:
        raise invalid_argument(
            argument,
            f"The images hold no value above {largest:g}, and the model takes pixels of 0 to "
            f"255 ({scaling}). Received: {argument}={received} on images of values up to 1. "
            "Store them as pixels: `(x * 255).astype('uint8')` in the `.npz`.",
        )


def check_fits(model, data, argument, received):
    """Raises naming `argument` (whose value `received` describes) unless `model` takes
    inputs of the data's shape and gives one score per class. A model never called is
    not checked (a stage builds it for the data's inputs when it copies it), nor the inputs
    of one without a graph of one input (keras-hub's take several)."""
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not model.built or not outputs:
        return  # never called, or subclassed
    if len(outputs) != 1:  # before: the stage ran, and failed in Keras's loss
        raise invalid_argument(
            argument,
            f"The model {model.name!r} gives {len(outputs)} outputs; a classifier here gives "
            f"one, a score per class. Received: {argument}={received}. Give a model with one "
            "output.",
        )
    if len(inputs or []) != 1:
        return
    takes = tuple(inputs[0].shape[1:])
    fits = len(takes) == len(data.input_shape) and all(
        size is None or size == given for size, given in zip(takes, data.input_shape)
    )
    if not fits:
        raise invalid_argument(
            argument,
            f"The model {model.name!r} takes inputs of shape {takes}, and the data's are "
            f"{tuple(data.input_shape)}. Received: {argument}={received}. "
            "Give a model made for this data.",
        )
    scores = outputs[0].shape
    if len(scores) != 2 or scores[-1] != data.num_classes:
        raise invalid_argument(
            argument,
            f"The model {model.name!r} gives outputs of shape {tuple(scores[1:])}, and the data "
            f"have {data.num_classes} classes: a classifier here gives one score per class. "
            f"Received: {argument}={received}",
        )


def _check_preset(spec, argument):
    """A classifier preset folder, checked without Keras: a backbone alone cannot classify."""
    if set(spec) != {"preset"}:
        raise invalid_argument(
            argument, f"A `preset` spec takes no other keys. Received: {argument}={spec!r}"
        )
    try:
        folder = _presets.preset_folder(spec["preset"], f"{argument}.preset")
    except (TypeError, ValueError, FileNotFoundError) as error:
        raise invalid_argument(
            argument, str(error), TypeError if isinstance(error, TypeError) else ValueError
        ) from None
    if not _presets.has_task(folder):
        raise invalid_argument(
            argument,
            f"`{argument}.preset` holds a backbone without a classifier (no task.json). "
            f"Received: {argument}.preset={folder!r}. Fine-tune it first with a `transfer` "
            "stage (`backbone: {preset: DIR}`), or give a classifier's preset.",
        )


def input_kind(data):
    """`"token ids"` (integer rows, as a tokenizer makes) or `"images"`."""
    x = data.x_train
    return "token ids" if x.ndim == 2 and x.dtype.kind in "iu" else "images"


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
