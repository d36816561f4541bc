"""The TensorFlow side of export (TensorFlow backend only); also runs as a subprocess.

`python -m tfkd.export._convert MODEL.keras OUT.tflite --options "{...}" [--samples S.npz]`
"""

import argparse
import ast
import contextlib
import math
import re
import threading
import warnings

import numpy as np

# Held while a model is traced for the converter, which replaces Keras's Embedding lookup,
# argmax, reshaping layers, 3D pools and TimeDistributed in the whole process meanwhile
# (`_lookups_as_given`, `_builtin_arg_reductions`, `_reshapes_with_an_open_batch`,
# `_pools_3d_as_2d`, `_time_steps_in_the_batch`): without it, two threads exporting at once
# would each trace with the other's replacement half undone, and the last to finish would
# put the first's replacement back for good. It orders exports only: a thread that runs a
# model meanwhile runs the replacements too, which compute what Keras computes except on
# negative Embedding ids, on argmax and argmin ties of -0.0 with +0.0 or with the smallest
# negative floats (see `_builtin_arg_reductions`) and on the rounding of a 3D average pool
# and of a Dense on a sequence (a TimeDistributed folds only at inference).
# Reentrant, so that an export nested in another on one thread does not wait for itself.
_TRACING = threading.RLock()


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

    from tfkd.export._signature import model_inputs

    inputs = model_inputs(model)
    specs = [tf.TensorSpec((batch, *item.shape), item.dtype, name=item.name) for item in inputs]

    @tf.function
    def serve(*tensors):
        return model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)

    try:
        with (
            _TRACING,
            _lookups_as_given(),
            _builtin_arg_reductions(),
            _reshapes_with_an_open_batch(),
            _pools_3d_as_2d(),
            _time_steps_in_the_batch(),
        ):
            return serve.get_concrete_function(*specs)
    except Exception as error:  # whatever the model's own `call` raises while tracing
        raise ValueError(
            f"Cannot trace model {model.name!r} ({type(model).__name__}) on its inputs "
            f"{[(item.name, (batch, *item.shape), item.dtype) for item in inputs]}: "
            f"{type(error).__name__}: {error}. Export calls the model on one tensor, or on "
            "a list of tensors for several inputs; wrap other signatures in a functional "
            "model: `inputs = keras.Input(shape); keras.Model(inputs, model(inputs))`."
        ) from error


@contextlib.contextmanager
def _lookups_as_given():
    """While the model is traced for the converter, Embedding lookups (Keras's layer, and
    tfkd's wrappers of it) gather the ids as they come.

    `keras.ops.take` first wraps negative indices, which puts an int32 SELECT_V2 in the
    file, and TFLite for Microcontrollers has no int32 SELECT_V2. An Embedding's ids lie
    in `[0, input_dim)` (token ids), where the wrap changes nothing; the check against
    Keras that follows every conversion covers the rest. Keras's quantized and LoRA
    Embeddings keep their own `call`.
    """
    import keras
    import tensorflow as tf

    from tfkd import _kernels

    original_call = keras.layers.Embedding.call

    def call(self, inputs):
        if self.quantization_mode is not None or self.lora_enabled:
            return original_call(self, inputs)
        if inputs.dtype not in ("int32", "int64"):
            inputs = keras.ops.cast(inputs, "int32")
        return keras.ops.cast(gather(self.embeddings, inputs), self.compute_dtype)

    def gather(table, ids):
        return tf.gather(table, ids, axis=0)

    with _replaced(keras.layers.Embedding, call=call), _replaced(_kernels, take_rows=gather):
        yield


