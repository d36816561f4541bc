"""`quantize_aware`: a Keras 3 model that trains with the int8 arithmetic TFLite will run."""

import keras
import numpy as np

from tfkd import _checks, _graph, _kernels
from tfkd.quantize._fake_quant import export_mode  # noqa: F401  (what export traces QAT models in)
from tfkd.quantize.layers import (
    FoldedBatchNormalization,
    QuantizeWrapper,
    check_decay,
    foldable_batch_norms,
    why_not_folded,
)

# Kernels with at most this many distinct values keep them with `preserve_clusters`.
_MOST_CLUSTERS = 256
# Layers whose int8 TFLite ops keep their input's scale: no quantizer after them.
_SAME_SCALE = (
    FoldedBatchNormalization,
    keras.layers.InputLayer,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    *_graph.IDENTITY_AT_INFERENCE,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Permute,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.Resizing,
    keras.layers.RandomFlip,
    keras.layers.RandomTranslation,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomCrop,
)
# Layers with weights that `quantize_aware` handles without a kernel.
_WEIGHTED_OK = (keras.layers.BatchNormalization, keras.layers.Normalization)
_FUSED_ACTIVATIONS = ("relu", "relu6")
# Besides kernel layers, the layers whose TFLite ops take a fused ReLU.
_FUSING = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply)
# Layers that return their input.
_PASS_THROUGH = (FoldedBatchNormalization, keras.layers.Identity)


def quantize_aware(model, *, fold_batch_norm=True, decay=0.999, preserve_clusters=False):
    """Returns a copy of `model` that trains with int8 quantization in the loop (QAT).

    Every kernel is fake-quantized as TFLite stores it (per output channel, symmetric,
    for convolutions), the model's float inputs and the outputs of every layer that
    computes new values are fake-quantized over ranges tracked while training, and a
    BatchNormalization that follows a Dense or convolution is folded into it using its
    moving statistics (frozen, so training computes what inference will). Activations
    that TFLite fuses (ReLU, ReLU6) share the quantizer of the layer before them.

    Each activation range is set by the first batch the model sees, in training or
    inference, so before any training the model computes what `model` computes, up to
    int8 rounding; training then tracks the ranges. Make that first batch a
    representative one (not a single image).

    Train the result with plain `fit`, or as the student of a `tfkd.Distiller`; then
    `tfkd.export_tflite(qat_model, path, quantization="int8")` writes a fully int8
    model from the learned ranges (no calibration data needed). A pruned model (with
    `tfkd.prune` wrappers, or already stripped) keeps its zeros: pruning stops, the
    sparsity stays. The input model is not modified.

    Args:
        model: a Sequential (also one never called, whose layers then build on the
            first call) or functional Keras 3 model; nested models are descended into.
        fold_batch_norm: fold BatchNormalization layers into the preceding Dense or
            convolution. A BatchNormalization that is not folded (`False`, or one with
            no Dense or convolution right before it) would export as float ops, so the
            model is refused. Defaults to `True`.
        decay: moving-average decay of the activation ranges. Defaults to `0.999`.
        preserve_clusters: cluster-preserving QAT, for a model from `tfkd.cluster`
            (stripped or not): each kernel that holds at most 256 distinct values (and
            fewer than its weights) keeps them as its shared values, and training moves
            those values, never a weight off them. The int8 file keeps them per output
            channel; per kernel too where no BatchNormalization is folded into the
            kernel here (cluster with `fold_batch_norm=True` for that) and the kernel has
            one scale (Dense layers). Other kernels train as usual. Needs a built model.
            Defaults to `False`.

    Returns:
        A new Keras model, compiled as `model` was (as `keras.models.clone_model`
        makes it): compile it to choose its optimizer.

    Raises:
        TypeError: `model` is subclassed, or has layers (or `keras.ops` calls such as
            `x + 3.0`, or BatchNormalization layers that do not fold) QAT cannot
            quantize; they are listed. Also for a `fold_batch_norm`
            that is not a bool, or a `decay` that is not a number.
        ValueError: `decay` is outside [0, 1), `model` is already quantization-aware, or
            `preserve_clusters` is set for a model that is not built or has no clustered
            kernel (at most 256 distinct values, fewer than its weights).

    Example:

    ```python
    qat_model = tfkd.quantize.quantize_aware(model)
    qat_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    _ = qat_model.fit(x_train, y_train, epochs=1, verbose=0)
    report = tfkd.export_tflite(qat_model, "qat.tflite", quantization="int8")
    report.float_ops  # []
    ```
    """
    _graph.require_graph_model(
        model,
        "quantize_aware",
        "Wrap the layers of a subclassed model in tfkd.quantize.QuantizeWrapper yourself.",
    )
    fold_batch_norm = _checks.check_flag("fold_batch_norm", fold_batch_norm)
    preserve_clusters = _checks.check_flag("preserve_clusters", preserve_clusters)
    decay = check_decay(decay)
    if preserve_clusters and not model.built:
        raise ValueError(
            "`preserve_clusters=True` reads the clusters from the kernels' values. Received: "
            f"model={model.name!r}, never called. Pass the trained, clustered model."
        )
    if is_quantized(model):
        raise ValueError(
            f"Model {model.name!r} is already quantization-aware. Received: a model with "
            "QuantizeWrapper layers. Call quantize_aware on the float model it came from."
        )
    _checks.check_float32_compute(model, "tfkd.quantize.quantize_aware", makes_layers=True)
    model = _graph.strip_if_wrapped(model)
    check_supported(model, fold_batch_norm=fold_batch_norm)
    if preserve_clusters:
        check_clustered(model)
    plan = _Plan(model, fold_batch_norm, decay, preserve_clusters)
    return _graph.rebuild(model, plan.transform)


