"""The layers of a quantization-aware model: activation quantizers and the layer wrapper."""

import inspect

import keras
import numpy as np
from keras import ops

from tfkd import _checks, _graph, _kernels
from tfkd._wrapper import KernelWrapper
from tfkd.quantize._fake_quant import MIN_RANGE, exporting, fake_quant, symmetric_range

# Kernels quantized with one range per output channel, as TFLite's int8 kernels expect.
# 1D convolutions become 2D ops in TFLite, whose per-channel axis the converter cannot
# carry through the reshape: they are quantized per tensor.
_PER_CHANNEL = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
# TFLite's int8 softmax writes its outputs with scale 1/256 and zero point -128.
_SOFTMAX_RANGE = (0.0, 255.0 / 256.0)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
# Their depthwise kernel would stay float; TFLite runs them as two ops anyway.
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


@keras.saving.register_keras_serializable(package="tfkd")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor to int8 over a range tracked while training.

    The first call, training or inference, sets the range to its batch's minimum and
    maximum (always containing 0), so a quantization-aware model computes what its
    float model computes, up to int8 rounding, before any training. Later training
    calls move the range towards each batch's (an exponential moving average);
    later inference calls, and training calls while the layer is frozen
    (`trainable = False`, as BatchNormalization), use it as it is.

    Args:
        decay: weight of the old range in the moving average. Defaults to `0.999`.
        **kwargs: passed to `keras.layers.Layer`.

    Example:

    >>> quantizer = tfkd.quantize.ActivationQuantizer()
    >>> y = quantizer(np.linspace(-1.0, 1.0, 5)[None], training=True)
    >>> len(np.unique(np.round(keras.ops.convert_to_numpy(y) * 127.5, 3))) <= 5
    True
    """

    def __init__(self, decay=0.999, **kwargs):
        super().__init__(**kwargs)
        self.decay = check_decay(decay)

    def build(self, input_shape=None):
        self.min_value = self.add_weight(
            name="min_value", shape=(), initializer="zeros", trainable=False
        )
        self.max_value = self.add_weight(
            name="max_value", shape=(), initializer="zeros", trainable=False
        )
        self.tracked_steps = self.add_weight(
            name="tracked_steps", shape=(), initializer="zeros", trainable=False, dtype="int32"
        )
        self.built = True

    def call(self, inputs, training=False):
        # Frozen (`trainable = False`), it keeps its range, as BatchNormalization does.
        if training and self.trainable:
            self._track(inputs)
        elif not exporting():  # an exported graph must not assign variables
            self._initialize(inputs)
        min_value = ops.convert_to_tensor(self.min_value)
        max_value = ops.maximum(ops.convert_to_tensor(self.max_value), min_value + MIN_RANGE)
        return fake_quant(inputs, min_value, max_value)

    def is_set(self):
        """Whether a call (or a loaded model) has set the range: a boolean tensor."""
        # The range starts as [0, 0] and always contains 0 afterwards, so its width says
        # whether it was set; a flag variable would change the weights of saved models.
        min_value, max_value = self._range()
        return ops.greater(max_value - min_value, 0.0)

    def _range(self):
        return ops.convert_to_tensor(self.min_value), ops.convert_to_tensor(self.max_value)

    def effective_weights(self):
        """No weights: the range and step counter are bookkeeping, not parameters."""
        return []

    def _initialize(self, inputs):
        batch_min, batch_max = _batch_range(inputs)
        min_value, max_value = self._range()
        is_set = self.is_set()
        self.min_value.assign(ops.where(is_set, min_value, batch_min))
        self.max_value.assign(ops.where(is_set, max_value, batch_max))

    def _track(self, inputs):
        batch_min, batch_max = _batch_range(inputs)
        min_value, max_value = self._range()
        decay = ops.where(self.is_set(), self.decay, 0.0)
        self.min_value.assign(decay * min_value + (1.0 - decay) * batch_min)
        self.max_value.assign(decay * max_value + (1.0 - decay) * batch_max)
        self.tracked_steps.assign(self.tracked_steps + 1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


def _batch_range(inputs):
    values = ops.cast(inputs, "float32")
    low, high = _whole_batch(ops.min(values), ops.max(values))
    return ops.minimum(low, 0.0), ops.maximum(high, 0.0)


def _whole_batch(low, high):
    """The range of the whole batch when a TensorFlow distribution strategy gives each
    replica a share of it (JAX and PyTorch compute on the whole batch already)."""
    if keras.backend.backend() != "tensorflow":
        return low, high
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return low, high
    extremes = tf.reduce_max(context.all_gather(tf.stack([-low, high])[None], axis=0), axis=0)
    return -extremes[0], extremes[1]


@keras.saving.register_keras_serializable(package="tfkd")
class QuantizeWrapper(KernelWrapper):
    """Runs `layer` as its int8 TFLite counterpart will: quantized weights and activations.

    For a layer with a kernel (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D, Embedding), the
    kernel is fake-quantized, per output channel for convolutions, symmetric over
    [-127, 127] as TFLite stores it. A BatchNormalization that follows the layer is
    folded into its kernel and bias with the moving statistics, which stay frozen, so
    training computes exactly what inference will. `tfkd.quantize.quantize_aware`
    wraps a whole model; use this class directly only in a subclassed model.

    Args:
        layer: the Keras layer to run.
        batch_norm: a built BatchNormalization to fold into `layer`, or `None`.
            Defaults to `None`.
        quantize_inputs: fake-quantize the inputs (for layers that read the model's
            float inputs). Defaults to `False`.
        quantize_outputs: fake-quantize the outputs. Defaults to `True`.
        preserve_sparsity: keep the kernel's zeros at zero (for pruned models).
            Defaults to `False`.
        clusters: keep the kernel on this many shared values (for clustered models,
            cluster-preserving QAT): the wrapper holds them as trainable centroids and
            each weight's index into them, fixed, and computes with
            `centroids[indices]`, so training moves the shared values, never a weight
            off them. Set them from the kernel with `keep_clusters()` once its weights
            are in. `None` trains the kernel as usual. Defaults to `None`.
        decay: moving-average decay of the activation ranges. Defaults to `0.999`.
        **kwargs: passed to `keras.layers.Layer`; the name defaults to the layer's.

    Example:

    >>> dense = tfkd.quantize.QuantizeWrapper(keras.layers.Dense(4))
    >>> tuple(dense(np.ones((2, 8)), training=True).shape)
    (2, 4)
    """

    action = "quantized"
    requires_kernel = False  # activations, pooling, merges run as they are

    def __init__(
        self,
        layer,
        batch_norm=None,
        quantize_inputs=False,
        quantize_outputs=True,
        preserve_sparsity=False,
        decay=0.999,
        clusters=None,
        **kwargs,
    ):
        if batch_norm is not None and not isinstance(batch_norm, keras.layers.BatchNormalization):
            raise TypeError(
                "`batch_norm` must be a keras.layers.BatchNormalization to fold into `layer`, "
                f"or None. Received: batch_norm={batch_norm!r:.80} of type "
                f"{type(batch_norm).__name__}."
            )
        quantize_inputs = _checks.check_flag("quantize_inputs", quantize_inputs)
        quantize_outputs = _checks.check_flag("quantize_outputs", quantize_outputs)
        preserve_sparsity = _checks.check_flag("preserve_sparsity", preserve_sparsity)
        decay = check_decay(decay)
        if clusters is not None:
            clusters = _checks.check_number("clusters", clusters, low=2, integer=True)
        super().__init__(layer, **kwargs)
        if clusters is not None and self._kernel_name is None:
            raise ValueError(
                f"`clusters` needs a layer with a kernel. Received: clusters={clusters} for "
                f"layer {layer.name!r} ({type(layer).__name__})."
            )
        self._takes_mask = "mask" in inspect.signature(layer.call).parameters
        self._softmax = _graph.activation_name(layer) == "softmax"
        if batch_norm is not None:
            check_foldable(layer, batch_norm)
        self.batch_norm = batch_norm
        self.quantize_inputs = quantize_inputs
        self.quantize_outputs = quantize_outputs
        self.preserve_sparsity = preserve_sparsity
        self.clusters = clusters
        self.decay = decay
        self.input_quantizer = ActivationQuantizer(decay) if quantize_inputs else None
        self.output_quantizer = ActivationQuantizer(decay) if quantize_outputs else None

    def unsupported_reason(self, layer):
        if isinstance(layer, _SEPARABLE):
            return (
                "separable convolutions are not supported; build them as a "
                "DepthwiseConv2D followed by a 1x1 Conv2D"
            )
        return super().unsupported_reason(layer)

    def build_state(self, input_shape):
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(self.layer.compute_output_shape(input_shape))
        if self.batch_norm is not None:
            check_foldable(self.layer, self.batch_norm)  # its axis, by number, now known
        if self.preserve_sparsity:
            self.sparsity_mask = self.add_weight(
                name="sparsity_mask",
                shape=self.raw_kernel().shape,
                initializer="ones",
                trainable=False,
            )
        if self.clusters is not None:
            kernel = self.raw_kernel()
            self.cluster_centroids = self.add_weight(
                name="cluster_centroids", shape=(self.clusters,), initializer="zeros"
            )
            self.cluster_indices = self.add_weight(
                name="cluster_indices",
                shape=kernel.shape,
                initializer="zeros",
                dtype="int32",
                trainable=False,
            )
            kernel.trainable = False  # the centroids train instead
        for quantizer in (self.input_quantizer, self.output_quantizer):
            if quantizer is not None:
                quantizer.build()

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        # Keras sets every inner variable back to `value`; a clustered kernel stays frozen.
        if getattr(self, "clusters", None) is not None and self.built:
            self.raw_kernel().trainable = False

    def keep_clusters(self):
        """Takes the kernel's distinct values as the centroids (at most `clusters`)."""
        if self.clusters is None:
            raise ValueError(
                "`keep_clusters` needs a wrapper made with `clusters`. Received: clusters=None "
                f"for layer {self.layer.name!r}."
            )
        kernel = ops.convert_to_numpy(self.raw_kernel())
        values, indices = np.unique(kernel, return_inverse=True)
        if len(values) > self.clusters:
            raise ValueError(
                f"The kernel of layer {self.layer.name!r} holds {len(values)} distinct values, "
                f"more than clusters={self.clusters}. Cluster it first (tfkd.cluster)."
            )
        padded = np.concatenate([values, np.full(self.clusters - len(values), values[-1])])
        self.cluster_centroids.assign(padded.astype(kernel.dtype))
        self.cluster_indices.assign(indices.reshape(kernel.shape).astype("int32"))

    def masked_kernel(self):
        if self.clusters is None:
            return super().masked_kernel()
        kernel = _kernels.take_rows(self.cluster_centroids, self.cluster_indices)
        mask = self.kernel_mask()
        return kernel if mask is None else ops.multiply(kernel, mask)

    def keep_zeros(self):
        """Fixes the sparsity mask to the kernel's current zeros."""
        kernel = ops.convert_to_tensor(self.raw_kernel())
        self.sparsity_mask.assign(ops.cast(ops.not_equal(kernel, 0.0), kernel.dtype))

    def kernel_mask(self):
        return self.sparsity_mask if self.preserve_sparsity else None

    def float_kernel(self):
        """The kernel before folding and quantization, its pruned zeros kept."""
        return ops.convert_to_tensor(self.masked_kernel())

    def more_weights(self):
        """The folded BatchNormalization's weights."""
        return [] if self.batch_norm is None else list(self.batch_norm.weights)

    def quantized_kernel_and_bias(self):
        """The fake-quantized (and BatchNorm-folded) kernel, and the bias, used in `call`."""
        kernel = self.float_kernel()
        bias = None
        if self.batch_norm is not None:
            kernel, bias = self._fold(kernel)
        return self._quantize_kernel(kernel), bias

    def _fold(self, kernel):
        return fold(self.layer, self.batch_norm, kernel, getattr(self.layer, "bias", None))

    def _quantize_kernel(self, kernel):
        if not isinstance(self.layer, _PER_CHANNEL):
            min_value, max_value = symmetric_range(kernel)
            return fake_quant(kernel, min_value, max_value, narrow_range=True)
        shape = kernel.shape
        if isinstance(self.layer, _DEPTHWISE):
            # TFLite's depthwise filter has one channel per (input channel, multiplier).
            kernel = ops.reshape(kernel, (*shape[:-2], 1, shape[-2] * shape[-1]))
        min_value, max_value = symmetric_range(kernel, axis=-1)
        quantized = fake_quant(kernel, min_value, max_value, narrow_range=True)
        return ops.reshape(quantized, shape)

    def call(self, inputs, training=False, mask=None):
        # A frozen wrapper's quantizers keep their ranges (`ActivationQuantizer`).
        tracking = training and not self.frozen()
        if self.input_quantizer is not None:
            if isinstance(inputs, (list, tuple)):  # a merge layer reading several model inputs
                inputs = [self.input_quantizer(item, training=tracking) for item in inputs]
            else:
                inputs = self.input_quantizer(inputs, training=tracking)
        if self._kernel_name is None:
            extra = {} if mask is None or not self._takes_mask else {"mask": mask}
            outputs = self.layer(inputs, training=training, **extra)
            if self.output_quantizer is not None:
                outputs = self.output_quantizer(outputs, training=tracking)
        else:
            kernel, bias = self.quantized_kernel_and_bias()
            # A softmax's input (the logits) is quantized too: TFLite runs it as its own op.
            outputs = _kernels.forward(
                self.layer, inputs, kernel, bias, activation=not self._softmax
            )
            if self.output_quantizer is not None:
                outputs = self.output_quantizer(outputs, training=tracking)
            if self._softmax:
                outputs = self.layer.activation(outputs)
        if self._softmax:
            outputs = fake_quant(outputs, *(ops.convert_to_tensor(v) for v in _SOFTMAX_RANGE))
        return outputs

    def get_config(self):
        config = super().get_config()
        batch_norm = self.batch_norm
        if batch_norm is not None:
            batch_norm = keras.saving.serialize_keras_object(batch_norm)
        config.update(
            batch_norm=batch_norm,
            quantize_inputs=self.quantize_inputs,
            quantize_outputs=self.quantize_outputs,
            preserve_sparsity=self.preserve_sparsity,
            decay=self.decay,
            clusters=self.clusters,
        )
        return config

    @classmethod
    def from_config_arguments(cls, config, layer):
        batch_norm = config.pop("batch_norm", None)
        if batch_norm is not None:
            batch_norm = keras.saving.deserialize_keras_object(batch_norm)
        return dict(config, batch_norm=batch_norm)


