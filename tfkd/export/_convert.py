"""The TensorFlow side of export (TensorFlow backend only); also runs as a subprocess.

`python -m tfkd.export._convert MODEL.keras OUT.tflite --options "{...}" [--samples S.npz]`
"""

import argparse
import ast
import contextlib
import re
import warnings

import numpy as np


def freeze(function):
    """`function` (a `tf.function`'s concrete function) with its variables frozen into
    constants, so that the converter sees one plain graph.

    TensorFlow's only way to do this is private (`tensorflow.python.framework.
    convert_to_constants`, which its own converter uses); this is the one place tfkd
    reaches it, and `tests/export/test_private_apis.py` fails when a release moves it.
    """
    import tensorflow as tf

    try:
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )
    except ImportError as error:
        raise ImportError(
            f"TensorFlow {tf.__version__} no longer has the private "
            "`tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2` "
            "that tfkd's export freezes models with. Install a TensorFlow version tfkd supports "
            "(see setup.cfg)."
        ) from error
    return convert_variables_to_constants_v2(function)


def convert(
    model,
    samples,
    *,
    quantization,
    io_dtype,
    sparsity,
    select_tf_ops,
    per_channel=True,
    signature=False,
    verbose=0,
):
    """Returns the `.tflite` bytes of `model` (a Keras model on the TensorFlow backend);
    `verbose` shows the calibration's progress. With `signature`, the file has a
    `serving_default` signature (the converter then goes through a SavedModel), which
    LiteRT's signature runners, and so the LiteRT quantizer, need. `per_channel=False`
    gives each integer kernel one scale."""
    import tensorflow as tf

    from tfkd.quantize.qat import export_mode, is_quantized

    quantization_aware = is_quantized(model)
    frozen, per_example = _frozen(
        model, export_mode if quantization_aware else contextlib.nullcontext
    )
    calibrated = quantization in ("int8", "int16x8") and not quantization_aware
    if per_example and calibrated:
        raise ValueError(
            f"Cannot export {model.name!r} with quantization={quantization!r}: TensorFlow's "
            "calibration crashes the process (segmentation fault) on the loop a recurrent "
            "layer (LSTM, GRU, SimpleRNN...) exports to. For this model use quantization="
            "None, 'float16' or 'dynamic' (int8 weights), or build its recurrent layers "
            "with `unroll=True` (a fixed sequence length), which exports to int8."
        )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [frozen], *([model] if signature else [])
    )
    optimizations = []
    if quantization is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    # The converter's only switch for one scale per kernel (no public one exists).
    converter._experimental_disable_per_channel = not per_channel
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8" and not quantization_aware:
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quantization == "int16x8":
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops
    if samples is not None and quantization in ("int8", "int16x8") and not quantization_aware:
        converter.representative_dataset = _feeder(samples, verbose)
    if io_dtype != "float32":
        converter.inference_input_type = tf.as_dtype(io_dtype)
        converter.inference_output_type = tf.as_dtype(io_dtype)
    try:
        with warnings.catch_warnings():
            # Raised for every float-input model with fake-quant ops; the inputs are
            # quantized by the QUANTIZE op the converter adds, so nothing is missing.
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            return converter.convert()
    except Exception as error:  # the converter raises several private error types
        raise ValueError(_conversion_message(error, select_tf_ops)) from error


def _frozen(model, tracing):
    """`(function, per_example)`: `model` traced (within the context `tracing()` makes) and
    frozen, for batches of any size; for batches of one (`per_example`) where it keeps a
    list of tensors (Keras's recurrent layers on TensorFlow, LSTM, GRU, SimpleRNN not
    unrolled, fill a TensorArray step by step): the converter lowers such lists to LiteRT
    ops only when each element's shape is known, batch included, and otherwise refuses
    the model (`'tf.TensorListReserve' op requires element_shape to be static`). LiteRT
    runs such a file one example at a time (`_interpreter.Runner`)."""
    with tracing():
        frozen = freeze(_concrete_function(model))
    if not _keeps_tensor_lists(frozen.graph.as_graph_def()):
        return frozen, False
    with tracing():
        return freeze(_concrete_function(model, batch=1)), True


def _keeps_tensor_lists(graph):
    functions = [function.node_def for function in graph.library.function]
    return any(
        node.op.startswith("TensorList") for nodes in (graph.node, *functions) for node in nodes
    )


def _concrete_function(model, batch=None):
    import tensorflow as tf

    from tfkd.export import _tracing
    from tfkd.export._signature import call_structure, model_inputs

    inputs = model_inputs(model)
    specs = [tf.TensorSpec((batch, *item.shape), item.dtype, name=item.name) for item in inputs]

    @tf.function
    def serve(*tensors):
        return model(call_structure(model, tensors), training=False)

    try:
        with _tracing.for_the_converter():
            return serve.get_concrete_function(*specs)
    except Exception as error:  # whatever the model's own `call` raises while tracing
        raise ValueError(
            f"Cannot trace model {model.name!r} ({type(model).__name__}) on its inputs "
            f"{[(item.name, (batch, *item.shape), item.dtype) for item in inputs]}: "
            f"{type(error).__name__}: {error}. Export calls the model on one tensor, or on "
            "a list of tensors for several inputs; wrap other signatures in a functional "
            "model: `inputs = keras.Input(shape); keras.Model(inputs, model(inputs))`."
        ) from error


def _feeder(samples, verbose=0):
    # The samples are already in the dtypes of the model's inputs
    # (`_representative.as_model_inputs`).
    def representative_dataset():
        progress = None
        if verbose:
            from tfkd.export.model import progress_bar

            print(f"Calibrating on {len(samples[0]):,} samples")
            progress = progress_bar(len(samples[0]), verbose)
        for index in range(len(samples[0])):
            yield [array[index : index + 1] for array in samples]
            if progress is not None:
                progress.update(index + 1)

    return representative_dataset


def _conversion_message(error, select_tf_ops):
    text = str(error)
    ops = sorted(set(re.findall(r"'(tf\.[A-Za-z0-9_]+)' op", text)))
    message = "TFLite conversion failed"
    if ops:
        message += f" on op(s) {', '.join(ops)}"
        if not select_tf_ops:
            message += (
                ", which have no builtin TFLite kernel. Replace the layers that use them, or "
                "pass select_tf_ops=True (the file then needs the Flex delegate)"
            )
    return f"{message}. Converter said:\n{text[-3000:]}"


def _main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--options", required=True)
    parser.add_argument("--samples")
    arguments = parser.parse_args()

    import keras

    import tfkd  # noqa: F401  (registers tfkd's layers for loading)
    from tfkd import _atomic

    model = keras.saving.load_model(arguments.model, compile=False)
    samples = None
    if arguments.samples:
        archive = np.load(arguments.samples)
        samples = [archive[f"arr_{index}"] for index in range(len(archive.files))]
    options = ast.literal_eval(arguments.options)
    _atomic.write_bytes(arguments.output, convert(model, samples, **options))


if __name__ == "__main__":
    _main()
