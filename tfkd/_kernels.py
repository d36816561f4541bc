"""Which weight of a layer is its kernel, and the layer's forward pass with a replacement kernel.

Pruning and quantization-aware training both run a layer with a transformed kernel
(masked, or fake-quantized). Keras 3 layers read their kernel variable inside `call`,
so tfkd re-implements the forward pass of the layers it supports with `keras.ops`,
mirroring `keras.layers.*.call`.
"""

import keras
from keras import ops

# Order matters: SeparableConv2D and DepthwiseConv2D are not subclasses of Conv2D in Keras 3,
# but check the specific types first anyway.
_KERNEL_NAMES = (
    (keras.layers.SeparableConv1D, "pointwise_kernel"),
    (keras.layers.SeparableConv2D, "pointwise_kernel"),
    (keras.layers.DepthwiseConv1D, "kernel"),
    (keras.layers.DepthwiseConv2D, "kernel"),
    (keras.layers.Conv1D, "kernel"),
    (keras.layers.Conv2D, "kernel"),
    (keras.layers.Conv3D, "kernel"),
    (keras.layers.Dense, "kernel"),
    (keras.layers.Embedding, "embeddings"),
)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
SUPPORTED_TYPES = tuple(layer_type for layer_type, _ in _KERNEL_NAMES)


def kernel_name(layer):
    """The attribute name of `layer`'s kernel, or None when tfkd cannot transform it."""
    if isinstance(layer, _TRANSPOSED):
        return None
    for layer_type, name in _KERNEL_NAMES:
        if isinstance(layer, layer_type):
            return name
    return None


def kernel(layer):
    """`layer`'s kernel variable (the weight `kernel_name` names)."""
    return getattr(layer, kernel_name(layer))


def kernel_in_use(layer):
    """`(layer, kernel)`: the layer that computes and the kernel it computes with, before
    any fake quantization; a tfkd wrapper answers for itself (`kernel_in_use()`: its inner
    layer, the kernel with its pruned zeros). None for a layer with no kernel tfkd
    transforms, or not built yet."""
    if hasattr(layer, "kernel_in_use"):
        return layer.kernel_in_use()
    if kernel_name(layer) is None or not layer.built:
        return None
    return layer, kernel(layer)


def unsupported_reason(layer):
    """Why `layer` cannot run with a replacement kernel, or None when it can."""
    if kernel_name(layer) is None:
        return (
            f"layer type {type(layer).__name__} has no kernel tfkd can transform; supported: "
            f"{', '.join(sorted({t.__name__ for t in SUPPORTED_TYPES}))}"
        )
    if getattr(layer, "quantization_mode", None):
        return f"it is already quantized (quantization_mode={layer.quantization_mode!r})"
    if getattr(layer, "lora_enabled", False):
        return "it has LoRA enabled; merge or disable LoRA first"
    if getattr(layer, "groups", 1) != 1:
        return f"grouped convolutions (groups={layer.groups}) are not supported"
    return None


def input_channel_axis(layer):
    """The kernel axis that runs over input channels, or None where there is none."""
    depthwise = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    if isinstance(layer, (keras.layers.Embedding, *depthwise)):
        return None
    return -2


def forward(layer, inputs, kernel, bias=None, activation=True):
    """Runs `layer` on `inputs` as if its kernel were `kernel` (and its bias `bias`, if given).

    With `activation=False` the layer's activation is left out.
    """
    if isinstance(layer, keras.layers.Embedding):
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        return ops.cast(take_rows(kernel, inputs), layer.compute_dtype)
    if isinstance(layer, keras.layers.Dense):
        return _finish(layer, _rows_times(inputs, kernel), bias, None, activation)
    return _finish(layer, _convolve(layer, inputs, kernel), bias, layer.rank, activation)


def _rows_times(inputs, kernel):
    return on_rows(inputs, lambda rows: ops.matmul(rows, kernel))


def on_rows(inputs, function):
    """`function(inputs)` for a function of the last axis alone (a Dense's), through a 2D
    view of the rows where `inputs` has rank 3 or more and `known_sizes`: LiteRT then runs
    a Dense as one FULLY_CONNECTED between RESHAPEs (in int8 too), where the matmul of a
    sequence reads its shape at run time and stays in float. Export's Dense and the
    wrappers' forward pass use it; `quantize_aware` refuses what it leaves alone."""
    sizes = tuple(inputs.shape[1:])
    if len(sizes) < 2 or not known_sizes(sizes):
        return function(inputs)
    outputs = function(ops.reshape(inputs, (-1, sizes[-1])))
    return ops.reshape(outputs, (-1, *sizes[:-1], outputs.shape[-1]))


def known_sizes(sizes):
    """Whether `sizes` (a shape past its batch axis) are all known: ints above 0."""
    return bool(sizes) and all(isinstance(size, int) and size > 0 for size in sizes)


def take_rows(table, ids):
    """The rows `ids` of `table`: an Embedding's lookup (export traces it without the
    wrap of negative ids that `keras.ops.take` adds)."""
    return ops.take(table, ids, axis=0)


def _convolve(layer, inputs, kernel):
    padding = layer.padding
    if padding == "causal":
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        time_axis = 1 if layer.data_format == "channels_last" else 2
        pad_width = [[0, 0], [0, 0], [0, 0]]
        pad_width[time_axis] = [left, 0]
        inputs = ops.pad(inputs, pad_width)
        padding = "valid"
    common = dict(
        strides=layer.strides,
        padding=padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return ops.separable_conv(inputs, layer.depthwise_kernel, kernel, **common)
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return ops.depthwise_conv(inputs, kernel, **common)
    return ops.conv(inputs, kernel, **{**common, "strides": list(layer.strides)})


def _finish(layer, outputs, bias, rank, activation):
    if bias is None:
        bias = getattr(layer, "bias", None)
    if bias is not None:
        if rank is not None and layer.data_format == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * rank)
        outputs = ops.add(outputs, bias)
    if activation and layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs
