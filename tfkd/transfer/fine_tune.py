"""`fine_tune`: adapt a pretrained backbone to a new task (train a head, then unfreeze the top)."""

import numbers

import keras
import numpy as np

from tfkd import _checks, _graph, models
from tfkd.distill._task import ClassIdErrors
from tfkd.distill.callbacks import LabelGuard, NonFiniteLossGuard
from tfkd.transfer import _backbone
from tfkd.transfer.classifier import build_classifier
from tfkd.transfer.text import unused_layers


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
        fine_tune_learning_rate: Adam learning rate of phase 2, a number or a
            `keras.optimizers.schedules.LearningRateSchedule` over phase 2's steps. With
            few labels a decay to 0 (`CosineDecay`) gives a better model than a constant
            rate, whose last epochs keep moving (BENCHMARKS.md, "Few labels"). Defaults
            to `1e-5`.
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

    ```python
    base = tfkd.transfer.pretrained_mobilenet_v2((96, 96, 3), include_top=False)
    model, history = tfkd.transfer.fine_tune(
        base, 10, (x_train, y_train), input_shape=(28, 28, 1),
        preprocessing=tfkd.transfer.torchvision_normalization(),
        head_epochs=2, fine_tune_epochs=2, unfreeze="block_13_expand")
    ```
    """
    _backbone.check_backbone(base)
    num_classes = _checks.check_number("num_classes", num_classes, low=1, integer=True)
    _checks.check_flag("frozen_batch_norm", frozen_batch_norm)
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
    _checks.check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
    callbacks = _checked_callbacks(callbacks)
    unknown = sorted(set(classifier_options) - set(_CLASSIFIER_OPTIONS))
    if unknown:
        # Before: build_classifier's own TypeError, after the backbone was copied.
        raise TypeError(
            f"fine_tune got unexpected keyword argument(s) {unknown}. Accepted, besides its "
            f"own: build_classifier's {list(_CLASSIFIER_OPTIONS)}. (The epochs of the two "
            "phases are `head_epochs` and `fine_tune_epochs`.)"
        )
    _check_labels(train_data, num_classes, "train_data")
    if validation_data is not None:
        _check_labels(validation_data, num_classes, "validation_data")
    base = _backbone.copy(base)
    unfrozen = _backbone.unfreeze_names(base, unfreeze) - unused_layers(base, classifier_options)
    model = build_classifier(
        base, num_classes, frozen_batch_norm=frozen_batch_norm, **classifier_options
    )
    # Labels in a dataset are counted as they are trained on (`LabelGuard` raises at the
    # first that does not fit: JAX trained on them), and a NaN loss stops training.
    guards = [LabelGuard(num_classes, unlabeled=False), NonFiniteLossGuard(["loss"]), *callbacks]
    fit = dict(validation_data=validation_data, callbacks=guards, verbose=verbose)
    if not _is_dataset(train_data):
        train_data, fit["batch_size"] = (train_data[0], train_data[1]), batch_size
    merged = {}
    trained = _graph.behind_augmentation(model, augmentation, model.inputs[0].shape[1:])
    base.trainable = False
    _compile_counting_labels(trained, head_learning_rate)
    _fit(trained, train_data, 0, head_epochs, fit, merged)
    if fine_tune_epochs:
        unfrozen = _backbone.unfreeze(base, unfrozen, frozen_batch_norm)
        _compile_counting_labels(trained, fine_tune_learning_rate)
        _fit(trained, train_data, head_epochs, fine_tune_epochs, fit, merged)
    else:
        unfrozen = []
    # The model returned is compiled as tfkd compiles classifiers, without the count.
    models.compile_classifier(
        model, fine_tune_learning_rate if fine_tune_epochs else head_learning_rate
    )
    return model, TransferHistory(merged, head_epochs, sorted(unfrozen))


def _compile_counting_labels(model, learning_rate):
    """`models.compile_classifier`, with the labels outside the classes counted."""
    models.compile_classifier(model, learning_rate)
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy", ClassIdErrors()])


# `build_classifier`'s keyword arguments that `fine_tune` passes on (`frozen_batch_norm` is
# its own).
_CLASSIFIER_OPTIONS = ("input_shape", "image_size", "preprocessing", "pooling", "dropout", "name")


def _checked_callbacks(callbacks):
    """`callbacks` as a list: `None`, one callback, or a list or tuple of them."""
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.Callback):
        return [callbacks]
    listed = isinstance(callbacks, (list, tuple))
    if not listed or not all(isinstance(c, keras.callbacks.Callback) for c in callbacks):
        raise TypeError(
            "`callbacks` must be None, a keras.callbacks.Callback or a list of them. "
            f"Received: callbacks={callbacks!r}."
        )
    return list(callbacks)


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
        _checks.check_batched(data, name)
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


def _fit(model, train_data, initial_epoch, epochs, options, merged):
    """Runs `epochs` more epochs; numbering goes on from `initial_epoch`, so callbacks
    (TensorBoard, CSVLogger, checkpoints) see one run across both phases."""
    if not epochs:
        return
    _checks.check_fit_strategy(model)
    options = dict(options, initial_epoch=initial_epoch, epochs=initial_epoch + epochs)
    options = _checks.fit_options(train_data, options)
    if isinstance(train_data, tuple):
        history = model.fit(train_data[0], train_data[1], **options)
    else:
        history = model.fit(train_data, **options)
    for metric, values in history.history.items():
        merged.setdefault(metric, []).extend(float(value) for value in values)