def is_quantized(model):
    """Whether `model` contains `QuantizeWrapper` layers (it is quantization-aware).

    Raises:
        TypeError: `model` is not a Keras model.
    """
    _checks.check_keras_model(model)
    return any(isinstance(layer, QuantizeWrapper) for layer in _graph.leaf_layers(model))


def untrained_quantizers(model):
    """Names of the layers whose activation ranges no call or training step has set yet."""
    names = []
    for layer in _graph.leaf_layers(model):
        if not isinstance(layer, QuantizeWrapper):
            continue
        quantizers = [q for q in (layer.input_quantizer, layer.output_quantizer) if q is not None]
        if any(_unset(quantizer) for quantizer in quantizers):
            names.append(layer.name)
    return names


def _unset(quantizer):
    if not quantizer.built:  # in a Sequential model never called
        return True
    trained = int(keras.ops.convert_to_numpy(quantizer.tracked_steps)) > 0
    return not trained and not bool(keras.ops.convert_to_numpy(quantizer.is_set()))


def check_supported(model, fold_batch_norm=True):
    """Raises a TypeError, listing the layers and operations, unless `quantize_aware` can
    quantize every layer of `model` (a graph model) for a fully int8 file. Pruning and
    clustering wrappers are read through, as `quantize_aware` strips them."""
    model = _graph.strip_if_wrapped(model)
    problems = [problem for layer in _graph.leaf_layers(model) for problem in _problems(layer)]
    problems += _unfolded_batch_norms(model, fold_batch_norm)
    operations = [operation.name for operation in _graph.plain_operations(model)]
    masking = [
        layer.name
        for layer in _graph.leaf_layers(model)
        if isinstance(layer, keras.layers.Embedding) and layer.mask_zero
    ]
    if masking and any(name.startswith("not_equal") for name in operations):
        # Keras computes the mask with `not_equal`: not code the user can rewrite.
        operations = [name for name in operations if not name.startswith("not_equal")]
        problems.append(
            f"Embedding {masking} has mask_zero=True, whose mask Keras computes with "
            "keras.ops (not_equal), which QAT cannot quantize; use mask_zero=False (the "
            "model learns to ignore the padding id)."
        )
    if operations:
        problems.append(
            f"Operations {operations} are keras.ops calls on Keras tensors (such as "
            "`x + 3.0`), not layers, so they get no quantized range; write them as layers "
            "(keras.layers.Add, Multiply, Rescaling or Activation)."
        )
    if problems:
        raise TypeError(
            f"quantize_aware cannot quantize every layer of model {model.name!r}, so the "
            "exported file would not be fully int8. Received:\n  "
            + "\n  ".join(problems)
            + "\nReplace these layers, or use post-training quantization: "
            "export_tflite(model, path, quantization='int8', representative_data=...)."
        )


def _unfolded_batch_norms(model, fold_batch_norm):
    """A BatchNormalization that does not fold into the Dense or convolution before it
    (one after an activation or a pool, first in the model, or any with
    `fold_batch_norm=False`) exported as float MUL and ADD ops between a DEQUANTIZE and a
    QUANTIZE: before, such a model trained and exported with no word but `float_ops`."""
    consumers = _graph.consumers(model)
    problems = []
    for layer in _graph.leaf_layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        reason = why_not_folded(layer, consumers) if fold_batch_norm else "fold_batch_norm=False"
        if reason is None:
            continue
        fix = (
            "Put it right after the Dense or convolution it normalizes, that layer with "
            "`activation=None` and its activation (a ReLU layer) after the "
            "BatchNormalization, or remove it"
            if fold_batch_norm
            else "Pass fold_batch_norm=True"
        )
        problems.append(
            f"BatchNormalization {layer.name!r} does not fold into the layer before it "
            f"({reason}), so the int8 file would compute it with float MUL and ADD ops. "
            f"{fix}."
        )
    return problems


