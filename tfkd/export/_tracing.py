"""What export changes in Keras while it traces a model for the converter, so that the file
holds LiteRT's builtin ops, once, where Keras's own calls would add Flex ops, ops that read
shapes at run time, or one copy of a layer per time step.

`for_the_converter()` installs every replacement, under one lock, for the length of a trace.
"""

import contextlib
import math
import threading

from tfkd import _kernels

# Held while a model is traced for the converter (`for_the_converter`), which replaces
# Keras's Embedding lookup, argmax, reshaping layers, 3D pools, TimeDistributed and Dense in
# the whole process meanwhile (`_lookups_as_given`, `_builtin_arg_reductions`,
# `_reshapes_with_an_open_batch`, `_pools_3d_as_2d`, `_time_steps_in_the_batch`,
# `_dense_on_rows`): without it, two threads exporting at once would each trace with the
# other's replacement half undone, and the last to finish would put the first's
# replacement back for good. It orders exports only: a thread that runs a model meanwhile
# runs the replacements too, which compute what Keras computes except on negative Embedding
# ids, on argmax and argmin ties of -0.0 with +0.0 or with the smallest negative floats (see
# `_builtin_arg_reductions`) and on the rounding of a 3D average pool and of a Dense on a
# sequence (a TimeDistributed folds only at inference). Reentrant, so that an export nested
# in another on one thread does not wait for itself.
_TRACING = threading.RLock()


@contextlib.contextmanager
def for_the_converter():
    """Holds `_TRACING` and installs every replacement below while the model is traced."""
    with (
        _TRACING,
        _lookups_as_given(),
        _builtin_arg_reductions(),
        _reshapes_with_an_open_batch(),
        _pools_3d_as_2d(),
        _time_steps_in_the_batch(),
        _dense_on_rows(),
    ):
        yield


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
    known = _kernels.known_sizes

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
                not _kernels.known_sizes(sizes)
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
    result.

    Keras's TimeDistributed calls its layer once per time step, on slices it stacks
    again, so the file held the layer's ops once per step (4 CONV_2D for 4 frames)
    between STRIDED_SLICEs, a PACK and TRANSPOSEs. Folding is exact where each
    example is computed alone, so only layers made of Keras's, KerasHub's and tfkd's
    layers (no Lambda) fold, at inference: a layer of the user's own may mix the
    examples of a batch (a mean over it), and a BatchNormalization that trains does (in
    a thread that trains while another exports). Keras's layers and ops may mix them
    too where told to (`Softmax(axis=0)`, `keras.ops.mean(x, axis=0)` in a block), so
    a layer folds only where the folded call gives what Keras's gives on a probe of two
    examples, run eagerly first (`_alone`). The others, a mask, open sizes, an output of
    open sizes and a layer that cannot take the folded batch keep Keras's own `call`.
    """
    import inspect

    import keras
    import tensorflow as tf

    from tfkd import _graph

    original = keras.layers.TimeDistributed.call

    def per_example(layer):
        return all(
            _graph.is_library_class(type(inner)) and not isinstance(inner, keras.layers.Lambda)
            for inner in layer._flatten_layers(include_self=True)
        )

    def folded(self, inputs, kwargs):
        """The layer called once on the steps folded into the batch, or `None`."""
        sizes = tuple(inputs.shape[1:])
        try:
            outputs = self.layer.call(tf.reshape(inputs, (-1, *sizes[1:])), **kwargs)
        except Exception:  # a layer that cannot take the folded batch: traced as Keras does
            return None
        if not tf.is_tensor(outputs) or not _kernels.known_sizes(tuple(outputs.shape[1:])):
            return None
        return tf.reshape(outputs, (-1, sizes[0], *outputs.shape[1:]))

    def call(self, inputs, training=None, mask=None):
        sizes = tuple(inputs.shape[1:])
        kept = lambda: original(self, inputs, training=training, mask=mask)  # noqa: E731
        if (
            training
            or mask is not None
            or not _kernels.known_sizes(sizes)
            or not per_example(self.layer)
        ):
            return kept()
        arguments = inspect.signature(self.layer.call).parameters
        kwargs = {"training": training} if "training" in arguments else {}
        keras_call = lambda x: original(self, x, training=training)  # noqa: E731
        if not _alone(sizes, inputs.dtype, keras_call, lambda x: folded(self, x, kwargs)):
            return kept()
        outputs = folded(self, inputs, kwargs)
        return kept() if outputs is None else outputs

    with _replaced(keras.layers.TimeDistributed, call=call):
        yield


def _alone(sizes, dtype, keras_call, folded_call):
    """Whether a TimeDistributed folded (`folded_call`) computes what Keras's call
    (`keras_call`) does on a probe of two examples of `sizes` (random values of `dtype`),
    run eagerly out of the trace: where they differ, its layer mixes the examples or time
    steps that folding puts in one batch."""
    import numpy as np
    import tensorflow as tf

    dtype = tf.as_dtype(dtype)
    if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        return False
    random = np.random.default_rng(0)
    shape = (2, *sizes)
    probe = random.normal(size=shape) if dtype.is_floating else random.integers(0, 2, shape)
    try:
        with tf.init_scope():
            probe = tf.cast(probe, dtype)
            expected, got = keras_call(probe), folded_call(probe)
            if got is None or tuple(got.shape) != tuple(expected.shape):
                return False
            expected, got = np.asarray(expected, "float64"), np.asarray(got, "float64")
    except Exception:  # the probe's values do not suit the layer: Keras's call, as before
        return False
    scale = max(1.0, float(np.nanmax(np.abs(expected), initial=0.0)))
    return bool(np.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))


@contextlib.contextmanager
def _dense_on_rows():
    """While the model is traced for the converter, a Dense on inputs of rank 3 or more
    with known sizes multiplies their rows in a 2D view (`_kernels.on_rows`): Keras's
    Dense on a sequence read its shape at run time (SHAPE, GATHER, REDUCE_PROD, PACK)."""
    import keras

    original = keras.layers.Dense.call

    def call(self, inputs, training=None):
        return _kernels.on_rows(inputs, lambda rows: original(self, rows))

    with _replaced(keras.layers.Dense, call=call):
        yield


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
