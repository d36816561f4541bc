"""Classifiers on a pretrained backbone: `build_classifier` (the backbone, pooling, a new
head), and `feature_extractor` / `extract_features` (the backbone's pooled features)."""

import math

import keras

from tfkd import _checks
from tfkd.transfer import _backbone
from tfkd.transfer.layers import GrayscaleToRGB
from tfkd.transfer.text import is_text_backbone, text_classifier_body

POOLINGS = ("avg", "max")


def build_classifier(
    base,
    num_classes,
    *,
    input_shape=None,
    image_size=None,
    preprocessing=None,
    pooling="avg",
    dropout=0.2,
    frozen_batch_norm=True,
    name=None,
):
    """A new model: the user's raw inputs -> resize/channels -> `base` -> pooled head -> logits.

    `base` is called with `training=False` (unless `frozen_batch_norm=False`, for
    training from scratch), as Keras's transfer-learning guide prescribes. The head
    is pooling (for a feature-map output), dropout and a Dense layer that outputs
    logits. `base` becomes a layer of the new model (no copy: `fine_tune` copies).

    In Keras 3, `fit` calls the model with `training=True`, which reaches the
    backbone's layers despite that `training=False` (keras-team/keras#20285): a
    frozen BatchNormalization layer still runs in inference mode, but once you set
    `base.trainable = True` its statistics move. When you unfreeze the backbone
    yourself, set its BatchNormalization layers back to `trainable = False` (Keras runs
    those in inference mode), as `fine_tune` does.

    Args:
        base: a Keras model (backbone) without its classifier, e.g.
            `keras.applications.MobileNetV2(include_top=False, weights="imagenet")` or
            `tfkd.transfer.pretrained_mobilenet_v2(include_top=False)`, or a `.keras`
            model cut at a feature layer. Functional, Sequential, nested and
            subclassed models all work; a model that records no input shape (a
            subclassed one, or a Sequential never called) needs `input_shape`.
        num_classes: number of classes of the new task.
        input_shape: shape of one raw input, e.g. `(28, 28, 1)`. Defaults to the
            backbone's input shape (required when the backbone records none). A text
            backbone's classifier takes padded token ids (0 = padding) of shape
            `(sequence_length,)`; the default `None` lets the length vary.
        image_size: `(height, width)` the images are resized to before the backbone.
            Defaults to the backbone's input size when it is fixed and differs from
            `input_shape`, else no resizing.
        preprocessing: a Keras layer, or a list of layers, applied after resizing and
            before the backbone (the backbone's own input scaling, e.g.
            `keras.layers.Rescaling(1 / 127.5, offset=-1)`). Defaults to `None`.
            When the images are enlarged and every layer is a per-channel affine map
            (`Rescaling`, or `Normalization` with a given mean and variance), it runs
            before the resize instead, on the smaller image: bilinear resizing commutes
            with such maps, so the outputs are the same to float rounding, and the
            exported model does less work (a 28x28 image into MobileNetV2 at 96x96:
            about a fifth less int8 latency).
        pooling: `"avg"` or `"max"` for a backbone that outputs a feature map.
            Defaults to `"avg"`. For a text backbone (a keras-hub BERT-style model,
            e.g. `pretrained_minilm()`): `"avg"` (mean of the token vectors, padding
            excluded) or `"cls"` (the backbone's pooled output).
        dropout: dropout rate before the classifier. Defaults to `0.2`.
        frozen_batch_norm: call the backbone with `training=False`. `False` lets its
            BatchNormalization layers normalize with batch statistics while training,
            which a backbone trained from random weights needs. Defaults to `True`.
        name: the model's name. Defaults to `"<base name>_classifier"`.

    Returns:
        An uncompiled Keras model whose outputs are logits.

    Raises:
        ValueError: the backbone still has its classifier (`include_top=True`), its
            output cannot take a head, or a bad argument.
        TypeError: `base` is not a Keras model, or `frozen_batch_norm` is not a bool.
    """
    _backbone.check_backbone(base)
    num_classes = _checks.check_number("num_classes", num_classes, low=1, integer=True)
    _checks.check_flag("frozen_batch_norm", frozen_batch_norm)
    _checks.check_number("dropout", dropout, low=0, high=1, high_open=True)
    if is_text_backbone(base):
        if input_shape is not None:
            input_shape = _checks.check_shape(input_shape, "input_shape")
        sequence_length = None if input_shape is None else input_shape[0]
        inputs, features = text_classifier_body(base, sequence_length, pooling)
    else:
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}.")
        inputs, x = _prepare_inputs(base, input_shape, image_size, preprocessing)
        features = base(x, training=False) if frozen_batch_norm else base(x)
        features = _pool(_backbone.single_output(features, base), base, pooling)
    if dropout:
        features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(num_classes, name="head_logits")(features)
    return keras.Model(inputs, outputs, name=name or f"{base.name}_classifier")


