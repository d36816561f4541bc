"""`fine_tune`: adapt a pretrained backbone to a new task (train a head, then unfreeze the top)."""

import numbers

import keras
import numpy as np

from tfkd import _graph
from tfkd.transfer import _backbone, _checks
from tfkd.transfer.layers import GrayscaleToRGB
from tfkd.transfer.text import is_text_backbone, text_classifier_body, unused_layers

POOLINGS = ("avg", "max")


class TransferHistory:
    """The training history of both phases of `fine_tune`.

    Attributes:
        history: `{metric: [value per epoch]}` over both phases, head epochs first,
            like `keras.callbacks.History.history`.
        head_epochs: how many of the epochs trained the head alone.
        unfrozen_layers: names of the backbone layers trained in the second phase.
    """

    def __init__(self, history, head_epochs, unfrozen_layers):
        self.history = history
        self.head_epochs = head_epochs
        self.unfrozen_layers = unfrozen_layers

    def __repr__(self):
        metrics = {name: round(values[-1], 4) for name, values in self.history.items() if values}
        return (
            f"TransferHistory(head_epochs={self.head_epochs}, "
            f"unfrozen_layers={len(self.unfrozen_layers)}, last={metrics})"
        )


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
    num_classes = _checks.check_positive_int(num_classes, "num_classes")
    _checks.check_bool(frozen_batch_norm, "frozen_batch_norm")
    _checks.check_dropout(dropout)
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


def fine_tune(
    base,
    num_classes,
    train_data,
    validation_data=None,
    *,
    head_epochs=5,
    fine_tune_epochs=5,
    unfreeze="all",
    head_learning_rate=1e-3,
    fine_tune_learning_rate=1e-5,
    frozen_batch_norm=True,
    augmentation=None,
    batch_size=64,
    callbacks=None,
    verbose="auto",
    **classifier_options,
):
    """Fine-tunes a pretrained backbone on a new task; returns `(model, history)`.

    Phase 1 trains a new head (see `build_classifier`) with the backbone frozen.
    Phase 2 unfreezes the top of the backbone (`unfreeze`) and trains on with a lower
    learning rate. BatchNormalization layers stay frozen, in inference mode, in both
    phases (`frozen_batch_norm`): their moving statistics, scale and offset are the
    pretrained ones, which a small new dataset would otherwise overwrite.
    `fine_tune_epochs=0` is the feature-extraction mode: the backbone stays frozen.
    The backbone passed in is not modified: it is cloned with its weights.

    The two phases protect a large pretrained backbone (e.g. MobileNetV2) from a
    random head's first gradients. A small backbone, with enough steps, can do
    better trained whole from the start: `head_epochs=0` and a
    `fine_tune_learning_rate` of about 1e-3 (BENCHMARKS.md, issue 5).

    Args:
        base: the pretrained backbone, without its classifier (see `build_classifier`).
        num_classes: number of classes of the new task.
        train_data: `(x, y)` numpy arrays with integer labels, or a `tf.data.Dataset`
            of `(x, y)` batches.
        validation_data: the same, for validation. Defaults to `None`.
        head_epochs: epochs of phase 1. Defaults to `5`.
        fine_tune_epochs: epochs of phase 2; 0 keeps the backbone frozen. Defaults to `5`.
        unfreeze: which backbone layers phase 2 trains: `"all"`, the number of top
            layers (int), a fraction of the layers (float in (0, 1]), or the name of the
            first layer to train (it and every layer after it). Defaults to `"all"`.
        head_learning_rate: Adam learning rate of phase 1. Defaults to `1e-3`.
        fine_tune_learning_rate: Adam learning rate of phase 2. Defaults to `1e-5`.
        frozen_batch_norm: keep the backbone's BatchNormalization layers frozen and in
            inference mode in phase 2 too (they are not counted in `unfrozen_layers`).
            `False` trains them with the unfrozen layers and normalizes with batch
            statistics, which a backbone trained from random weights needs. Defaults
            to `True`.
        augmentation: a Keras layer (e.g. a `keras.Sequential` of `RandomFlip` and
            `RandomTranslation`) applied to each training batch inside the training
            step, on the raw inputs; the returned model does not contain it. With
            few labelled images it is what keeps the new head from memorising them.
            Defaults to `None`.
        batch_size: batch size for numpy data. Defaults to `64`.
        callbacks: Keras callbacks for both phases. Defaults to `None`.
        verbose: passed to `fit`. Defaults to `"auto"`.
        **classifier_options: `input_shape`, `image_size`, `preprocessing`,
            `pooling`, `dropout`, `name`, passed to
            `build_classifier`.

    Returns:
        `(model, history)`: the fine-tuned Keras model (outputs are logits, compiled
        with sparse categorical cross-entropy and accuracy) and a `TransferHistory`.

    Raises:
        ValueError: labels outside `[0, num_classes)`, an unfreeze point that does not
            exist (the error lists candidates), a backbone that still has its
            classifier (`include_top=True`) or cannot take a head.
        TypeError: `base` is not a Keras model or cannot be copied, or a bad type.

    Example:

    >>> base = tfkd.transfer.pretrained_mobilenet_v2((96, 96, 3), include_top=False)
    >>> model, history = tfkd.transfer.fine_tune(
    ...     base, 10, (x_train, y_train), input_shape=(28, 28, 1),
    ...     preprocessing=tfkd.transfer.torchvision_normalization(),
    ...     head_epochs=2, fine_tune_epochs=2, unfreeze="block_13_expand")
    """
    _backbone.check_backbone(base)
    num_classes = _checks.check_positive_int(num_classes, "num_classes")
    _checks.check_bool(frozen_batch_norm, "frozen_batch_norm")
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        raise TypeError(
            "`augmentation` must be a Keras layer applied to each training batch, e.g. "
            "keras.Sequential([keras.layers.RandomFlip('horizontal')]), or None. Received: "
            f"augmentation of type {type(augmentation).__name__}."
        )
    for value, name in ((head_epochs, "head_epochs"), (fine_tune_epochs, "fine_tune_epochs")):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"`{name}` must be an integer >= 0. Received: {name}={value!r}.")
    _checks.check_learning_rate(head_learning_rate, "head_learning_rate")
    _checks.check_learning_rate(fine_tune_learning_rate, "fine_tune_learning_rate")
    _checks.check_batch_size(batch_size)
    _check_labels(train_data, num_classes, "train_data")
    if validation_data is not None:
        _check_labels(validation_data, num_classes, "validation_data")
    base = _backbone.copy(base)
    unfrozen = _backbone.unfreeze_names(base, unfreeze) - unused_layers(base, classifier_options)
    model = build_classifier(
        base, num_classes, frozen_batch_norm=frozen_batch_norm, **classifier_options
    )
    fit = dict(validation_data=validation_data, callbacks=callbacks, verbose=verbose)
    if not _is_dataset(train_data):
        train_data, fit["batch_size"] = (train_data[0], train_data[1]), batch_size
    merged = {}
    trained = _graph.behind_augmentation(model, augmentation, model.inputs[0].shape[1:])
    base.trainable = False
    _compile(trained, head_learning_rate)
    _fit(trained, train_data, 0, head_epochs, fit, merged)
    if fine_tune_epochs:
        unfrozen = _backbone.unfreeze(base, unfrozen, frozen_batch_norm)
        _compile(trained, fine_tune_learning_rate)
        _fit(trained, train_data, head_epochs, fine_tune_epochs, fit, merged)
    else:
        unfrozen = []
    if trained is not model:
        _compile(model, fine_tune_learning_rate if fine_tune_epochs else head_learning_rate)
    return model, TransferHistory(merged, head_epochs, sorted(unfrozen))


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
    _checks.check_batch_size(batch_size)
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
    inputs = keras.Input(input_shape, name="inputs")
    x = inputs
    if len(input_shape) == 3:
        if image_size is None and None not in base_shape[:2] and base_shape[:2] != input_shape[:2]:
            image_size = base_shape[:2]
        if image_size is not None:
            x = keras.layers.Resizing(*image_size, name="resize")(x)
        if input_shape[-1] == 1 and base_shape[-1] == 3:
            x = GrayscaleToRGB(name="grayscale_to_rgb")(x)
    for layer in _as_layers(preprocessing):
        x = layer(x)
    return inputs, x


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


