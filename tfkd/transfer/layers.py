"""Input-handling layers that `fine_tune` puts in front of a backbone."""

import keras
from keras import ops

# torchvision's ImageNet statistics, for images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="tfkd")
class GrayscaleToRGB(keras.layers.Layer):
    """Repeats a one-channel image over three channels, for backbones that want RGB.

    Example:

    >>> tfkd.transfer.GrayscaleToRGB()(np.ones((2, 4, 4, 1))).shape
    (2, 4, 4, 3)
    """

    def call(self, inputs):
        if inputs.shape[-1] != 1:
            raise ValueError(
                "GrayscaleToRGB expects images with 1 channel (channels last). "
                f"Received: shape {tuple(inputs.shape)}."
            )
        return ops.concatenate([inputs, inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def torchvision_normalization(pixel_scale=255.0, name="torchvision_normalization"):
    """A `keras.layers.Normalization` with torchvision's ImageNet mean and std.

    Args:
        pixel_scale: the value of a white pixel in the inputs (255 for uint8 images,
            1 for images in [0, 1]). Defaults to `255.0`.
        name: the layer's name. Defaults to `"torchvision_normalization"`.

    Returns:
        A layer computing `(x / pixel_scale - mean) / std` per RGB channel.
    """
    mean = [value * pixel_scale for value in IMAGENET_MEAN]
    variance = [(value * pixel_scale) ** 2 for value in IMAGENET_STD]
    return keras.layers.Normalization(mean=mean, variance=variance, name=name)
