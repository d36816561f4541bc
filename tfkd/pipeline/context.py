"""`Context`: what a running stage sees: data, earlier models, and the training helpers."""

import os
import sys

import keras
import numpy as np

from tfkd import _graph, models
from tfkd.distill.callbacks import NonFiniteLossGuard

QUICK_EPOCHS = 1


class Context:
    """Handed to `Stage.run`: the data, earlier stages' models, and how to train.

    Attributes:
        data: the pipeline's `tfkd.pipeline.Data`.
        directory: this stage's output directory (e.g. where `export` writes).
        quick: `True` in a smoke run (`--quick`): `epochs()` gives one epoch.
        seed: the pipeline's seed.
    """

    def __init__(self, data, runner, *, quick=False, seed=0, tensorboard=True, verbose="auto"):
        self.data = data
        self.quick = quick
        self.seed = seed
        self.tensorboard = tensorboard
        self.verbose = verbose
        self.directory = None
        self.log_directory = None
        self._runner = runner

    def model(self, name):
        """The model an earlier stage returned."""
        return self._runner.model(name)

    def teacher_outputs(self, name, inputs=None, inputs_key="train"):
        """`{"output": logits}` of stage `name`'s model on `inputs` (the training inputs by
        default), computed once per run directory and cached under `inputs_key`, which
        must identify the inputs. This is offline distillation: valid for inputs that
        are fixed, not augmented anew at every epoch."""
        return self._runner.teacher_outputs(name, inputs, inputs_key)

    def log(self, message):
        """Writes a line to the pipeline's log, under the running stage's."""
        self._runner.log(f"    {message}")

    def run_stage(self, stage, model):
        """Runs a child stage (for pipelines within pipelines); returns its model."""
        return self._runner.run_stage(stage, model)

    def epochs(self, epochs):
        return min(epochs, QUICK_EPOCHS) if self.quick else epochs

    def copy_model(self, model):
        """A new model with `model`'s architecture and weights, uncompiled; a Sequential
        model that was never built is built for the data's inputs."""
        return _graph.copy_model(model, self.data.input_shape)

    def compile(self, model, learning_rate, from_logits=True):
        """Adam (`learning_rate`: a float or a schedule), sparse categorical cross-entropy
        and accuracy, as every built-in stage trains."""
        return models.compile_classifier(model, learning_rate, from_logits)

    def fit(self, model, x=None, y=None, *, epochs, batch_size=128, loss_names=("loss",)):
        """`model.fit` on the labelled training examples (or `x`, `y`) with TensorBoard
        logs, progress bars, and an error (not a silent stop) on a NaN or infinite loss."""
        if x is None and y is None:
            x, y = self.data.labelled()
        x = self.data.x_train if x is None else x
        y = self.data.y_train if y is None else y
        keras.utils.set_random_seed(self.seed)
        return model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=self.epochs(epochs),
            callbacks=self.callbacks(loss_names),
            verbose=self.keras_verbose(),
        )

    def callbacks(self, loss_names=("loss",)):
        callbacks = [NonFiniteLossGuard(loss_names)]
        if self.tensorboard and self.log_directory is not None:
            callbacks.append(keras.callbacks.TensorBoard(os.fspath(self.log_directory)))
        return callbacks

    def keras_verbose(self):
        """Progress bars on a terminal, one line per epoch in a log file."""
        if self.verbose != "auto":
            return self.verbose
        return 1 if sys.stdout.isatty() else 2

    def predict(self, model, x, batch_size=256):
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
