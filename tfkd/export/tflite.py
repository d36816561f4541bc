"""`export_tflite`: Keras model -> `.tflite` file, in every quantization mode the converter has."""

import numbers
import os
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from tfkd import _atomic, _graph, _kernels
from tfkd._checks import (
    check_finite_weights,
    check_flag,
    check_float32_compute,
    check_output_file,
)
from tfkd._export_options import IO_DTYPES as _IO_DTYPES
from tfkd._export_options import PER_TENSOR_QUANTIZATIONS, QUANTIZATIONS, dtype_name
from tfkd.export import _representative, _signature
from tfkd.export._keras_check import CHECK_SAMPLES, check_against_keras, keras_outputs
from tfkd.export.model import check_verbose
from tfkd.export.report import ExportReport
from tfkd.quantize.qat import is_quantized, untrained_quantizers

_SPARSITY = ("auto", True, False)
# The packages whose classes the conversion subprocess imports when it loads a model.
_RELOADABLE = ("keras", "tfkd")
# The converter's sparse encoding pays off from about this fraction of zeros.
_AUTO_SPARSITY = 0.5


def export_tflite(
    model,
    path,
    quantization=None,
    representative_data=None,
    *,
    io_dtype="float32",
    sparsity="auto",
    select_tf_ops=False,
    calibration_samples=500,
    per_channel=True,
    verbose=0,
):
    """Converts `model` to a TFLite (LiteRT) flatbuffer at `path` and reports what it holds.

    Pruning wrappers are stripped first. The file is written atomically: a crash leaves
    either the old file or the new one, never half of one. Works from any Keras backend;
    off TensorFlow the conversion runs in a TensorFlow subprocess.

    Args:
        model: a Keras model: functional, Sequential or subclassed, with a known input
            shape (`keras.Input`, or called once on a batch). A model never called is
            built on the first batch of `representative_data`. To export what a
            `tfkd.Distiller` trained, pass `distiller.student`. Off the TensorFlow
            backend, subclassed models, layers of your own and Lambda layers need the
            TensorFlow backend to export (the subprocess cannot import their class, and
            does not load a Python lambda).
        path: where to write the `.tflite` file.
        quantization: `None` (float32), `"dynamic"` (int8 weights, float activations),
            `"float16"` (float16 weights), `"int8"` (full integer, calibrated) or
            `"int16x8"` (int16 activations, int8 weights, calibrated). Defaults to `None`.
        representative_data: calibration inputs for `"int8"` and `"int16x8"`: a numpy
            array (or list/dict of arrays), a `tf.data.Dataset` of inputs or of
            `(inputs, targets)` batches, or an iterable of them. They are cast to the
            dtype of the model's inputs, as Keras casts them: uint8 images calibrate a
            float32 model. A quantization-aware model (`tfkd.quantize.quantize_aware`)
            needs none: its trained ranges are used, and these inputs only feed the
            check against Keras. Defaults to `None`.
        io_dtype: dtype of the model's inputs and outputs: `"float32"`, or `"int8"` /
            `"uint8"` for `"int8"` and `"int16"` for `"int16x8"`. Defaults to `"float32"`.
        sparsity: `True` to store kernels in the converter's sparse format, `False` not
            to. `"auto"` does it for float32 and float16 files when at least half of a
            prunable kernel's weights are zero. Sparse integer files are smaller still,
            but LiteRT's default XNNPACK delegate rejects their sparse layers, so they run
            on the slower builtin kernels (`TFLiteModel` falls back by itself).
            Defaults to `"auto"`.
        select_tf_ops: allow TensorFlow ops that have no builtin TFLite kernel (the file
            then needs the Flex delegate). Defaults to `False`.
        calibration_samples: at most this many samples of `representative_data` are used.
            Defaults to `500`.
        per_channel: `True` gives each output channel of a convolution or Dense kernel
            its own int8 scale (the converter's default); `False` gives each kernel one
            scale, so a model clustered per layer (`tfkd.cluster`, `per_channel=False`)
            keeps at most `clusters` distinct int8 values in each kernel: smaller once
            compressed, and ready for look-up-table storage, at some accuracy cost where
            the channels' ranges differ. Not for a kernel followed by BatchNormalization:
            the converter folds it in, a factor per channel, and only per-channel scales
            keep the kernel to `clusters` values per channel. For `"dynamic"` and
            `"int8"` from the float model (a quantization-aware model keeps the scales
            it trained).
            Defaults to `True`.
        verbose: `1` or `2` print each step (conversion, the calibration's progress,
            the check against Keras) with its seconds, as Keras's `verbose`; `0` nothing.
            Defaults to `0`.

    Returns:
        An `ExportReport`: bytes, op counts by type and dtype, ops left in float.

    Raises:
        TypeError: `model` is not a Keras model (or is a `Distiller`), `path` not a path,
            or the calibration data not numbers (objects, strings).
        ValueError: a bad quantization, io_dtype, `path` (a directory) or calibration data
            (missing, empty, misshapen, not finite, or too large for the model's input
            dtype), a model with NaN or infinite weights (or quantization ranges), off
            TensorFlow a model with a Lambda layer wrapping a Python lambda, a model
            with no input shape and no data to build it on, a conversion that fails
            (the message names the op), or NaN or infinite outputs of the Keras model or
            the file on the samples they are checked on.

    Example:

    ```python
    report = tfkd.export_tflite(model, "model.tflite", quantization="int8",
                                representative_data=x_train[:200])
    report.float_ops  # []
    ```
    """
    io_dtype = dtype_name(io_dtype)
    _validate(model, quantization, representative_data, io_dtype, sparsity, select_tf_ops)
    _check_per_channel(model, per_channel, quantization)
    path = check_output_file(path)
    if isinstance(calibration_samples, bool) or not isinstance(
        calibration_samples, numbers.Integral
    ):
        raise TypeError(
            "`calibration_samples` must be an int >= 1. Received: "
            f"calibration_samples={calibration_samples!r}."
        )
    if calibration_samples < 1:
        raise ValueError(
            "`calibration_samples` must be an int >= 1. Received: "
            f"calibration_samples={calibration_samples}."
        )
    check_verbose(verbose)
    # Built first (a Sequential never called, on its data), so that the strip has weights.
    inputs, samples = _inputs_and_samples(model, representative_data, calibration_samples)
    model = _graph.strip_if_wrapped(model)
    use_sparsity = _want_sparsity(model, sparsity, quantization)
    options = dict(
        quantization=quantization,
        io_dtype=io_dtype,
        sparsity=use_sparsity,
        select_tf_ops=select_tf_ops,
        per_channel=bool(per_channel),
    )
    step = _steps(verbose)
    # Before the conversion: the converter calibrates on inputs Keras computes NaN from.
    checked = keras_outputs(model, inputs, samples)
    step(f"Converting {model.name!r} to .tflite ({quantization or 'float32'})")
    if keras.backend.backend() == "tensorflow":
        from tfkd.export import _convert

        content = _convert.convert(model, samples, **options, verbose=verbose)
    else:
        content = _convert_in_subprocess(model, samples, options)
    step(f"Converted: {len(content):,} bytes. Checking the file against the Keras model")
    agreement = check_against_keras(
        checked, inputs, content, quantization, quantization_aware=is_quantized(model)
    )
    step(f"Checked: top-1 agreement with Keras {agreement['top1_agreement']:.3f}. Writing {path}")
    _atomic.write_bytes(path, content)
    step("Written")
    report = ExportReport.from_file(path, quantization=quantization)
    report.keras_agreement = agreement
    return report


