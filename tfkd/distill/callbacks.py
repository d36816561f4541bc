"""Callbacks that `tfkd` adds to training by itself."""

import inspect
import math
import os
import threading

import keras
import numpy as np

from tfkd.distill._task import LABEL_ERRORS, UNLABELED


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training with an error naming the loss components that are NaN/inf.

    `Distiller.fit` adds it by itself. The error names the first batch whose
    loss was not finite and only the components that were not finite there (once
    the weights are NaN, every later batch's components are NaN too). At the end of
    each epoch it also checks the trained weights, which a NaN input can make NaN
    while every loss stays finite (on TensorFlow, through a ReLU).

    Args:
        loss_names: Log keys to watch, in the order they are reported.
    """

    # Checked on the training thread. As an `async_safe` callback (checked on Keras's
    # callback threads, the loop never waiting for the device), it broke JAX training:
    # with a thread setting `stop_training` mid-loop, the epoch-end metrics read buffers
    # the next step had donated ("Buffer has been deleted or donated": 7 of 60 runs of
    # the NaN test under load, 0 of 60 since). A bad batch asks training to stop, and
    # the earliest one is raised at the end of the epoch.
    async_safe = False

    def __init__(self, loss_names):
        super().__init__()
        self.loss_names = _check_loss_names(loss_names)
        self._epoch = 0
        self._lock = threading.Lock()
        self._bad_batches = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = {
            name: float(logs[name])
            for name in self.loss_names
            if name in logs and not math.isfinite(float(logs[name]))
        }
        if bad:
            with self._lock:
                self._bad_batches.append((batch, bad))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._raise_first()
        self._check_weights()

    def on_train_end(self, logs=None):
        self._raise_first()

    def _check_weights(self):
        """Raises where a trained weight is NaN/inf while every loss stayed finite: on
        TensorFlow, a ReLU gives 0 for a NaN input and NaN for its gradient, so one NaN
        input value makes the kernel NaN with finite losses, and every output the same."""
        for variable in self.model.trainable_variables:
            value = keras.ops.convert_to_numpy(variable)
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise FloatingPointError(
                    f"Training stopped at the end of epoch {self._epoch + 1}: the trained "
                    f"weight {variable.path!r} holds {int(np.sum(~np.isfinite(value)))} NaN "
                    "or infinite values while the losses were finite. Received: a NaN or "
                    "infinite input (a ReLU hides it from the loss, not from the gradient), "
                    "or a step that overflowed. Check the inputs for NaN/inf, or lower the "
                    "learning rate."
                )

    def _raise_first(self):
        with self._lock:
            found, self._bad_batches = self._bad_batches, []
        if not found:
            return
        batch, bad = min(found, key=lambda item: item[0])
        raise FloatingPointError(
            f"Training stopped at epoch {self._epoch + 1}, batch {batch + 1}: non-finite "
            f"loss component(s) {sorted(bad)}. Received: {bad}. Check the inputs for "
            "NaN/inf, lower the learning rate, or lower the weight of that component."
        )


def _check_loss_names(loss_names):
    try:
        names = None if isinstance(loss_names, (str, bytes)) else list(loss_names)
    except TypeError:
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise TypeError(
            "`loss_names` must be a list of log keys, e.g. ['loss']. Received: "
            f"loss_names={loss_names!r} (a string would be read letter by letter)."
        )
    if not names:
        raise ValueError(
            "`loss_names` must name at least one log key to watch, e.g. ['loss']. "
            "Received: loss_names=[]."
        )
    return names


class LabelGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose labels do not fit the student.

    `Distiller.fit` puts it first among the callbacks. It reads the count of such
    labels that the training step logs (`_task.LabelErrors`: labels from a dataset
    or generator, which `fit` cannot check ahead) and takes it out of the logs, so
    that no other callback, progress bar or history shows it.

    Args:
        classes: The student's number of outputs.
        unlabeled: Whether `tfkd.distill.UNLABELED` marks an example without a label
            (a Distiller's), for the message. Defaults to `True`.
    """

    async_safe = False  # It raises mid-epoch, on the training thread.

    def __init__(self, classes, unlabeled=True):
        super().__init__()
        self.classes, self.unlabeled = classes, unlabeled
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        errors = pop_label_errors(logs)
        where = f"in the training data at epoch {self._epoch + 1}, batch {batch + 1}"
        raise_label_errors(errors, where, self.classes, self.unlabeled)

    def on_test_batch_end(self, batch, logs=None):
        # A model compiled with the count (`_task.ClassIdErrors`) logs it in evaluation
        # too; a Distiller raises it in `evaluate` itself.
        errors = pop_label_errors(logs)
        raise_label_errors(
            errors, f"in the validation data, batch {batch + 1}", self.classes, self.unlabeled
        )

    def on_epoch_end(self, epoch, logs=None):
        pop_label_errors(logs)
        errors = pop_label_errors(logs, "val_")
        raise_label_errors(
            errors, f"in the validation data at epoch {epoch + 1}", self.classes, self.unlabeled
        )

    def on_test_end(self, logs=None):
        pop_label_errors(logs)

    def on_train_end(self, logs=None):
        pop_label_errors(logs)
        pop_label_errors(logs, "val_")


def pop_label_errors(logs, prefix=""):
    """The label errors in `logs` (under `prefix`), taken out of it, without the prefix."""
    if logs is None:
        return {}
    keys = [key for key in logs if key.startswith(prefix + LABEL_ERRORS)]
    return {key[len(prefix) :]: logs.pop(key) for key in keys}


def raise_label_errors(errors, where, classes, unlabeled=True):
    """Raises a `ValueError` naming the labels `_task.LabelErrors` counted, if any."""
    count = float(errors.get(LABEL_ERRORS, 0.0))
    if count == 0:
        return
    low, high = errors[f"{LABEL_ERRORS}_low"], errors[f"{LABEL_ERRORS}_high"]
    shown = f"{low:g}" if low == high else f"from {low:g} to {high:g}"
    accepted = (
        "0 or 1 (or a probability between) for the model's one output"
        if classes == 1
        else f"class ids in [0, {classes}) for the model's {classes} classes"
    )
    if unlabeled:
        accepted += (
            f", or the integer tfkd.distill.UNLABELED ({UNLABELED}) for an example without a label"
        )
    raise ValueError(
        f"The labels must be {accepted} (padding in a label per position: the loss's "
        f"`ignore_class`). Received {where}: {count:.0f} label(s) outside them ({shown}). "
        "Labels from a dataset or generator are checked as they are trained on, numpy "
        "labels before training."
    )


class StudentCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` that saves a Distiller's student alone.

    Keras's `ModelCheckpoint` saves the model `fit` trains: for a `tfkd.Distiller`,
    the teacher and the distillation losses too. This saves `distiller.student`,
    the model to ship, with every `ModelCheckpoint` option (`monitor`,
    `save_best_only`, `save_weights_only`, `save_freq`). On a model that is not
    a Distiller it behaves exactly as `ModelCheckpoint`.

    Args:
        filepath: Where to save, as for `ModelCheckpoint` (`.keras`, or
            `.weights.h5` with `save_weights_only=True`).
        **kwargs: `ModelCheckpoint`'s other arguments.

    Example:

    ```python
    checkpoint = tfkd.distill.StudentCheckpoint(
        "student.keras", monitor="val_accuracy", save_best_only=True
    )
    distiller.fit(x, y, validation_data=(x_val, y_val), callbacks=[checkpoint])
    student = keras.saving.load_model("student.keras")
    ```
    """

    def __init__(self, filepath, *args, **kwargs):
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(
                "`filepath` must be a file path (str or os.PathLike), e.g. 'student.keras'. "
                f"Received: filepath={filepath!r} of type {type(filepath).__name__}."
            )
        signature = inspect.signature(keras.callbacks.ModelCheckpoint.__init__)
        mode = signature.bind(self, filepath, *args, **kwargs).arguments.get("mode", "auto")
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"`mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}. 'auto' "
                "picks 'max' for accuracies and 'min' for losses."
            )
        super().__init__(filepath, *args, **kwargs)

    def set_model(self, model):
        self._trained = model
        super().set_model(getattr(model, "student", model))

    def _set_monitor_op(self):
        # `mode="auto"` reads whether the monitored metric goes up from the compiled
        # metrics of the model Keras holds: the student, never compiled, has none, so
        # `monitor="val_accuracy"` raised Keras's "pass mode='max'". Read the Distiller's.
        student = self.model
        super().set_model(getattr(self, "_trained", student))
        try:
            super()._set_monitor_op()
        finally:
            super().set_model(student)
