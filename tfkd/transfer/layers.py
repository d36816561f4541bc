"""Input-handling layers that `fine_tune` puts in front of a backbone."""

import math
import numbers

import keras
from keras import ops

# torchvision's ImageNet statistics, for images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="tfkd")
class GrayscaleToRGB(keras.layers.Layer):
    """Repeats a one-channel image over three channels, for backbones that want RGB.

    Example:

    >>> tuple(tfkd.transfer.GrayscaleToRGB()(np.ones((2, 4, 4, 1))).shape)
    (2, 4, 4, 3)
    """

    def call(self, inputs):
        _check_grayscale(inputs.shape, keras.backend.standardize_dtype(inputs.dtype))
        return ops.concatenate([inputs, inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        _check_grayscale(input_shape)
        return (*input_shape[:-1], 3)


def _check_grayscale(shape, dtype=None):
    if len(shape) < 2 or shape[-1] != 1:
        raise ValueError(
            "`inputs` must be images with 1 channel, channels last, e.g. (batch, 28, 28, 1). "
            f"Received: inputs.shape={tuple(shape)}."
        )
    if dtype is not None and dtype in ("string", "object"):
        raise TypeError(
            f"`inputs` must be numeric images (uint8 or float). Received: inputs of dtype {dtype}."
        )


def torchvision_normalization(pixel_scale=255.0, name="torchvision_normalization"):
    """A `keras.layers.Normalization` with torchvision's ImageNet mean and std.

    Args:
        pixel_scale: the value of a white pixel in the inputs (255 for uint8 images,
            1 for images in [0, 1]). Defaults to `255.0`.
        name: the layer's name. Defaults to `"torchvision_normalization"`.

    Returns:
        A layer computing `(x / pixel_scale - mean) / std` per RGB channel.

    Raises:
        TypeError: `pixel_scale` is not a number.
        ValueError: `pixel_scale` is not finite and > 0.
    """
    if not isinstance(pixel_scale, numbers.Real) or isinstance(pixel_scale, bool):
        raise TypeError(
            "`pixel_scale` must be a number: the value of a white pixel (255 or 1). "
            f"Received: pixel_scale={pixel_scale!r} of type {type(pixel_scale).__name__}."
        )
    if not math.isfinite(pixel_scale) or pixel_scale <= 0:
        raise ValueError(
            "`pixel_scale` must be a finite number > 0: the value of a white pixel (255 for "
            f"uint8 images, 1 for images in [0, 1]). Received: pixel_scale={pixel_scale!r}."
        )
    pixel_scale = float(pixel_scale)
    mean = [value * pixel_scale for value in IMAGENET_MEAN]
    variance = [(value * pixel_scale) ** 2 for value in IMAGENET_STD]
    return keras.layers.Normalization(mean=mean, variance=variance, name=name)