def float_with_signature(model, data=None):
    """The float32 `.tflite` bytes of `model` with a `serving_default` signature, checked
    against Keras as `export_tflite` checks its files (for `litert_quantize`). `data`:
    inputs, the first of which builds a model that was never called, and the first
    `CHECK_SAMPLES` of which the check runs on (stand-ins without them)."""
    _validate(model, None, data, "float32", False, False)
    inputs, samples = _inputs_and_samples(model, data, CHECK_SAMPLES)
    model = _graph.strip_if_wrapped(model)
    checked = keras_outputs(model, inputs, samples)
    options = dict(
        quantization=None, io_dtype="float32", sparsity=False, select_tf_ops=False, signature=True
    )
    if keras.backend.backend() == "tensorflow":
        from tfkd.export import _convert

        content = _convert.convert(model, None, **options)
    else:
        content = _convert_in_subprocess(model, None, options)
    check_against_keras(checked, inputs, content, None, quantization_aware=False)
    return content


def _steps(verbose):
    """`step(text)`: prints `text` with the seconds since the first step, when `verbose`."""
    start = time.perf_counter()

    def step(text):
        if verbose:
            print(f"[{time.perf_counter() - start:6.1f} s] {text}", flush=True)

    return step


def _inputs_and_samples(model, representative_data, limit):
    """The model's inputs, and the calibration samples cast to them (or `None`).

    A model that has no input shape yet (a Sequential never called) is built on the
    first calibration batch.
    """
    inputs = _signature.model_inputs(model)
    _check_numeric_inputs(model, inputs)
    samples = None
    if representative_data is not None:
        samples = _representative.collect(representative_data, inputs, limit)
    if inputs is None:
        inputs = _signature.require_inputs(model, None if samples is None else samples[0][:1])
    if samples is not None:
        samples = _representative.as_model_inputs(samples, inputs)
    return inputs, samples


