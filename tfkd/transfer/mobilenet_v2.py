"""MobileNetV2 in torchvision's exact layout (its ImageNet weights: `torchvision_weights.py`)."""

import keras
import numpy as np

from tfkd import _checks

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
    input_shape = _check_arguments(input_shape, num_classes, include_top, pooling)
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


_POOLINGS = (None, "avg", "max")


def _check_arguments(input_shape, num_classes, include_top, pooling):
    """Checks the arguments of `mobilenet_v2`; returns `input_shape` as a tuple."""
    input_shape = _checks.check_shape(input_shape, "input_shape")
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), channels last. "
            f"Received: input_shape={input_shape!r}. Accepted: e.g. (224, 224, 3)."
        )
    height, width, channels = input_shape
    small = None not in (height, width) and min(height, width) < 32
    if channels != 3 or small:
        # Before: taken, and a grey stem could not take torchvision's RGB weights later.
        raise ValueError(
            "`input_shape` must be (height, width, 3), RGB images of at least 32x32 (the "
            f"layout of torchvision's MobileNetV2). Received: input_shape={input_shape!r}. "
            "For grey or smaller images, `tfkd.transfer.build_classifier` puts the resize "
            "and channels in front of the backbone."
        )
    _checks.check_number("num_classes", num_classes, low=1, integer=True)
    _checks.check_flag("include_top", include_top)
    if pooling not in _POOLINGS:
        raise ValueError(
            f"Unknown `pooling`. Received: pooling={pooling!r}. Accepted: {_POOLINGS}."
        )
    if include_top and pooling is not None:
        raise ValueError(
            "`pooling` applies only with `include_top=False`; the classifier always "
            f"averages. Received: pooling={pooling!r}, include_top=True. Pass "
            "include_top=False to get pooled features."
        )
    return input_shape