def _problems(layer):
    """Why `quantize_aware` cannot quantize `layer` for a fully int8 file (a list)."""
    if _kernels.kernel_name(layer) is None:
        name = type(layer).__name__
        if layer.weights and not isinstance(layer, _WEIGHTED_OK):
            return [f"Layer {layer.name!r} ({name}) has weights tfkd cannot quantize-aware train."]
        reason = _float_without_kernel(layer)
        return [f"Layer {layer.name!r} ({name}) {reason}."] if reason else []
    problems = []
    try:
        QuantizeWrapper(_graph.copy_layer(layer))
    except TypeError as error:
        problems.append(str(error))
    reason = _int8_gap(layer)
    if reason:
        problems.append(f"Layer {layer.name!r} ({type(layer).__name__}) {reason}.")
    return problems


# Activations an Activation layer computes in int8 after quantize_aware (each checked in
# an exported file: elu, selu, softplus, softsign, mish, celu, hard_sigmoid, log_sigmoid,
# hard_shrink, soft_shrink, sparse_plus, squareplus and sparsemax left float ops).
INT8_ACTIVATIONS = (
    "linear", "relu", "relu6", "softmax", "sigmoid", "tanh", "gelu", "silu", "hard_silu",
    "leaky_relu", "exponential", "log_softmax", "hard_tanh", "tanh_shrink",
)  # fmt: skip


def _float_without_kernel(layer):
    """Why the int8 file would compute `layer`, which has no kernel, in float, or None.
    Before, these trained and exported with float ops between a DEQUANTIZE and a QUANTIZE,
    seen only in `float_ops` (found by an exploratory review)."""
    if isinstance(layer, keras.layers.Normalization) and not layer.invert:
        return (
            "normalizes with a float SUB and MUL in the int8 file (the converter quantizes "
            "neither); normalize the data before the model instead, or use post-training "
            "quantization"
        )
    if isinstance(layer, keras.layers.Rescaling) and np.any(np.asarray(layer.offset) != 0):
        return (
            f"adds an offset ({layer.offset}) after its scale, a float ADD in the int8 file "
            "(a Rescaling without an offset is one quantized MUL); scale without an offset, "
            "e.g. Rescaling(1/255) for inputs in [0, 1]"
        )
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Activation) and activation.__name__ not in INT8_ACTIVATIONS:
        return (
            f"applies activation {activation.__name__!r}, which the int8 file would compute "
            f"with float ops; use one of {list(INT8_ACTIVATIONS)}"
        )
    if isinstance(layer, keras.layers.ELU):
        return "has no int8 TFLite kernel (ELU runs in float); use another activation"
    return None


def _int8_gap(layer):
    """Why the int8 file would run `layer` in float, or None."""
    if isinstance(layer, keras.layers.Conv3D):
        return "has no int8 TFLite kernel (CONV_3D runs in float)"
    if max(getattr(layer, "dilation_rate", None) or (1,)) > 1:
        return (
            f"has dilation_rate={layer.dilation_rate}, which the int8 file computes with a "
            "float convolution between SPACE_TO_BATCH_ND and BATCH_TO_SPACE_ND; use "
            "dilation_rate=1 (a larger kernel or strides), or post-training quantization"
        )
    name = _graph.activation_name(layer)
    if name not in (None, "relu", "relu6", "softmax"):
        where = (
            "move it to its own keras.layers.Activation layer"
            if layer.activation.__name__ in INT8_ACTIVATIONS
            else f"it has no int8 kernel: use one of {list(INT8_ACTIVATIONS)}"
        )
        return (
            f"applies activation {layer.activation.__name__!r} inside the layer, which the int8 "
            f"file would run in float; {where}"
        )
    if isinstance(layer, keras.layers.Dense):
        # Known sizes go through a 2D view (`_kernels.on_rows`): int8. Every call counts:
        # `layer.input` is a shared layer's first call's alone.
        for shape in _graph.call_input_shapes(layer):
            if len(shape) > 2 and not _kernels.known_sizes(shape[1:]):
                return (
                    f"reads an input of shape {shape}, whose sizes past the batch are not all "
                    "known, which TFLite runs as a float FULLY_CONNECTED with reshapes; give "
                    "its input known sizes, or flatten or pool before it"
                )
    return None