def _check_numeric_inputs(model, inputs):
    """Refuses inputs of strings (a TextVectorization or StringLookup inside the model):
    no stand-in or calibration input is made of them.
    Before: numpy's "data type 'string' not understood", or advice to cast text to float."""
    strings = [item.name for item in inputs or [] if not _numeric(item.dtype)]
    if strings:
        raise ValueError(
            "`model` must take numbers: tfkd calibrates and checks the file on numeric "
            "inputs, and LiteRT's builtin kernels do not tokenize text. Received: model "
            f"{model.name!r} with string inputs {strings} (a TextVectorization or StringLookup "
            "inside it?). Export the model that takes its output instead, and turn text into "
            "token ids outside it (`tfkd.text` writes a WordPiece vocabulary and tokenizer for "
            "the file)."
        )


def _numeric(dtype):
    dtype = keras.backend.standardize_dtype(dtype)
    backend = keras.backend
    return dtype == "bool" or backend.is_float_dtype(dtype) or backend.is_int_dtype(dtype)


def _validate(model, quantization, representative_data, io_dtype, sparsity, select_tf_ops):
    # The class itself, from its module: `tfkd.distill.Distiller` may be rebound (a spy).
    from tfkd.distill.distiller import Distiller

    if isinstance(model, Distiller):
        raise TypeError(
            "`model` must be the model to deploy, not the Distiller that trains it. "
            f"Received: model of type {type(model).__name__}. Export `distiller.student`: "
            "export_tflite(distiller.student, ...)."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a Keras 3 model. Received: model of type {type(model).__name__}. "
            "Pass a keras.Model (load a saved one with keras.saving.load_model)."
        )
    # Before any conversion: LiteRT can crash the process running a file made from NaN.
    check_finite_weights(model)
    check_float32_compute(model, "export_tflite")
    _check_reloadable(model)
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}."
        )
    quantization_aware = _check_quantization_aware(model, quantization)
    needs_data = quantization in ("int8", "int16x8") and not quantization_aware
    if needs_data and representative_data is None:
        raise ValueError(
            f"quantization={quantization!r} calibrates activation ranges on "
            "`representative_data`. Received: representative_data=None. Pass a few hundred "
            "training inputs (numpy array, tf.data.Dataset or generator)."
        )
    if io_dtype not in _IO_DTYPES[quantization]:
        raise ValueError(
            f"`io_dtype` must be one of {_IO_DTYPES[quantization]} for quantization="
            f"{quantization!r}. Received: io_dtype={io_dtype!r}."
        )
    if sparsity not in _SPARSITY:
        raise ValueError(
            f"`sparsity` must be 'auto', True or False. Received: sparsity={sparsity!r}."
        )
    if not isinstance(select_tf_ops, bool):
        raise TypeError(
            f"`select_tf_ops` must be a bool. Received: select_tf_ops={select_tf_ops!r}."
        )


def _check_reloadable(model):
    """Off TensorFlow, refuses a model with Lambda layers wrapping a Python lambda: the
    conversion subprocess reloads the model, and Keras refuses to load those safely."""
    if keras.backend.backend() == "tensorflow":
        return
    names = [
        layer.name for layer in _graph.leaf_layers(model, subclassed=True) if _is_lambda(layer)
    ]
    if names:
        raise ValueError(
            f"Lambda layers that wrap a Python lambda cannot be exported from the "
            f"{keras.backend.backend()!r} backend: the conversion runs in a TensorFlow "
            "subprocess that reloads the model from a .keras file, and loading a Python "
            "lambda runs code stored in the file, which tfkd does not allow (safe mode). "
            f"Received: model {model.name!r} with Lambda layers {names}. Export from a "
            "process with KERAS_BACKEND=tensorflow (no reload), or replace each Lambda with "
            "Keras's built-in layers (e.g. `keras.layers.Rescaling(2.0)` for `x * 2`): a "
            "layer class defined in your script cannot be loaded there either."
        )


