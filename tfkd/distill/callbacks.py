"""Callbacks that `tfkd` adds to training by itself."""

import math

import keras


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training with an error naming the loss components that are NaN/inf.

    `Distiller.fit` adds it by itself.

    Args:
        loss_names: Log keys to watch, in the order they are reported.
    """

    # Checked on Keras's callback thread, so the training loop never waits for
    # the device to report the loss; an error surfaces a batch or two later.
    async_safe = True

    def __init__(self, loss_names):
        super().__init__()
        self.loss_names = list(loss_names)
        self._epoch = 0

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
            raise FloatingPointError(
                f"Training stopped at epoch {self._epoch + 1}, batch {batch + 1}: non-finite "
                f"loss component(s) {sorted(bad)}. Received: {bad}. Check the inputs for "
                "NaN/inf, lower the learning rate, or lower the weight of that component."
            )