@contextlib.contextmanager
def _builtin_arg_reductions():
    """While the model is traced for the converter, `keras.ops.argmax` and `argmin` on
    floats are TensorFlow's own, which LiteRT runs as its ARG_MAX and ARG_MIN.

    Keras's TensorFlow backend first moves -0.0 below +0.0, through a bitwise AND that
    LiteRT has no builtin kernel for: a model that ends in `keras.ops.argmax` (one that
    outputs class ids) could only be exported with `select_tf_ops=True`. Without that
    step, -0.0 ties with +0.0 (and with the smallest negative floats, below Keras's -1.2e-38
    for it): only such ties can give another index (the first); the check against Keras
    that follows every conversion covers the rest. Half floats are widened first, as
    Keras does. Keras's TensorFlow backend module is private: where a release has moved it
    (`tests/export/test_private_apis.py` fails then), Keras's own argmax is traced, which
    exports with `select_tf_ops=True` only.
    """
    import tensorflow as tf

    try:
        from keras.src.backend.tensorflow import numpy as backend_numpy
    except ImportError:
        yield
        return
    originals = {"argmax": backend_numpy.argmax, "argmin": backend_numpy.argmin}

    def reduction(name, reduce):
        def call(x, axis=None, keepdims=False):
            x = tf.convert_to_tensor(x)
            if not x.dtype.is_floating or x.shape.rank == 0:
                return originals[name](x, axis=axis, keepdims=keepdims)
            if x.dtype.size < 4:  # float16, bfloat16
                x = tf.cast(x, "float32")
            indices = reduce(
                tf.reshape(x, [-1]) if axis is None else x,
                axis=0 if axis is None else axis,
                output_type="int32",
            )
            if not keepdims:
                return indices
            if axis is None:
                return tf.reshape(indices, [1] * x.shape.rank)
            return tf.expand_dims(indices, axis)

        return call

    with _replaced(
        backend_numpy,
        argmax=reduction("argmax", tf.math.argmax),
        argmin=reduction("argmin", tf.math.argmin),
    ):
        yield


@contextlib.contextmanager
def _reshapes_with_an_open_batch():
    """While the model is traced for the converter, Flatten and Reshape layers whose
    other sizes are all known reshape to `-1` on the batch axis: one RESHAPE to a
    constant shape.

    Keras's layers read the batch size from the tensor, which adds SHAPE, STRIDED_SLICE
    and PACK ops before each RESHAPE when the batch is open (for any batch size, as tfkd
    exports): three more kernels for a TFLite Micro build to hold, and work on every
    call. Channels-first Flatten and sizes left open keep Keras's own `call`.
    """
    import keras

    originals = {"flatten": keras.layers.Flatten.call, "reshape": keras.layers.Reshape.call}
    known = _known_sizes

    def flatten(self, inputs):
        sizes = tuple(inputs.shape[1:])
        if self._channels_first or not known(sizes):
            return originals["flatten"](self, inputs)
        return keras.ops.reshape(inputs, (-1, math.prod(sizes)))

    def reshape(self, inputs):
        given, sizes = tuple(inputs.shape[1:]), list(self.target_shape)
        if not known(given) or sizes.count(-1) > 1:
            return originals["reshape"](self, inputs)
        if -1 in sizes:  # resolved from the input's size, as Keras's call resolves it
            rest = math.prod(size for size in sizes if size != -1)
            if rest <= 0 or math.prod(given) % rest:
                return originals["reshape"](self, inputs)
            sizes[sizes.index(-1)] = math.prod(given) // rest
        if not known(sizes) or math.prod(sizes) != math.prod(given):
            return originals["reshape"](self, inputs)  # Keras's call says what is wrong
        return keras.ops.reshape(inputs, (-1, *sizes))

    with (
        _replaced(keras.layers.Flatten, call=flatten),
        _replaced(keras.layers.Reshape, call=reshape),
    ):
        yield


@contextlib.contextmanager
def _pools_3d_as_2d():
    """While the model is traced for the converter, MaxPooling3D and AveragePooling3D pool
    in two 2D steps: each depth slice over height and width, then over depth.

    LiteRT has no 3D pool (TensorFlow's MaxPool3D and AvgPool3D need the Flex delegate),
    while a pool over a box is a pool over depth of pools over the box's faces: the max
    of maxes exactly, and for the average, each depth slice's window holds as many
    values, SAME padding included (padding is left out of an average as Keras leaves
    it), so the mean of means is the mean (up to rounding). So each exports as
    AVERAGE_POOL_2D or MAX_POOL_2D between RESHAPEs (and TRANSPOSEs for channels-first
    pools), in float and int8. Open sizes and a window larger than a VALID pool's input
    keep Keras's own `call`.
    """
    import keras
    import tensorflow as tf

    max_pooling, average_pooling = keras.layers.MaxPooling3D, keras.layers.AveragePooling3D

    def two_steps(original, pool_2d):
        def call(self, inputs):
            first = self.data_format == "channels_first"
            shape = tuple(inputs.shape)
            sizes = (*shape[2:], shape[1]) if first else shape[1:]
            if (
                not _known_sizes(sizes)
                or not all(self.strides)
                or self.padding == "valid"
                and any(size < window for size, window in zip(sizes, self.pool_size))
            ):
                return original(self, inputs)
            (depth, height, width, channels), padding = sizes, self.padding.upper()
            x = tf.transpose(inputs, (0, 2, 3, 4, 1)) if first else inputs
            faces = tf.reshape(x, (-1, height, width, channels))
            faces = pool_2d(faces, self.pool_size[1:], self.strides[1:], padding)
            rows, columns = faces.shape[1:3]
            stacked = tf.reshape(faces, (-1, depth, rows * columns, channels))
            pooled = pool_2d(stacked, (self.pool_size[0], 1), (self.strides[0], 1), padding)
            pooled = tf.reshape(pooled, (-1, pooled.shape[1], rows, columns, channels))
            return tf.transpose(pooled, (0, 4, 1, 2, 3)) if first else pooled

        return call

    with (
        _replaced(max_pooling, call=two_steps(max_pooling.call, tf.nn.max_pool2d)),
        _replaced(average_pooling, call=two_steps(average_pooling.call, tf.nn.avg_pool2d)),
    ):
        yield