def _is_lambda(layer):
    return (
        isinstance(layer, keras.layers.Lambda)
        and getattr(layer.function, "__name__", None) == "<lambda>"
    )


def _check_per_channel(model, per_channel, quantization):
    if check_flag("per_channel", per_channel):
        return
    if quantization not in PER_TENSOR_QUANTIZATIONS:
        raise ValueError(
            "`per_channel=False` sets the scales of int8 kernels, for quantization "
            "'dynamic' or 'int8' (the converter's int16x8 fails on depthwise layers with "
            f"it). Received: per_channel=False with quantization={quantization!r}."
        )
    if is_quantized(model):
        raise ValueError(
            "A quantization-aware model exports with the per-channel scales it trained. "
            "Received: per_channel=False for a quantization-aware model. Pass "
            "per_channel=True, or export the float model it was made from."
        )


def check_float_model(model, received):
    """Raises where `model` is quantization-aware: such a model exports as int8 only, by
    `export_tflite`. `received`: what the caller was asked, for the message."""
    if is_quantized(model):
        raise ValueError(
            "A quantization-aware model (from tfkd.quantize.quantize_aware) exports as "
            f"int8 only, by export_tflite(model, path, 'int8'). Received: {received}. "
            "Export it so, or pass the float model it was made from."
        )


def _check_quantization_aware(model, quantization):
    """Whether `model` is quantization-aware; raises if it cannot export as asked."""
    if not is_quantized(model):
        return False
    if quantization != "int8":
        check_float_model(model, f"quantization={quantization!r}")
    untrained = untrained_quantizers(model)
    if untrained:
        raise ValueError(
            "The quantization-aware model has activation ranges that no call or training "
            f"step has set yet, in layers {untrained}. Received: a model never run on data. "
            "Train it (fit, at least a few batches), or call it once on a batch of real "
            "inputs, before exporting."
        )
    return True


def _want_sparsity(model, sparsity, quantization):
    if sparsity != "auto":
        return sparsity
    if quantization not in (None, "float16"):
        return False
    for layer in _graph.leaf_layers(model, subclassed=True):
        in_use = _kernels.kernel_in_use(layer)
        if in_use is not None:
            kernel = keras.ops.convert_to_numpy(in_use[1])
            if np.mean(kernel == 0) >= _AUTO_SPARSITY:
                return True
    return False


def _convert_in_subprocess(model, samples, options):
    with tempfile.TemporaryDirectory(prefix="tfkd-export-") as directory:
        model_path = os.path.join(directory, "model.keras")
        model.save(model_path)
        data_path = None
        if samples is not None:
            data_path = os.path.join(directory, "samples.npz")
            np.savez(data_path, *samples)
        output_path = os.path.join(directory, "model.tflite")
        command = [sys.executable, "-m", "tfkd.export._convert", model_path, output_path]
        command += ["--options", repr(options)]
        if data_path:
            command += ["--samples", data_path]
        environment = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
        if result.returncode != 0:
            raise ValueError(
                "TFLite conversion failed (it ran with the TensorFlow backend in a subprocess "
                f"because this process uses {keras.backend.backend()!r}):\n"
                f"{result.stderr[-4000:]}{_subprocess_hint(model)}"
            )
        with open(output_path, "rb") as file:
            return file.read()


def _subprocess_hint(model):
    hint = ""
    module = type(model).__module__
    if not module.startswith(_RELOADABLE):
        hint += (
            f"\nThe subprocess loads the model from a .keras file, and {type(model).__name__} "
            f"(defined in {module}) is a class it cannot import. Export it from a process with "
            "KERAS_BACKEND=tensorflow, or rebuild it as a functional or Sequential model."
        )
    layers = [
        layer.name
        for layer in _graph.leaf_layers(model, subclassed=True)
        if isinstance(layer, keras.layers.Lambda)
        or not type(layer).__module__.startswith(_RELOADABLE)
    ]
    if layers:
        hint += (
            f"\nThe subprocess may not load layers {layers}: a Lambda's function is "
            "looked up by name, and a layer class defined outside Keras and tfkd cannot be "
            "imported there (registering it does not help). Export from a process with "
            "KERAS_BACKEND=tensorflow, or build them from Keras's built-in layers."
        )
    return hint
