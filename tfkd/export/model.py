"""`TFLiteModel`: runs an exported `.tflite` file on numpy data and measures it."""

import os
import statistics
import time

import numpy as np

from tfkd.export.report import load_interpreter


class TFLiteModel:
    """A `.tflite` file run by the LiteRT interpreter, with a Keras-like interface.

    Quantized inputs and outputs are handled here: float inputs are quantized with the
    file's scale and zero point, and integer outputs dequantized, so `predict` takes
    and returns what the Keras model did. Batches of any size are run by resizing the
    input tensor.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads, or `None` for LiteRT's default. Defaults to `None`.

    Attributes:
        xnnpack: whether LiteRT's default XNNPACK delegate runs the file; `False` when
            it rejected a layer and the builtin kernels run it instead.

    Example:

    >>> lite = tfkd.TFLiteModel("model.tflite")
    >>> lite.evaluate(x_test, y_test)["accuracy"] > 0.8
    True
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at `path`. Received: path={path!r}.")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(
                f"`num_threads` must be a positive integer or None. Received: {num_threads!r}."
            )
        self.path = path
        self.num_threads = num_threads
        self._interpreter, self.xnnpack = load_interpreter(path, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        if len(self._interpreter.get_input_details()) != 1:
            raise ValueError(
                "TFLiteModel runs single-input models. Received a file with "
                f"{len(self._interpreter.get_input_details())} inputs: {path!r}."
            )
        self._batch = None

    @property
    def bytes(self):
        return os.path.getsize(self.path)

    @property
    def input_dtype(self):
        return np.dtype(self._input["dtype"]).name

    def predict(self, x, batch_size=256):
        """Runs the model on `x` in batches; returns float outputs."""
        x = np.asarray(x)
        outputs = [
            self._run(x[start : start + batch_size]) for start in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs)

    def evaluate(self, x, y, batch_size=256, from_logits=None):
        """Top-1 accuracy and cross-entropy of the file on `(x, y)` with integer labels.

        `from_logits=None` treats outputs as probabilities when every row sums to 1.
        """
        outputs = self.predict(x, batch_size=batch_size).astype(np.float64)
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if from_logits is None:
            from_logits = not np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3)
        if from_logits:
            shifted = outputs - outputs.max(axis=-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        else:
            log_probs = np.log(np.clip(outputs, 1e-7, 1.0))
        return {
            "accuracy": float(np.mean(outputs.argmax(axis=-1) == y)),
            "loss": float(-np.mean(log_probs[np.arange(len(y)), y])),
        }

    def benchmark(self, num_runs=200, warmup_runs=20, sample=None):
        """Latency of one inference (batch 1) in milliseconds: median, mean, p90."""
        shape = [1, *self._input["shape_signature"][1:]]
        if sample is None:
            sample = np.zeros(shape, self._input["dtype"])
        sample = self._quantize(np.asarray(sample).reshape(shape))
        self._resize(1)
        timings = []
        for run in range(warmup_runs + num_runs):
            start = time.perf_counter()
            self._interpreter.set_tensor(self._input["index"], sample)
            self._interpreter.invoke()
            self._interpreter.get_tensor(self._output["index"])
            if run >= warmup_runs:
                timings.append((time.perf_counter() - start) * 1000.0)
        return {
            "median_ms": statistics.median(timings),
            "mean_ms": statistics.fmean(timings),
            "p90_ms": float(np.percentile(timings, 90)),
            "num_threads": self.num_threads,
            "num_runs": num_runs,
        }

    def compare(self, keras_model, x, batch_size=256):
        """Agreement with `keras_model` on `x`: top-1 agreement and max absolute difference."""
        expected = np.asarray(keras_model.predict(x, batch_size=batch_size, verbose=0))
        received = self.predict(x, batch_size=batch_size)
        return {
            "top1_agreement": float(np.mean(expected.argmax(-1) == received.argmax(-1))),
            "max_abs_diff": float(np.max(np.abs(expected - received))),
        }

    def _run(self, batch):
        self._resize(len(batch))
        self._interpreter.set_tensor(self._input["index"], self._quantize(batch))
        self._interpreter.invoke()
        return self._dequantize(self._interpreter.get_tensor(self._output["index"]))

    def _resize(self, batch):
        if batch != self._batch:
            shape = [batch, *self._input["shape_signature"][1:]]
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
            self._batch = batch

    def _quantize(self, x):
        return quantize_input(x, self._input)

    def _dequantize(self, y):
        return dequantize_output(y, self._output)

    def __repr__(self):
        return f"TFLiteModel({self.path!r}, bytes={self.bytes}, input_dtype={self.input_dtype!r})"


def quantize_input(x, details):
    """Float `x` in the dtype of an interpreter input, quantized if that input is integer."""
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if dtype.kind == "f" or scale == 0:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_output(y, details):
    """An interpreter output as float32, dequantized if it is integer."""
    scale, zero_point = details["quantization"]
    if np.dtype(y.dtype).kind == "f" or scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
