"""`TFLiteModel`: runs an exported `.tflite` file on numpy data and measures it."""

import os
import statistics

import numpy as np

from tfkd import _checks, _timing, metrics
from tfkd.export._interpreter import (
    Runner,
    UnsafeFileError,
    dequantize_output,
    holds_ids,
    quantize_input,
    softmax_outputs,
    top1_agreement,
)
from tfkd.export._model_inputs import (
    by_input,
    check_array,
    check_labels,
    fit_rank,
    one_example,
)

# As Keras's cross-entropy on probabilities: rows renormalised, then clipped.
_EPSILON = 1e-7


class TFLiteModel:
    """A `.tflite` file run by the LiteRT interpreter, with a Keras-like interface.

    Quantized inputs and outputs are handled here: float inputs are quantized with the
    file's scale and zero point, and integer outputs dequantized, so `predict` takes
    and returns what the Keras model did. Inputs of the file's own integer dtype (int8
    arrays for an int8 input) are taken as quantized already and passed as they are;
    integers of another dtype (uint8 images for an int8 input) are values, as floats
    are, and quantized. Batches of any size are run by resizing the
    input tensor. Files with several outputs give a list of arrays, in the order of the
    Keras model's outputs. Files with several inputs take a dict from input name
    (`input_names`: `tfkd.export_tflite` names them after the Keras model's inputs) to
    array; `compare` also takes a list in the Keras model's input order.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads, or `None` for LiteRT's default. Defaults to `None`.

    Attributes:
        xnnpack: whether LiteRT's default XNNPACK delegate runs the file; `False` when
            it cannot (integer kernels in the sparse format) and the builtin kernels run
            it instead.

    Raises:
        TypeError: `path` is not a path, or `num_threads` not an integer.
        FileNotFoundError: there is no file at `path`.
        ValueError: the file is no `.tflite` model LiteRT can load safely (a tensor of
            rank over 8, or one that would take over 1 GiB without data in the file, an op
            reading a tensor the file does not have...), or `num_threads` < 1.

    Example:

    ```python
    lite = tfkd.TFLiteModel("model.tflite")
    lite.evaluate(x_test, y_test)["accuracy"] > 0.8  # True
    ```
    """

    def __init__(self, path, num_threads=None):
        if not isinstance(path, str | os.PathLike):
            raise TypeError(
                "`path` must be the path of a .tflite file. "
                f"Received: path={path!r} of type {type(path).__name__}."
            )
        path = os.fspath(path)
        num_threads = _check_num_threads(num_threads)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at `path`. Received: path={path!r}.")
        self.path = path
        self.num_threads = num_threads
        try:
            self._runner = Runner(path, num_threads=num_threads)
        except UnsafeFileError:  # its message names the file already
            raise
        except (ValueError, RuntimeError) as error:  # LiteRT's own words, without the path
            raise ValueError(
                f"`path` is not a .tflite (LiteRT) model file tfkd can run: "
                f"{str(error).strip().rstrip('.')}. Received: "
                f"path={path!r} ({os.path.getsize(path)} bytes). Write it with "
                "`tfkd.export_tflite`."
            ) from error
        if not self._runner.inputs or not self._runner.outputs:  # before: an IndexError
            raise ValueError(
                f"`path` is a .tflite file with {len(self._runner.inputs)} inputs and "
                f"{len(self._runner.outputs)} outputs; a model needs one or more of each. "
                f"Received: path={path!r}. Write it with `tfkd.export_tflite`."
            )
        self._input = self._runner.inputs[0]

    @property
    def xnnpack(self):
        return self._runner.xnnpack

    @property
    def bytes(self):
        return os.path.getsize(self.path)

    @property
    def input_names(self):
        """The file's input names, in its order."""
        return [details["name"] for details in self._runner.inputs]

    @property
    def input_dtype(self):
        """The input's dtype name; a list, in `input_names` order, for several inputs."""
        dtypes = [np.dtype(details["dtype"]).name for details in self._runner.inputs]
        return dtypes[0] if len(dtypes) == 1 else dtypes

    @property
    def num_outputs(self):
        return len(self._runner.outputs)

    def predict(self, x, batch_size=256, verbose=0):
        """Runs the model on `x` in batches.

        Args:
            x: inputs, shaped as the file's input (a missing channel axis is added).
                For a file with a quantized integer input, `x` of its dtype is taken as
                quantized already; anything else is quantized with its scale and zero
                point (see the class docstring). For a file with several inputs, a dict
                from each name of `input_names` to its array.
            batch_size: samples per interpreter call. Defaults to `256`.
            verbose: `1` shows a progress bar, `2` one line at the end, `0` nothing
                (as Keras's `predict`). Defaults to `0`.

        Returns:
            The float outputs: one array, or a list with one array per output for files
            with several outputs.

        Raises:
            TypeError: `x` is not numbers (an array of objects or strings), or not a
                dict for a file with several inputs.
            ValueError: `x` holds NaN or infinite values, or values too large for the
                file's float input; for several inputs, names that are not the file's,
                or arrays of unlike lengths.
        """
        _checks.check_number("batch_size", batch_size, low=1, integer=True)
        return self._run_in_batches(self._arrays(x), batch_size, verbose)

    def _run_in_batches(self, arrays, batch_size, verbose):
        """`predict` on `arrays` checked already (`_arrays`)."""
        count = len(arrays[0])
        progress = progress_bar(count, verbose)
        batches = []
        for start in range(0, count, batch_size):
            batch = [array[start : start + batch_size] for array in arrays]
            batches.append(self._runner.run(batch if len(batch) > 1 else batch[0]))
            if progress is not None:
                progress.update(min(start + batch_size, count))
        outputs = [np.concatenate(parts) for parts in zip(*batches, strict=True)]
        return outputs[0] if len(outputs) == 1 else outputs

    def evaluate(self, x, y, batch_size=256, from_logits=None, class_names=None, verbose=0):
        """Accuracy, cross-entropy and per-class results of the file on `(x, y)`.

        Args:
            x: inputs, as for `predict`.
            y: integer class labels, one per sample of `x`.
            batch_size: samples per interpreter call. Defaults to `256`.
            from_logits: whether the outputs are logits. `None` reads it from the file:
                probabilities when a softmax computes the output (also an int8 one, whose
                dequantized rows sum to 1 only roughly), or when every row sums to 1.
                Defaults to `None`.
            class_names: a name per class (output), for `classification`. Defaults
                to `None` (`"0"`, `"1"`, ...).
            verbose: progress, as for `predict`. Defaults to `0`.

        Returns:
            `{"accuracy": ..., "loss": ..., "classification": ...}`: top-1 accuracy,
            the loss computed as Keras's sparse categorical cross-entropy, and
            `tfkd.metrics.classification_report` of the predictions (precision,
            recall and F1 per class, their averages, the confusion matrix).

        Raises:
            ValueError: `y` does not hold one integer label per sample, the file has
                several outputs, `x` holds NaN or infinite values (as for `predict`), or
                the file computes NaN or infinite outputs (their argmax would score).
        """
        if self.num_outputs != 1:
            raise ValueError(
                "`evaluate` scores a classifier with one output. Received: a file with "
                f"{self.num_outputs} outputs: {self.path!r}. Call `predict(x)`, which returns "
                "one array per output, and score the outputs you need."
            )
        arrays = self._arrays(x)  # checked once, before the file's outputs are
        count = len(arrays[0])
        if from_logits is not None:
            from_logits = _checks.check_flag("from_logits", from_logits)
        output = self._runner.outputs[0]
        if len(output["shape_signature"]) < 2 or holds_ids(output):
            raise ValueError(
                "`evaluate` scores a classifier with one score per class, and this file "
                f"outputs one value per example (class ids, or one score?): {self.path!r}. "
                "Call `predict(x)` and compare its output with the labels."
            )
        if int(output["shape_signature"][-1]) == 1:
            raise ValueError(
                "`evaluate` scores a classifier with one score per class, and this file has "
                f"one output unit (a binary classifier's logit or sigmoid?): {self.path!r}. "
                "Call `predict(x)` and threshold its output."
            )
        labels = check_labels(y, count)
        _checks.check_number("batch_size", batch_size, low=1, integer=True)
        outputs = self._run_in_batches(arrays, batch_size, verbose).astype(np.float64)
        self._check_finite_outputs(outputs, 0)
        if from_logits is None:
            from_logits = not (softmax_outputs(self.path)[0] or _sums_to_one(outputs))
        log_probabilities = _log_probabilities(outputs, from_logits)
        classification = metrics.classification_report(
            labels, outputs.argmax(axis=-1), outputs.shape[-1], class_names
        )
        return {
            "accuracy": classification["accuracy"],
            "loss": float(-np.mean(log_probabilities[np.arange(len(labels)), labels])),
            "classification": classification,
        }

    def benchmark(self, num_runs=200, warmup_runs=20, sample=None):
        """Latency of one inference (batch 1) in milliseconds: median, mean, p90.

        `sample`: the example to time (its batch axis optional; for several inputs, a
        dict as `predict` takes); zeros of the input's shape when `None`, which needs an
        input without open sizes.

        Raises:
            TypeError, ValueError: unless `num_runs` is an int >= 1 and `warmup_runs`
                an int >= 0.
        """
        _checks.check_number("num_runs", num_runs, low=1, integer=True)
        _checks.check_number("warmup_runs", warmup_runs, low=0, integer=True)
        inputs = self._runner.inputs
        if len(inputs) == 1:
            samples = [one_example(self._input, sample, "sample")]
        elif sample is None:
            samples = [one_example(details, None, "sample") for details in inputs]
        else:
            examples = by_input(sample, self.input_names, "sample")
            samples = [one_example(d, a, "sample") for d, a in zip(inputs, examples)]
        self._runner.run(samples if len(samples) > 1 else samples[0])  # settles the interpreter
        quantized = [quantize_input(a, details) for a, details in zip(samples, inputs)]
        interpreter = self._runner.interpreter

        def one_inference():
            for details, array in zip(inputs, quantized):
                interpreter.set_tensor(details["index"], array)
            interpreter.invoke()
            for details in self._runner.outputs:
                interpreter.get_tensor(details["index"])

        timings = _timing.milliseconds(one_inference, num_runs, warmup_runs)
        return {
            "median_ms": statistics.median(timings),
            "mean_ms": statistics.fmean(timings),
            "p90_ms": float(np.percentile(timings, 90)),
            "num_threads": self.num_threads,
            "num_runs": num_runs,
        }

    def compare(self, keras_model, x, batch_size=256):
        """Agreement with `keras_model` on `x`: top-1 agreement and max absolute difference.

        For several outputs, the lowest agreement and largest difference over them. For
        one score per example (a binary classifier), agreement is on its side of 0.5
        after a sigmoid, of 0 after none (a logit); for class ids (integer outputs), on
        the ids. `x` of the file's integer input dtype is quantized already
        (as `predict` takes it): the Keras model gets its values, dequantized. For
        several inputs, `x` is a dict as `predict` takes, or a list in the order of
        `keras_model.inputs`.
        """
        import keras

        from tfkd.export._keras_check import score_activation

        values = x
        if len(self._runner.inputs) > 1:
            x, values = self._for_file_and_keras(keras_model, x)
        elif isinstance(x, np.ndarray) and x.dtype == np.dtype(self._input["dtype"]):
            values = dequantize_output(x, self._input)
        expected = keras.tree.flatten(keras_model.predict(values, batch_size=batch_size, verbose=0))
        received = self.predict(x, batch_size=batch_size)
        received = received if isinstance(received, list) else [received]
        if len(expected) != len(received):
            raise ValueError(
                f"The Keras model has {len(expected)} outputs and the file {len(received)}. "
                f"Received: keras_model={keras_model.name!r}, file {self.path!r}."
            )
        pairs = [(np.asarray(a), b) for a, b in zip(expected, received, strict=True)]
        activation = score_activation(keras_model, len(pairs))
        for index, (ours, theirs) in enumerate(pairs):
            if ours.shape != theirs.shape:
                raise ValueError(
                    f"Output {index} of the Keras model and of the file differ in shape: "
                    f"{ours.shape} and {theirs.shape}. Received: keras_model="
                    f"{keras_model.name!r}, file {self.path!r}: compare the model the file was "
                    "exported from."
                )
            # NaN outputs agree on their argmax (0): they would read as full agreement.
            _checks.check_finite_array(f"keras_model's output {index}", ours)
            self._check_finite_outputs(theirs, index)
        return {
            "top1_agreement": min(top1_agreement(a, b, activation) for a, b in pairs),
            "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in pairs),
        }

    def _check_finite_outputs(self, outputs, index):
        """Raises where the file's output `index` holds NaN or infinite values: their
        argmax (0) would score as a prediction, or agree with the Keras model's."""
        finite = np.isfinite(outputs)
        if not finite.all():
            raise ValueError(
                f"The file computes {int(np.sum(~finite))} NaN or infinite values (of "
                f"{outputs.size}) in its output {index} on these finite inputs, which no "
                f"score can count: {self.path!r}. Check it with `predict(x)`, and export the "
                "model again (`tfkd.export_tflite` checks the file against Keras)."
            )

    def _arrays(self, x):
        """`x` as one checked array per input, in the file's order."""
        inputs = self._runner.inputs
        if len(inputs) == 1:
            if isinstance(x, dict) and list(x) == self.input_names:  # by its one name
                x = x[self.input_names[0]]
            check_array(x)
            # NaN inputs give NaN outputs whose argmax (0) scores as a prediction.
            return [self._fit_rank(_checks.check_finite_array("x", x, self._input["dtype"]))]
        arrays = []
        for details, value in zip(inputs, by_input(x, self.input_names, "x")):
            check_array(value)
            array = _checks.check_finite_array(f"x[{details['name']!r}]", value, details["dtype"])
            arrays.append(self._fit_rank(array, details))
        if len({len(array) for array in arrays}) != 1:
            lengths = {details["name"]: len(a) for details, a in zip(inputs, arrays)}
            raise ValueError(
                "`x` must hold as many examples for every input. Received: x with "
                f"lengths {lengths}."
            )
        return arrays

    def _for_file_and_keras(self, keras_model, x):
        """`x` for a file with several inputs, as the file takes it (a dict by
        `input_names`) and as `keras_model` does (a list in the order of its inputs, or
        the dict it was built on, each dequantized where it is of that input's integer
        dtype in the file). The file's inputs are matched to the model's by name where the
        names are the same (tfkd's exports), else by position (a subclassed model's, names
        TensorFlow did not keep)."""
        from tfkd.export._signature import call_structure

        keras_names = [tensor.name for tensor in getattr(keras_model, "inputs", None) or []]
        inputs = {details["name"]: details for details in self._runner.inputs}
        if sorted(keras_names) == sorted(inputs):
            in_keras_order = [inputs[name] for name in keras_names]
        else:
            in_keras_order = list(self._runner.inputs)
        if isinstance(x, dict):
            by_input(x, self.input_names, "x")  # the file's names, each once
            arrays = [x[details["name"]] for details in in_keras_order]
        elif isinstance(x, list | tuple) and len(x) == len(inputs):
            arrays = list(x)
        else:
            raise ValueError(
                f"`x` must be a dict from input name ({self.input_names}) to array, or a list "
                f"of {len(inputs)} arrays in the order of the Keras model's inputs. Received: "
                f"x of type {type(x).__name__}"
                + (f" with {len(x)} arrays." if isinstance(x, list | tuple) else ".")
            )
        for_file = {details["name"]: array for details, array in zip(in_keras_order, arrays)}
        for_keras = [
            dequantize_output(array, details)
            if isinstance(array, np.ndarray) and array.dtype == np.dtype(details["dtype"])
            else array
            for details, array in zip(in_keras_order, arrays)
        ]
        return for_file, call_structure(keras_model, for_keras)

    def _fit_rank(self, x, details=None):
        return fit_rank(x, details or self._input)

    def __repr__(self):
        return f"TFLiteModel({self.path!r}, bytes={self.bytes}, input_dtype={self.input_dtype!r})"


def _check_num_threads(num_threads):
    """`num_threads` as an int (numpy integers too), or None."""
    return _checks.check_number("num_threads", num_threads, low=1, integer=True, allow_none=True)


def check_verbose(verbose):
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2 (as Keras's). Received: verbose={verbose!r}")


def progress_bar(total, verbose):
    """A Keras progress bar over `total` samples, or None for `verbose=0` (the one helper
    of `TFLiteModel.predict`, `evaluate` and `export_tflite`'s calibration)."""
    check_verbose(verbose)
    if not verbose or not total:
        return None
    import keras

    return keras.utils.Progbar(total, verbose=verbose, unit_name="sample")


def _sums_to_one(outputs):
    rows = outputs.sum(axis=-1)
    return bool(np.all(outputs >= 0) and np.allclose(rows, 1.0, atol=1e-3))


def _log_probabilities(outputs, from_logits):
    if from_logits:
        shifted = outputs - outputs.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    probabilities = outputs / outputs.sum(axis=-1, keepdims=True)
    return np.log(np.clip(probabilities, _EPSILON, 1.0 - _EPSILON))
