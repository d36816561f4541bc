"""How LiteRT sizes the ops that slide a window over their input, as it prepares them: the
rules `_tflite_ops.Sizes` follows for CONV_2D, DEPTHWISE_CONV_2D, CONV_3D, AVERAGE_POOL_2D,
MAX_POOL_2D and L2_POOL_2D, and TRANSPOSE_CONV and CONV_3D_TRANSPOSE (their constant output
shape, and their col2im) (the other ops': `_tflite_rules`).

LiteRT makes each output [batch, *spatial, channels] whatever shape the file declares,
each spatial size from the input's, the window's, the stride, the dilation and the padding
(`ComputeOutSize` in LiteRT's kernels/padding.h), the channels from the filter's shape
(CONV_2D: [out, height, width, in]; DEPTHWISE_CONV_2D: [1, height, width, out]; CONV_3D:
[depth, height, width, in, out]) or the input's (pools). A 5,284-byte file whose CONV_2D
filter had 600 output channels, its output declared [1, 1, 1, 1], made LiteRT allocate
2.5 GB at load ([1, 1024, 1024, 600] float32; touched when run).

Its kernels also allocate scratch as they prepare a convolution: LiteRT's CONV_2D and
CONV_3D an im2col buffer, the window's values for each output pixel, unless the window is
1x1 with strides and dilations of 1 (a 468-byte file asked for 8 GiB: a 11x11 window over
64 channels at 512x512), and XNNPACK's CONV_2D and DEPTHWISE_CONV_2D a pointer (8 bytes)
for each output pixel and each position of the window (a 32x32 window over 256x256: 512
MiB, allocated and touched). The larger of the two is held to a tensor's limits; im2col
only where LiteRT's kernel may prepare the op (`_xnnpack_takes`: with XNNPACK, a float32
CONV_2D whose filter the file holds is XNNPACK's), and for every one when a file runs
without XNNPACK, checked again then (`_interpreter._builtin_interpreter`).

XNNPACK's pools allocate an indirection buffer too as they are prepared (LiteRT's own
allocate none; XNNPACK takes AVERAGE_POOL_2D and MAX_POOL_2D whose stride is at most the
window, copies through a 1x1 one, and leaves L2_POOL_2D): a row of pointers, the window's
for the first output pixel of a row and a stride more of its columns for each other, for
each output row of a max pool (touched at load: 1,009 rows of 16 x 1,024 pointers for a
16x16 window at 1024x1024, 132 MB), and for an average pool a single row, plus one for
each output row the padding reaches, even rows past the output's (a 320x320 window at
8x1024 reserved 320 rows, 1.1 GB; at 1024x1024 touched them), and a float32 a pixel for
its SAME padding's divisors. Each is held to a tensor's limits (`_pool_scratch`).

The transposed convolutions' kernels allocate a col2im as they prepare an op whose output
shape is constant (TRANSPOSE_CONV, CONV_3D_TRANSPOSE), and XNNPACK, which takes a
TRANSPOSE_CONV where it can, an indirection buffer instead; the larger is held to a
tensor's limits (`_transposed_scratch`).
"""

import functools
import math
import struct

from tfkd.export._tflite_rules import CODES, LARGEST, made, unknown

_INT8, _INT32 = struct.Struct("<b"), struct.Struct("<i")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # LiteRT computes sizes in C++ ints
_POINTER_BYTES = 8
_SAME, _VALID = 0, 1  # schema.fbs's Padding
_FLOAT32 = 0  # schema.fbs's TensorType
_INTEGER_WIDTHS = {3: 4, 9: 4, 7: 8}  # uint8, int8: int32 accumulators; int16: int64
_XNNPACK_ACTIVATIONS = (0, 1, 2, 3)  # ActivationFunctionType: NONE, RELU, RELU_N1_TO_1, RELU6


def _options(op, kind, fields):
    """The padding and the int32 `fields` (`[(field, default)]`) of an op's options, as
    LiteRT reads them: zeros without the table (padding: neither SAME nor VALID), the
    schema's default for a field the table leaves out."""
    table = op.options(1, kind)
    if table is None:
        return -1, [0] * len(fields)
    content, where = table.content, table.where
    values = [(where(f), d) for f, d in fields]
    return table.scalar(0, _INT8), [
        _INT32.unpack_from(content, at)[0] if at else d for at, d in values
    ]