@keras.saving.register_keras_serializable(package="tfkd")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands where a BatchNormalization was folded into the layer before it: returns its input.

    Stripping (`tfkd.cluster.strip`, and export) leaves it out.
    """

    left_out_when_stripped = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def fold(layer, norm, kernel, bias):
    """`layer`'s kernel and bias with BatchNormalization `norm` (its moving statistics)
    folded in; `bias` may be `None`."""
    factor = ops.rsqrt(ops.add(norm.moving_variance, norm.epsilon))
    if norm.gamma is not None:
        factor = ops.multiply(factor, norm.gamma)
    folded_bias = ops.negative(norm.moving_mean)
    if bias is not None:
        folded_bias = ops.add(folded_bias, bias)
    folded_bias = ops.multiply(folded_bias, factor)
    if norm.beta is not None:
        folded_bias = ops.add(folded_bias, norm.beta)
    if isinstance(layer, _DEPTHWISE):
        factor = ops.reshape(factor, kernel.shape[-2:])
    return ops.multiply(kernel, factor), folded_bias


def foldable_batch_norms(consumers):
    """`{layer: the BatchNormalization that folds into it}`, from `_graph.consumers` (see
    `why_not_folded` for when one does not)."""
    found = {}
    for layer, users in consumers.items():
        norm = users[0] if len(users) == 1 else None
        if isinstance(norm, keras.layers.BatchNormalization):
            if why_not_folded(norm, consumers) is None:
                check_moving_variance(norm)
                found[layer] = norm
    return found


def why_not_folded(norm, consumers):
    """`None` where BatchNormalization `norm` folds into the Dense or convolution before
    it (`consumers` from `_graph.consumers`), else why not, as a phrase: that layer must
    take it (`check_foldable`), and `norm` must be its only consumer and called on its
    output alone (one also called after a pool was replaced by a placeholder that passes
    its input on, on both paths)."""
    producers = [layer for layer, users in consumers.items() if norm in users]
    if not producers:
        return "it reads the model's input"
    if len(producers) > 1:
        return f"it is called on the outputs of {[layer.name for layer in producers]}"
    producer = producers[0]
    if _kernels.kernel_name(producer) is None or isinstance(producer, keras.layers.Embedding):
        return (
            f"it follows {producer.name!r} ({type(producer).__name__}), not a Dense or convolution"
        )
    if len(consumers[producer]) > 1:
        return f"the output of {producer.name!r} also goes elsewhere, and folding would change it"
    unsupported = _kernels.unsupported_reason(producer)  # LoRA, already quantized
    if unsupported:
        return f"{producer.name!r}: {unsupported}"
    try:
        check_foldable(producer, norm)
    except ValueError as error:  # an activation in the layer, another axis
        return str(error).split(": ", 1)[-1].rstrip(".")
    return None


def check_moving_variance(norm):
    """Raises ValueError where BatchNormalization `norm`'s `moving_variance + epsilon` is
    not positive: it outputs NaN there, and folded into a kernel makes it NaN (before,
    clustering failed in numpy's words, "Probabilities contain NaN")."""
    if not norm.built:  # a model never called: its statistics are made at the first call
        return
    variance = np.asarray(ops.convert_to_numpy(norm.moving_variance)) + norm.epsilon
    bad = np.flatnonzero(~(variance > 0))
    if bad.size:
        raise ValueError(
            f"BatchNormalization {norm.name!r} has moving_variance + epsilon <= 0 at "
            f"{bad.size} channel(s), e.g. {bad[:5].tolist()}: it outputs NaN there, and "
            "cannot be folded into the layer before it. Received: moving_variance + "
            f"epsilon = {variance[bad[:5]].tolist()}. A variance is never negative: set "
            "those entries to a positive value (e.g. 1.0), or retrain."
        )


def check_foldable(layer, batch_norm):
    """Raises when `batch_norm` cannot be folded into `layer`'s kernel."""
    if _kernels.kernel_name(layer) is None or isinstance(layer, keras.layers.Embedding):
        raise ValueError(
            f"BatchNormalization {batch_norm.name!r} can only be folded into a Dense or "
            f"convolution layer. Received: layer {layer.name!r} ({type(layer).__name__})."
        )
    activation = getattr(layer, "activation", None)
    if activation is not None and activation is not keras.activations.linear:
        raise ValueError(
            f"BatchNormalization {batch_norm.name!r} cannot be folded into layer "
            f"{layer.name!r}: that layer applies an activation before the normalization."
        )
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    # The last axis by number too: a convolution's rank + 1, or the normalized input's
    # rank - 1 (a Dense's: before, BatchNormalization(axis=1) after one was refused).
    # Unbuilt copies (the wrapper's) are checked again once built.
    last_axis = {-1} | ({layer.rank + 1} if hasattr(layer, "rank") else set())
    rank = _graph.built_rank(batch_norm) or _graph.built_rank(layer)
    if rank is not None:
        last_axis.add(rank - 1)
    unknown = rank is None and isinstance(batch_norm.axis, int) and batch_norm.axis >= 0
    if (batch_norm.axis not in last_axis and not unknown) or not channels_last:
        raise ValueError(
            f"BatchNormalization {batch_norm.name!r} cannot be folded into layer "
            f"{layer.name!r}: it must normalize the channels-last axis. Received: "
            f"axis={batch_norm.axis!r}, data_format={getattr(layer, 'data_format', None)!r}."
        )


def check_decay(decay):
    """`decay` as a float in [0, 1), or a TypeError/ValueError naming it."""
    return float(_checks.check_number("decay", decay, low=0, high=1, high_open=True))
