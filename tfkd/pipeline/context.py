"""`Context`: what a running stage sees: data, earlier models, and the training helpers."""

import dataclasses
import os
import sys

import keras
import numpy as np

from tfkd import _checks, _graph, models
from tfkd.distill.callbacks import NonFiniteLossGuard
from tfkd.pipeline import _processes

QUICK_EPOCHS = 1


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options of one `Pipeline.execute`, the same for every stage."""

    quick: bool = False
    seed: int = 0
    tensorboard: bool = True
    verbose: object = "auto"


def keras_verbose(verbose):
    """Keras's `verbose` for the pipeline's: `"auto"` gives progress bars on a terminal and
    one line per epoch (or per prediction pass) in a log file."""
    if verbose != "auto":
        return verbose
    return 1 if sys.stdout.isatty() else 2


class Context:
    """Handed to `Stage.run`: the data, earlier stages' models, and how to train.

    Each stage gets a context of its own, made for it; its attributes are read-only.

    Attributes:
        data: the pipeline's `tfkd.pipeline.Data`.
        directory: this stage's output directory (e.g. where `export` writes); `None`
            for a nested pipeline, which writes nothing itself.
        log_directory: where this stage's TensorBoard logs go, or `None`.
        quick: `True` in a smoke run (`--quick`): `epochs()` gives one epoch.
        seed: the pipeline's seed.
        tensorboard: whether `fit` writes TensorBoard logs.
        verbose: Keras's `verbose` for training, or `"auto"`.
    """

    __slots__ = ("_engine", "_options", "_data", "_directory", "_log_directory")

    def __init__(self, engine, options, data, directory=None, log_directory=None):
        self._engine = engine
        self._options = options
        self._data = data
        self._directory = directory
        self._log_directory = log_directory

    data = property(lambda self: self._data)
    directory = property(lambda self: self._directory)
    log_directory = property(lambda self: self._log_directory)
    quick = property(lambda self: self._options.quick)
    seed = property(lambda self: self._options.seed)
    tensorboard = property(lambda self: self._options.tensorboard)
    verbose = property(lambda self: self._options.verbose)

    def model(self, name):
        """The model an earlier stage returned."""
        return self._engine.model(name)

    def teacher_outputs(self, name, inputs=None, inputs_key="train"):
        """`{"output": logits}` of stage `name`'s model on `inputs` (the training inputs by
        default), computed once per run directory and cached under `inputs_key`, which
        must identify the inputs. This is offline distillation: valid for inputs that
        are fixed, not augmented anew at every epoch."""
        return self._engine.teacher_outputs(name, inputs, inputs_key)

    def propagated_labels(self, name, neighbours=10, alpha=0.9):
        """The training labels spread along a graph of stage `name`'s features (the input
        of its last Dense layer) by `tfkd.distill.LabelGraph`, computed once per run
        directory and cached: `(probabilities, held_out)`, class probabilities for every
        training example, and for each labelled one the class propagated to it from
        the labels of the other folds (`held_out_labels`, 5 folds; `UNLABELED` for the
        others): how often that is its label estimates how often the propagation is
        right on the unlabelled examples."""
        return self._engine.propagated_labels(name, neighbours, alpha)

    def log(self, message):
        """Writes a line to the pipeline's log, under the running stage's."""
        self._engine.log(f"    {message}")

    def run_stage(self, stage, model):
        """Runs a child stage (for pipelines within pipelines); returns its model."""
        return self._engine.run_stage(stage, model)

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
        _checks.check_fit_strategy(model)
        keras.utils.set_random_seed(self.seed)
        x, y, batch_size = self.share(x, y, batch_size)
        return model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=self.epochs(epochs),
            callbacks=self.callbacks(loss_names),
            verbose=self.keras_verbose(),
        )

    def share(self, x, y, batch_size):
        """`x`, `y` and `batch_size` as this process feeds them to `fit`: all of them when
        it runs alone; on several processes, its rows and its share of each batch."""
        processes = _processes.current()
        if processes is None:
            return x, y, batch_size
        return *processes.shard((x, y)), processes.local_batch_size(batch_size)

    def callbacks(self, loss_names=("loss",)):
        callbacks = [NonFiniteLossGuard(loss_names)]
        if self.tensorboard and self.log_directory is not None:
            callbacks.append(keras.callbacks.TensorBoard(os.fspath(self.log_directory)))
        return callbacks

    def keras_verbose(self):
        """Progress bars on a terminal, one line per epoch in a log file."""
        return keras_verbose(self.verbose)

    def predict(self, model, x, batch_size=256):
        if _processes.current() is None or self._engine._local:
            return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
        # `predict` would gather outputs spread over the processes; every process calls
        # the model on every batch instead, and gets all the outputs.
        outputs = [
            keras.ops.convert_to_numpy(model(x[start : start + batch_size], training=False))
            for start in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs)