@contextlib.contextmanager
def _time_steps_in_the_batch():
    """While the model is traced for the converter, a TimeDistributed layer with its sizes
    known calls its layer once, on the time steps folded into the batch, and unfolds the
    result; a Dense on inputs of rank 3 or more multiplies their rows in a 2D view.

    Keras's TimeDistributed calls its layer once per time step, on slices it stacks
    again, so the file held the layer's ops once per step (4 CONV_2D for 4 frames)
    between STRIDED_SLICEs, a PACK and TRANSPOSEs; Keras's Dense on a sequence read its
    shape at run time (SHAPE, GATHER, REDUCE_PROD, PACK). Folding is exact where each
    example is computed alone, so only layers made of Keras's, KerasHub's and tfkd's
    layers (no Lambda) fold, at inference: a layer of the user's own may mix the
    examples of a batch (a mean over it), and a BatchNormalization that trains does (in
    a thread that trains while another exports). The others, a mask, open sizes, an
    output of open sizes and a layer that cannot take the folded batch keep Keras's
    own `call`.
    """
    import inspect

    import keras
    import tensorflow as tf

    from tfkd import _graph

    original, dense_call = keras.layers.TimeDistributed.call, keras.layers.Dense.call

    def per_example(layer):
        return all(
            _graph.is_library_class(type(inner)) and not isinstance(inner, keras.layers.Lambda)
            for inner in layer._flatten_layers(include_self=True)
        )

    def call(self, inputs, training=None, mask=None):
        sizes = tuple(inputs.shape[1:])
        kept = lambda: original(self, inputs, training=training, mask=mask)  # noqa: E731
        if training or mask is not None or not _known_sizes(sizes) or not per_example(self.layer):
            return kept()
        arguments = inspect.signature(self.layer.call).parameters
        kwargs = {"training": training} if "training" in arguments else {}
        try:
            outputs = self.layer.call(tf.reshape(inputs, (-1, *sizes[1:])), **kwargs)
        except Exception:  # a layer that cannot take the folded batch: traced as Keras does
            return kept()
        if not tf.is_tensor(outputs) or not _known_sizes(tuple(outputs.shape[1:])):
            return kept()
        return tf.reshape(outputs, (-1, sizes[0], *outputs.shape[1:]))

    def dense(self, inputs, training=None):
        sizes = tuple(inputs.shape[1:])
        if len(sizes) < 2 or not _known_sizes(sizes):
            return dense_call(self, inputs)
        outputs = dense_call(self, tf.reshape(inputs, (-1, sizes[-1])))
        return tf.reshape(outputs, (-1, *sizes[:-1], outputs.shape[-1]))

    with (
        _replaced(keras.layers.TimeDistributed, call=call),
        _replaced(keras.layers.Dense, call=dense),
    ):
        yield


def _known_sizes(sizes):
    return bool(sizes) and all(isinstance(size, int) and size > 0 for size in sizes)


@contextlib.contextmanager
def _replaced(owner, **replacements):
    """Sets attributes of `owner` (a class or module) to `replacements` meanwhile, and puts
    the originals back after (the tracing replacements above, under `_TRACING`): an
    attribute `owner` inherited is deleted again, so that it inherits it once more."""
    own = vars(owner)
    originals = {name: own.get(name, _INHERITED) for name in replacements}
    for name, value in replacements.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in originals.items():
            if value is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_INHERITED = object()


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