def feature_extractor(base, *, pooling="avg", **classifier_options):
    """The frozen backbone with the same input handling as `build_classifier`, pooled.

    Its outputs are the features a linear probe (e.g. scikit-learn's
    `LogisticRegression`) is fitted on. Takes `input_shape`, `image_size` and
    `preprocessing` like `build_classifier`.

    Returns:
        A Keras model from raw inputs to pooled features, `(batch, channels)`.
    """
    _backbone.check_backbone(base)
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}.")
    inputs, x = _prepare_inputs(
        base,
        classifier_options.pop("input_shape", None),
        classifier_options.pop("image_size", None),
        classifier_options.pop("preprocessing", None),
    )
    if classifier_options:
        raise TypeError(
            "`feature_extractor` takes `pooling`, `input_shape`, `image_size` and "
            f"`preprocessing`. Received: unexpected arguments {sorted(classifier_options)}."
        )
    features = _pool(_backbone.single_output(base(x, training=False), base), base, pooling)
    extractor = keras.Model(inputs, features, name=f"{base.name}_features")
    extractor.trainable = False
    return extractor


def extract_features(base, x, *, batch_size=128, **options):
    """`feature_extractor(base, **options).predict(x)`: features for a linear probe."""
    _checks.check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
    return feature_extractor(base, **options).predict(x, batch_size=batch_size, verbose=0)


def _prepare_inputs(base, input_shape, image_size, preprocessing):
    base_shape = _backbone.input_shape(base)
    if base_shape is None and input_shape is None:
        raise ValueError(
            f"The backbone {base.name!r} records no input shape (a subclassed model, or a "
            "Sequential never called or built without keras.Input). "
            "Received: input_shape=None. Pass `input_shape`, the shape of one example, "
            "e.g. input_shape=(96, 96, 3)."
        )
    if input_shape is not None:
        input_shape = _checks.check_shape(input_shape, "input_shape")
    if image_size is not None:
        image_size = _checks.check_shape(image_size, "image_size", length=2)
    input_shape = input_shape if input_shape is not None else base_shape
    base_shape = input_shape if base_shape is None else base_shape
    if None in input_shape:
        raise ValueError(
            "The input shape must be known: pass `input_shape`, e.g. (28, 28, 1). "
            f"Received: input_shape={input_shape!r} (backbone input {base_shape})."
        )
    layers = _as_layers(preprocessing)
    inputs = keras.Input(input_shape, name="inputs")
    if len(input_shape) != 3:
        return inputs, _apply(layers, inputs)
    if image_size is None and None not in base_shape[:2] and base_shape[:2] != input_shape[:2]:
        image_size = base_shape[:2]
    resize = [] if image_size is None else [keras.layers.Resizing(*image_size, name="resize")]
    if input_shape[-1] == 1 and base_shape[-1] == 3:
        resize.append(GrayscaleToRGB(name="grayscale_to_rgb"))
    elif None not in base_shape[-1:] and input_shape[-1] != base_shape[-1]:
        # Before: Keras's "Input 0 ... is incompatible" from inside the backbone.
        raise ValueError(
            f"`input_shape` has {input_shape[-1]} channels and the backbone {base.name!r} takes "
            f"{base_shape[-1]}; only grey images (1 channel) are turned into RGB in front of "
            f"it. Received: input_shape={input_shape!r}, backbone input {base_shape}."
        )
    enlarged = image_size is not None and image_size[0] * image_size[1] > math.prod(input_shape[:2])
    if enlarged and layers and all(map(_is_per_channel_affine, layers)):
        # Same values on fewer pixels: channels, then the affine maps, then the resize.
        return inputs, _apply([*resize[1:], *layers, resize[0]], inputs)
    return inputs, _apply([*resize, *layers], inputs)


def _apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def _is_per_channel_affine(layer):
    """A layer computing `x * a + b` with `a`, `b` constant per channel (or scalars)."""
    if isinstance(layer, keras.layers.Rescaling):
        return True
    return (
        isinstance(layer, keras.layers.Normalization)
        and layer.input_mean is not None
        and tuple(layer.axis) in ((), (-1,))
    )


def _as_layers(preprocessing):
    if preprocessing is None:
        return []
    layers = preprocessing if isinstance(preprocessing, (list, tuple)) else [preprocessing]
    for layer in layers:
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`preprocessing` must be a Keras layer or a list of them (so the model "
                f"saves and exports). Received: an element of type {type(layer).__name__}."
            )
    return layers


def _pool(features, base, pooling):
    rank = len(features.shape)
    if rank == 2:
        return features
    if rank in (3, 4, 5):
        layer = {
            ("avg", 3): keras.layers.GlobalAveragePooling1D,
            ("max", 3): keras.layers.GlobalMaxPooling1D,
            ("avg", 4): keras.layers.GlobalAveragePooling2D,
            ("max", 4): keras.layers.GlobalMaxPooling2D,
            ("avg", 5): keras.layers.GlobalAveragePooling3D,
            ("max", 5): keras.layers.GlobalMaxPooling3D,
        }[(pooling, rank)]
        return layer(name="head_pooling")(features)
    raise ValueError(
        f"The backbone {base.name!r} outputs a tensor of shape {tuple(features.shape)}, which "
        "cannot take a classification head: a head needs features (batch, channels) or a "
        "feature map (batch, ..., channels). Cut the backbone at a feature layer, e.g. "
        "keras.Model(model.input, model.get_layer(NAME).output)."
    )