def _out_size(size, window, stride, dilation, padding):
    """LiteRT's ComputeOutSize, or more: a stride of 0 (an empty output) counts as 1, a
    padding neither SAME nor VALID (an empty output) as the larger of the two, and a size
    whose arithmetic would overflow LiteRT's ints as 2**31 - 1."""
    spread = (window - 1) * dilation
    stride = abs(stride) or 1
    same, valid = size + stride - 1, size + stride - spread - 1
    if min(spread, valid) < _INT_MIN or max(spread + 1, same, valid) > _INT_MAX:
        return LARGEST
    counted = {_SAME: [same], _VALID: [valid]}.get(padding, [same, valid])
    return min(max(abs(value) // stride for value in counted), LARGEST)


def _windowed(sizes, windows, padding, strides, dilations, channels):
    """The output ([batch, *spatial, channels]) and its pixels (batch times spatial), or
    None where LiteRT refuses the input's rank. An input whose elements alone are known
    (its shape computed by an op not modelled) makes at most one pixel an element, where
    strides, dilations and windows are at least 1 and the padding SAME or VALID."""
    dims = sizes.shape(0)
    if dims is None:
        normal = padding in (_SAME, _VALID) and min(*windows, *strides, *dilations) >= 1
        pixels = sizes.count(0) if normal and sizes.count(0) else LARGEST
        return unknown(pixels * channels), pixels
    if len(dims) != len(windows) + 2:
        return None, 0
    spatial = [
        _out_size(size, window, stride, dilation, padding)
        for size, window, stride, dilation in zip(dims[1:-1], windows, strides, dilations)
    ]
    return made([dims[0], *spatial, channels]), dims[0] * math.prod(spatial)


def _scratch(sizes, pixels, windows, im2col_values, pointers):
    """Counts the larger of LiteRT's im2col (`im2col_values` an output pixel, 0: none) and
    XNNPACK's indirection buffer (`pointers`: whether XNNPACK's kernel has one)."""
    x, weights = (sizes.tensors[sizes.input(p)] for p in (0, 1))
    # A float32 input with int8 weights (hybrid): LiteRT's im2col holds the weights' type.
    bits = weights.bits if x.type == 0 and weights.type in (3, 9) else x.bits
    taps = math.prod(windows)
    im2col, indirection = pixels * im2col_values * bits // 8, pixels * taps * _POINTER_BYTES
    if max(im2col, indirection * pointers) == 0:
        return
    sizes.scratch(
        max(im2col, indirection * pointers),
        f"needs scratch for its {'x'.join(map(str, windows))} window at each of its {pixels} "
        f"output pixels (LiteRT's im2col: {im2col_values} {x.type_name} values a pixel"
        + (f"; XNNPACK's indirection: {taps} pointers a pixel)" if pointers else ")"),
    )


def _filter_shape(sizes, rank):
    """The filter's shape, else `(None, what the rule returns)`: an output as large as
    LiteRT's sizes go where the filter's elements alone are known (its shape made by an op
    not modelled: its sizes, which size the output and the window, could be any; a filter
    of 258 ones made so, [258, 1, 1, 1] to LiteRT, gave a [1, 1024, 1024, 258] output),
    None (not modelled) where it is absent or not of rank `rank`."""
    weights = sizes.shape(1)
    if sizes.input(1) >= 0 and weights is None:
        return None, unknown(LARGEST)
    if weights is None or len(weights) != rank:
        return None, None
    return weights, None


def _needs_im2col(windows, strides, dilations):
    return math.prod(windows) != 1 or any(value != 1 for value in (*strides, *dilations))


def _xnnpack_takes(sizes, op):
    """Whether XNNPACK's delegate surely runs this CONV_2D, so LiteRT's kernel, and its
    im2col, is never prepared: float32 data, a filter and bias that the file holds (or
    DEQUANTIZE makes from float16 it holds), an activation XNNPACK fuses (none, ReLU,
    ReLU -1..1, ReLU6). Any other CONV_2D may fall to LiteRT's kernel, and a file that
    runs without the delegate (`builtin_kernels`) runs every one there. Counting im2col
    for every CONV_2D refused tfkd's own export of a 5x5 Conv2D over 512x512x64 (1.7 GB
    of im2col that XNNPACK never allocates)."""
    if sizes.checker.builtin_kernels:
        return False
    filter_and_bias = [i for i in sizes.inputs[1:3] if i >= 0]
    table = op.options(1, 1)
    activation = table.scalar(3, _INT8) if table is not None else 0
    return (
        all(i in sizes.static for i in filter_and_bias)
        and all(
            sizes.tensors[i].type == _FLOAT32 for i in sizes.inputs[:1] + sizes.outputs if i >= 0
        )
        and all(sizes.tensors[i].type == _FLOAT32 for i in filter_and_bias)
        and activation in _XNNPACK_ACTIVATIONS
    )


def _conv_2d(sizes, op):
    weights, otherwise = _filter_shape(sizes, 4)
    if weights is None:
        return otherwise
    padding, (*strides, dilation_h, dilation_w) = _options(op, 1, [(2, 0), (1, 0), (5, 1), (4, 1)])
    windows, dilations = weights[1:3], [dilation_h, dilation_w]
    output, pixels = _windowed(sizes, windows, padding, strides, dilations, weights[0])
    if output is not None:
        im2col = (
            math.prod(windows) * weights[3]
            if _needs_im2col(windows, strides, dilations) and not _xnnpack_takes(sizes, op)
            else 0
        )
        _scratch(sizes, pixels, windows, im2col, pointers=True)
    return output


def _depthwise_conv_2d(sizes, op):
    weights, otherwise = _filter_shape(sizes, 4)
    if weights is None:
        return otherwise
    # The output's channels are the filter's last size (depth_multiplier times the input's).
    padding, (*strides, dilation_h, dilation_w) = _options(op, 2, [(2, 0), (1, 0), (6, 1), (5, 1)])
    windows = weights[1:3]
    output, pixels = _windowed(
        sizes, windows, padding, strides, [dilation_h, dilation_w], weights[3]
    )
    if output is not None:
        _scratch(sizes, pixels, windows, 0, pointers=True)
    return output


def _conv_3d(sizes, op):
    weights, otherwise = _filter_shape(sizes, 5)
    if weights is None:
        return otherwise
    padding, values = _options(op, 106, [(1, 0), (3, 0), (2, 0), (5, 1), (7, 1), (6, 1)])
    windows, strides, dilations = weights[:3], values[:3], values[3:]
    output, pixels = _windowed(sizes, windows, padding, strides, dilations, weights[4])
    if output is not None and _needs_im2col(windows, strides, dilations):
        _scratch(sizes, pixels, windows, math.prod(windows) * weights[3], pointers=False)
    return output


def _conv_3d_transpose(sizes, op):
    shape = sizes.sizes(0)
    return None if shape is None else _transposed(sizes, shape, 5, xnnpack=False)


def _transpose_conv(sizes, op):
    """TRANSPOSE_CONV: its constant output shape, or where XNNPACK may run it with VALID
    padding the larger XNNPACK makes whatever that shape says: for each spatial size its
    stride times the input's less one, plus the window, plus what the shape has past a
    multiple of the stride (a 524-byte file whose shape said [1, 1, 1, 1], a 1x1 window at
    a stride of 64 over 64x64 pixels, made [1, 4033, 4033, 1]; LiteRT's kernel refuses a
    shape that does not make its input's)."""
    shape = sizes.sizes(0)
    if shape is None:
        return None
    x, weights = sizes.shape(2), sizes.shape(1)
    padding, strides = _options(op, 49, [(2, 0), (1, 0)])
    ranks = [len(dims) if dims is not None else 0 for dims in (shape, x, weights)]
    xnnpack = padding in (_SAME, _VALID) and not sizes.checker.builtin_kernels
    if xnnpack and padding == _VALID and ranks == [4, 4, 4]:
        for axis, stride in zip((1, 2), strides):
            stride, window = abs(stride) or 1, weights[axis]
            made_by = stride * (x[axis] - 1) + window + (shape[axis] - window) % stride
            shape[axis] = min(max(shape[axis], made_by), LARGEST)
    return _transposed(sizes, shape, 4, xnnpack)


def _transposed(sizes, shape, rank, xnnpack):
    """TRANSPOSE_CONV (`rank` 4) and CONV_3D_TRANSPOSE (5) of the constant output `shape`
    (a computed one: sized when the op runs, as declared), and the scratch prepared for it
    (`_transposed_scratch`; `xnnpack`: whether XNNPACK may run it, its padding SAME or
    VALID). Shapes not followed: their elements."""
    x, weights = sizes.shape(2), sizes.shape(1)
    pixels = math.prod(x[1:-1]) if x is not None and len(x) == rank else sizes.count(2)
    whole = weights is not None and len(weights) == rank
    taps = math.prod(weights[: rank - 1]) if whole else sizes.count(1)
    window = math.prod(weights[1:3]) if whole else sizes.count(1)
    image = math.prod(shape[1:-1]) if len(shape) == rank else math.prod(shape)
    _transposed_scratch(sizes, pixels, taps, math.prod(shape), window * image * xnnpack)
    return made(shape)


def _transposed_scratch(sizes, pixels, taps, outputs, pointers):
    """Counts the larger of LiteRT's kernel's scratch, a col2im of a float32 (int32 for
    integers) for each input pixel of one image and each of the filter's sizes but its
    input channels (a 131,612-byte CONV_3D_TRANSPOSE file reserved 2.15 GB; a 66,056-byte
    TRANSPOSE_CONV one 1 GiB), and for integers an int32 (int16: int64) accumulator for
    each output value; and XNNPACK's indirection buffer (TRANSPOSE_CONV's: a pointer for
    each output pixel of one image and each position of the window; a 16,908-byte file's
    64x64 window touched 528 MB), which runs TRANSPOSE_CONV instead where it takes it."""
    i = sizes.input(2)
    integer = i >= 0 and sizes.tensors[i].type in _INTEGER_WIDTHS
    width = _INTEGER_WIDTHS[sizes.tensors[i].type] if integer else 0
    kernel = pixels * taps * 4 + outputs * width
    if max(kernel, pointers) == 0:
        return
    sizes.scratch(
        max(kernel, pointers * _POINTER_BYTES),
        f"needs scratch for its col2im: {taps} {'int32' if integer else 'float32'} values for "
        f"each of its {pixels} input pixels"
        + (f", and an accumulator for each of its {outputs} output values" if integer else "")
        + (f", or XNNPACK's indirection: {pointers} pointers" if pointers else ""),
    )


def _pool_2d(sizes, op, average=None):
    """AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D: the input's channels; XNNPACK's scratch
    where its delegate may take the pool (`average`: whether it is XNNPACK's average or its
    max pooling; None: XNNPACK takes no L2 pool, and LiteRT's pools allocate none)."""
    padding, (*strides, window_h, window_w) = _options(op, 5, [(2, 0), (1, 0), (4, 0), (3, 0)])
    windows = [window_h, window_w]
    dims = sizes.shape(0)
    channels = dims[-1] if dims else 1  # unknown dims: the input's elements, one a pixel
    output, pixels = _windowed(sizes, windows, padding, strides, [1, 1], channels)
    xnnpack = average is not None and _xnnpack_pools(sizes, windows, strides, padding)
    if output is not None and xnnpack:
        _pool_scratch(sizes, output[0][0], pixels, windows, strides, padding, average)
    return output


def _xnnpack_pools(sizes, windows, strides, padding):
    """Whether XNNPACK's delegate may take the pool: it refuses a stride of 0 or larger than
    the window and a padding neither SAME nor VALID (LiteRT's kernel runs those), and runs
    a 1x1 window as a copy."""
    takes = all(1 <= stride <= window for stride, window in zip(strides, windows))
    known = padding in (_SAME, _VALID) and not sizes.checker.builtin_kernels
    return known and takes and math.prod(windows) > 1


def _pool_scratch(sizes, output, pixels, windows, strides, padding, average):
    """Counts XNNPACK's indirection buffer, a row of pointers (a window's first position,
    then `stride` more columns of it at each output pixel along) for each output row of a
    max pool, and for an average pool only one row plus one for each output row the
    padding reaches (of the output or not: a 320x320 window at 8x1024 reserved 320 rows,
    1.1 GB); an average pool's SAME padding adds a float32 divisor for each output pixel.
    The input's elements alone known: at most a row of the window's positions for each
    pixel (an average pool: for each row of the window)."""
    (window_h, window_w), same = windows, padding == _SAME
    if output is None:
        row, rows, divisors = pixels * math.prod(windows), window_h if average else 1, pixels
    else:
        _, out_h, out_w, _ = output
        row, divisors = window_h * (window_w + (out_w - 1) * strides[1]), out_h * out_w
        height = sizes.shape(0)[1]
        rows = _average_rows(height, out_h, window_h, strides[0], same) if average else out_h
    nbytes = rows * row * _POINTER_BYTES + (divisors * 4 if average and same else 0)
    sizes.scratch(
        nbytes,
        f"needs scratch for its {window_h}x{window_w} window (XNNPACK's indirection: "
        f"{rows}x{row} pointers" + ("; a float32 divisor a pixel)" if average and same else ")"),
    )


def _average_rows(height, out_height, window, stride, same):
    """The rows of pointers XNNPACK's average pooling holds: one for the output rows the
    padding leaves alone, and one for each that the padding above or below reaches."""
    if not same:
        return 1
    padding = (out_height - 1) * stride + window - height
    top = padding // 2
    return -(-top // stride) + -(-(padding - top) // stride) + 1


RULES = {
    CODES["CONV_2D"]: _conv_2d,
    CODES["DEPTHWISE_CONV_2D"]: _depthwise_conv_2d,
    CODES["CONV_3D"]: _conv_3d,
    CODES["TRANSPOSE_CONV"]: _transpose_conv,
    CODES["CONV_3D_TRANSPOSE"]: _conv_3d_transpose,
    CODES["AVERAGE_POOL_2D"]: functools.partial(_pool_2d, average=True),
    CODES["MAX_POOL_2D"]: functools.partial(_pool_2d, average=False),
    CODES["L2_POOL_2D"]: _pool_2d,
}