def _is_dataset(data):
    if isinstance(data, (tuple, list)):
        return False
    if not hasattr(data, "element_spec") and not isinstance(data, keras.utils.PyDataset):
        raise TypeError(
            "`train_data` and `validation_data` must be (x, y) arrays, a tf.data.Dataset or "
            "a keras.utils.PyDataset: both training phases iterate over them, which a "
            f"generator cannot do twice. Received: {type(data).__name__}."
        )
    return True


def _check_labels(data, num_classes, name):
    if _is_dataset(data):
        return  # checked by the loss on the first batch
    if len(data) != 2:
        raise ValueError(
            f"`{name}` must be (x, y) or a tf.data.Dataset of (x, y) batches. "
            f"Received: a {type(data).__name__} of length {len(data)}."
        )
    labels = np.asarray(data[1])
    if labels.size == 0 or len(data[0]) != len(labels):
        raise ValueError(
            f"`{name}` needs as many inputs as labels, at least one. Received: "
            f"{len(data[0])} inputs and {labels.size} labels."
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"`{name}` labels must be integer class ids. Received: dtype {labels.dtype}."
        )
    if labels.ndim > 1 and labels.shape[-1] != 1:
        raise ValueError(
            f"`{name}` labels must be integer class ids, shape (n,). Received: shape "
            f"{labels.shape}. For one-hot labels pass labels.argmax(-1)."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`{name}` has labels outside [0, num_classes): min {labels.min()}, max "
            f"{labels.max()}, with num_classes={num_classes}. Pass the number of classes of "
            "your task."
        )


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _fit(model, train_data, initial_epoch, epochs, options, merged):
    """Runs `epochs` more epochs; numbering goes on from `initial_epoch`, so callbacks
    (TensorBoard, CSVLogger, checkpoints) see one run across both phases."""
    if not epochs:
        return
    options = dict(options, initial_epoch=initial_epoch, epochs=initial_epoch + epochs)
    if isinstance(train_data, tuple):
        history = model.fit(train_data[0], train_data[1], **options)
    else:
        history = model.fit(train_data, **options)
    for metric, values in history.history.items():
        merged.setdefault(metric, []).extend(float(value) for value in values)