class _Plan:
    """Decides, from the model's graph, how each layer is wrapped."""

    def __init__(self, model, fold_batch_norm, decay, preserve_clusters=False):
        self.decay = decay
        self.preserve_clusters = preserve_clusters
        self.consumers = _graph.consumers(model)
        # Integer inputs (token ids) are not quantized, nor is what an Embedding reads.
        float_inputs = all("float" in str(tensor.dtype) for tensor in _graph.model_inputs(model))
        self.input_readers = {
            layer
            for layer in _graph.input_consumers(model)
            if float_inputs and not isinstance(layer, keras.layers.Embedding)
        }
        # producer -> BatchNormalization folded into it
        self.folded = foldable_batch_norms(self.consumers) if fold_batch_norm else {}
        self.folded_norms = set(self.folded.values())

    def transform(self, layer):
        if layer in self.folded_norms:
            return FoldedBatchNormalization(name=layer.name), lambda new: None
        has_kernel = _kernels.kernel_name(layer) is not None
        quantize_outputs = self._quantize_outputs(layer)
        quantize_inputs = layer in self.input_readers
        softmax = _graph.activation_name(layer) == "softmax"
        if not (has_kernel or quantize_outputs or quantize_inputs or softmax):
            return None
        norm = self.folded.get(layer)
        wrapper = QuantizeWrapper(
            _graph.copy_layer(layer),
            batch_norm=None if norm is None else _graph.copy_layer(norm),
            quantize_inputs=quantize_inputs,
            quantize_outputs=quantize_outputs,
            preserve_sparsity=has_kernel and _has_zeros(layer),
            decay=self.decay,
            clusters=_clusters(layer) if has_kernel and self.preserve_clusters else None,
        )
        return wrapper, lambda new: _copy_weights(new, layer, norm)

    def _quantize_outputs(self, layer):
        if isinstance(layer, _SAME_SCALE) or isinstance(layer, keras.layers.Embedding):
            return False
        if _graph.activation_name(layer) == "softmax" and _kernels.kernel_name(layer) is None:
            return False  # The wrapper gives softmax outputs TFLite's fixed range.
        users = self.consumers.get(self.folded.get(layer, layer), [])
        # A BatchNormalization folded earlier (tfkd.cluster's fold_batch_norm) left a
        # placeholder that passes its input on, an Identity once stripped: look through it.
        while len(users) == 1 and isinstance(users[0], _PASS_THROUGH):
            users = self.consumers.get(users[0], [])
        fusable = isinstance(layer, _FUSING) or _kernels.kernel_name(layer) is not None
        fused = users and all(_is_fused_activation(user) for user in users)
        return not (fusable and fused)


def _is_fused_activation(layer):
    activation_layers = (keras.layers.ReLU, keras.layers.Activation)
    fused = _graph.activation_name(layer) in _FUSED_ACTIVATIONS
    return isinstance(layer, activation_layers) and fused


def _clusters(layer):
    """The distinct values of `layer`'s kernel when they are few enough to be clusters
    (at most 256, and fewer than the weights), else None."""
    count = _distinct_count(layer)
    size = int(np.prod(_kernels.kernel(layer).shape))
    return count if 2 <= count <= _MOST_CLUSTERS and count < size else None


def check_clustered(model):
    """Raises a ValueError unless some kernel of `model` holds clusters (at most 256
    distinct values, fewer than its weights), naming each kernel's count. Clustering
    wrappers are read through (`tfkd.cluster` models, stripped or not)."""
    model = _graph.strip_if_wrapped(model)
    kernels = [layer for layer in _graph.leaf_layers(model) if _kernels.kernel_name(layer)]
    if not any(_clusters(layer) for layer in kernels):
        counts = {layer.name: _distinct_count(layer) for layer in kernels}
        raise ValueError(
            "`preserve_clusters=True` keeps the shared values of clustered kernels, and no "
            f"kernel of model {model.name!r} is clustered (at most {_MOST_CLUSTERS} distinct "
            "values, fewer than its weights). "
            f"Received: preserve_clusters=True; distinct values per kernel: {counts}. Cluster "
            "the model first (tfkd.cluster.cluster_weights, per_channel=False if the kernels "
            "have many output channels), or pass preserve_clusters=False."
        )


def _distinct_count(layer):
    return len(np.unique(keras.ops.convert_to_numpy(_kernels.kernel(layer))))


def _has_zeros(layer):
    if not layer.built:  # a Sequential model never called: no weights yet
        return False
    kernel = keras.ops.convert_to_numpy(_kernels.kernel(layer))
    return bool((kernel == 0).any())


def _copy_weights(wrapper, layer, norm):
    _graph.set_weights(wrapper.layer, layer.get_weights())
    if wrapper.clusters is not None:
        wrapper.keep_clusters()
    if norm is not None:
        wrapper.batch_norm.set_weights(norm.get_weights())
    if wrapper.preserve_sparsity:
        wrapper.keep_zeros()
