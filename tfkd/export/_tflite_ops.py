"""What a `.tflite` file's ops make LiteRT allocate, read from the tables `_tflite_file`
checked, before LiteRT sees the bytes (the subgraphs they run: `_tflite_subgraphs`).

Sizes. When LiteRT prepares an op (`allocate_tensors`) it sizes the op's outputs itself,
whatever shapes the file declares for them, then allocates them: a 392-byte file whose
TILE has the constant multiples [32768, 4096] made it reserve 512 MiB at load (and touch
1 GiB when run; [32768, 16384]: 2 GiB), one whose tensors all declare [1, 4] grew [1, 4]
to [131072, 128] through TILE, ADD and TILE, and a float32 RESHAPE to rank 61 crashed the
process (SIGSEGV in XNNPACK). `Sizes` follows each subgraph's ops in their order, as LiteRT
prepares them, sizing each output from its inputs' sizes (a graph's inputs, constants and
variables as declared) and constant data, and holds each to the limits of a declared
tensor (`_tflite_file.MAX_TENSOR_BYTES` and `MAX_TOTAL_BYTES`, for one example; `MAX_RANK`):

- sized from constant data (int32 or int64 values the file holds): TILE, BROADCAST_TO,
  FILL, PAD, PADV2, MIRROR_PAD, STABLEHLO_PAD (its options), RESIZE_BILINEAR,
  RESIZE_NEAREST_NEIGHBOR, SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND, DILATE, ONE_HOT, RANGE,
  TRANSPOSE_CONV, RANDOM_UNIFORM, RANDOM_STANDARD_NORMAL, MULTINOMIAL; RESHAPE, SQUEEZE
  and EXPAND_DIMS keep their input's elements (LiteRT refuses a RESHAPE to another number);
- sized from their inputs' shapes, which they can multiply: the broadcasting ops (ADD,
  MUL, LESS, SELECT_V2...: [16384, 1] + [1, 8192] is 512 MiB), FULLY_CONNECTED,
  BATCH_MATMUL, GATHER, GATHER_ND, EMBEDDING_LOOKUP, CONCATENATION, TRANSPOSE, and the
  ops that keep their input's shape (SOFTMAX, RELU, QUANTIZE, CAST...);
- any other op (CONV_2D, MEAN, REVERSE_V2, a custom op...): its outputs as declared, times
  the most any of its inputs grew past its declared size (the elements, not the shape:
  a bound for an op whose output grows as its inputs do).

Not covered:
- an output sized from values the graph computes, not the file's constants (TILE's
  multiples made by an ADD; TRANSPOSE_CONV's output shape from SHAPE and PACK, as Keras
  exports it for an open batch): LiteRT sizes it when the op runs (`invoke`), from data
  (such a TILE of 512 MiB passes, and allocated when run);
- an output that its declared shape and an op not listed above size: a CONV_2D whose
  filter has a million output channels, declaring a small output;
- the scratch buffers kernels allocate for themselves (CONV_2D's im2col);
- the sizes a WHILE, IF or CALL_ONCE gives the subgraphs it runs (each subgraph is
  followed from the sizes it declares for its inputs).
"""

import math

import numpy as np


class Refused(Exception):
    """A file whose tables say something LiteRT must not be given."""


def _codes(text):
    """`{code: name}` of "NAME=code" words: LiteRT's builtin operator codes (schema.fbs's
    BuiltinOperator)."""
    return {int(code): name for name, code in (word.split("=") for word in text.split())}


# Ops whose output keeps the shape of their first input.
_UNARY = _codes("""
    ABS=101 ADD_N=106 CAST=53 CEIL=104 COS=108 DEQUANTIZE=6 ELU=111 EXP=47 FAKE_QUANT=80
    FLOOR=8 GELU=150 HARD_SWISH=117 L2_NORMALIZATION=11 LEAKY_RELU=98
    LOCAL_RESPONSE_NORMALIZATION=13 LOG=73 LOG_SOFTMAX=50 LOGICAL_NOT=87 LOGISTIC=14 NEG=59
    QUANTIZE=114 RELU=19 RELU6=21 RELU_0_TO_1=152 RELU_N1_TO_1=20 ROUND=116 RSQRT=76
    SIGN=158 SIN=66 SOFTMAX=25 SQRT=75 SQUARE=92 TANH=28 ZEROS_LIKE=93
""")
# Ops whose output is their inputs' shapes broadcast together.
_BROADCASTING = _codes("""
    ADD=0 SUB=41 MUL=18 DIV=42 FLOOR_DIV=90 FLOOR_MOD=95 MAXIMUM=55 MINIMUM=57 POW=78
    SQUARED_DIFFERENCE=99 LESS=58 LESS_EQUAL=63 GREATER=61 GREATER_EQUAL=62 EQUAL=71
    NOT_EQUAL=72 LOGICAL_AND=86 LOGICAL_OR=84 PRELU=54 ATAN2=156 BITWISE_XOR=160
    RIGHT_SHIFT=161 SELECT=64 SELECT_V2=123
""")
_NAMES = {
    **_UNARY,
    **_BROADCASTING,
    **_codes("""
        RESHAPE=22 SQUEEZE=43 EXPAND_DIMS=70 CONCATENATION=2 FULLY_CONNECTED=9
        BATCH_MATMUL=126 GATHER=36 GATHER_ND=107 EMBEDDING_LOOKUP=7 TRANSPOSE=39 TILE=69
        BROADCAST_TO=130 FILL=94 PAD=34 PADV2=60 MIRROR_PAD=100 STABLEHLO_PAD=195
        RESIZE_BILINEAR=23 RESIZE_NEAREST_NEIGHBOR=97 SPACE_TO_BATCH_ND=38
        BATCH_TO_SPACE_ND=37 DILATE=203 ONE_HOT=85 RANGE=96 TRANSPOSE_CONV=67
        RANDOM_UNIFORM=148 RANDOM_STANDARD_NORMAL=146 MULTINOMIAL=149 WHILE=119 IF=118
        CALL_ONCE=129 CALL=31 STABLEHLO_WHILE=200 STABLEHLO_CASE=209 STABLEHLO_COMPOSITE=206
        STABLEHLO_REDUCE=174 STABLEHLO_REDUCE_WINDOW=198 STABLEHLO_SORT=199
        STABLEHLO_SCATTER=190
    """),
}

_INT_TYPES = {2: "<i4", 4: "<i8"}  # int32, int64
_NUMBER_TYPES = {**_INT_TYPES, 0: "<f4", 10: "<f8"}  # and float32, float64 (RANGE's)
_LARGEST = 2**31 - 1  # LiteRT keeps sizes in 32 bits


def op_name(code):
    return _NAMES.get(code, f"builtin op {code}")


class Sizes:
    """Follows one subgraph's sizes op by op (see the module's docstring)."""

    def __init__(self, checker, where, tensors):
        self.checker, self.where, self.tensors = checker, where, tensors
        self.dims = [tensor.dims for tensor in tensors]  # None: only `elements` is known
        self.elements = [tensor.elements for tensor in tensors]
        self.counted = [tensor.counted for tensor in tensors]

    def follow(self, index, code, operator, inputs, outputs):
        self.inputs, self.outputs = inputs.tolist(), outputs.tolist()
        rule = _RULES.get(code)
        made = rule(self, operator) if rule is not None else None
        if made is None:  # not modelled, or sized from data when it runs: as declared
            made = self.as_declared(self.outputs)
        for tensor, (dims, elements) in zip(self.outputs, made):
            self.set(tensor, dims, elements, index, code)

    def as_declared(self, outputs):
        growth = 1
        for i in self.inputs:
            if i >= 0 and self.elements[i] > self.tensors[i].elements:
                growth = max(growth, -(-self.elements[i] // self.tensors[i].elements))
        if growth == 1:
            return [(self.tensors[t].dims, self.tensors[t].elements) for t in outputs]
        return [(None, self.tensors[t].elements * growth) for t in outputs]

    def set(self, tensor, dims, elements, index, code):
        info = self.tensors[tensor]
        if info.data is not None:  # LiteRT refuses to resize a constant ("fixed-size")
            return
        self.dims[tensor], self.elements[tensor] = dims, elements
        nbytes = elements * info.bits // 8
        over_rank = dims is not None and len(dims) > self.checker.max_rank
        if nbytes <= self.counted[tensor] and not over_rank:
            return
        made = (
            f"op {index} ({op_name(code)}) of {self.where} makes tensor {tensor} "
            f"({info.name[:60]!r}) "
            + (f"of shape {dims}" if dims is not None else f"of up to {elements} elements")
        )
        if over_rank:
            raise Refused(
                f"{made}, of rank {len(dims)}; LiteRT's kernels take at most "
                f"{self.checker.max_rank} dimensions"
            )
        self.checker.add_bytes(nbytes - self.counted[tensor], nbytes, f"{made} of {info.type_name}")
        self.counted[tensor] = nbytes

    # What rules read of an op's inputs.

    def input(self, position):
        return self.inputs[position] if position < len(self.inputs) else -1

    def shape(self, position):
        """The dims of an input, or None when only its elements are known (or it is absent)."""
        i = self.input(position)
        return self.dims[i] if i >= 0 else None

    def count(self, position):
        i = self.input(position)
        return self.elements[i] if i >= 0 else 0

    def values(self, position, types=_INT_TYPES):
        """The values of a constant input, as Python numbers; None when it is computed."""
        i = self.input(position)
        info = self.tensors[i] if i >= 0 else None
        if info is None or info.data is None or info.type not in types:
            return None
        start, length = info.data
        form = np.dtype(types[info.type])
        count = length // form.itemsize
        if count > 4 * self.checker.max_rank:  # sizes, paddings, a scalar: a few values
            raise Refused(
                f"{self.where}'s tensor {i} ({info.name[:60]!r}), which an op reads as "
                f"sizes, holds {count} values; LiteRT's kernels take at most "
                f"{self.checker.max_rank} dimensions"
            )
        return np.frombuffer(self.checker.content, form, count, start).tolist()

    def sizes(self, position):
        """A constant input's values as sizes: a negative one counts as its absolute value
        (LiteRT's TILE, FILL, PAD... refuse it, and two multiplied would be positive), one
        past 2**31 - 1 (LiteRT keeps sizes in 32 bits) as 2**31 - 1."""
        values = self.values(position)
        return None if values is None else [min(abs(v), _LARGEST) for v in values]


def _made(dims):
    return [(dims, math.prod(dims))]


def _unknown(elements):
    return [(None, elements)]


def _first_shape(sizes, op):
    dims = sizes.shape(0)
    return _made(dims) if dims is not None else _unknown(sizes.count(0))


def _keep_elements(sizes, op, dims=None):
    """RESHAPE, SQUEEZE, EXPAND_DIMS: the input's elements, in `dims` (or the declared
    shape) where they hold as many (LiteRT refuses a RESHAPE to another number)."""
    elements = sizes.count(0)
    declared = sizes.tensors[sizes.outputs[0]].dims if sizes.outputs else None
    for shape in (dims, declared):
        if shape is not None and min(shape, default=0) >= 0 and math.prod(shape) == elements:
            return [(list(shape), elements)]
    return _unknown(elements)


def _reshape(sizes, op):
    new = sizes.values(1)
    if new is None:
        options = op.options(1, 17)
        new = options.int32s(0).tolist() if options is not None else None
    if new and new.count(-1) == 1:
        known = math.prod(size for size in new if size != -1)
        new = [sizes.count(0) // known if size == -1 and known else size for size in new]
    return _keep_elements(sizes, op, new)


def _squeeze(sizes, op):
    dims, options = sizes.shape(0), op.options(1, 30)
    if not dims:
        return _keep_elements(sizes, op)
    axes = {a % len(dims) for a in options.int32s(0).tolist()} if options is not None else set()
    axes = axes or {a for a, size in enumerate(dims) if size == 1}
    return _keep_elements(sizes, op, [size for a, size in enumerate(dims) if a not in axes])


def _expand_dims(sizes, op):
    dims, axis = sizes.shape(0), sizes.values(1)
    if dims is None or not axis:
        return _keep_elements(sizes, op)
    at = axis[0] + len(dims) + 1 if axis[0] < 0 else axis[0]
    return _keep_elements(sizes, op, [*dims[:at], 1, *dims[at:]])


def _broadcast(sizes, op):
    used = [p for p in range(min(len(sizes.inputs), 3)) if sizes.input(p) >= 0]  # 2, SELECT 3
    shapes = [sizes.shape(p) for p in used]
    if any(dims is None for dims in shapes):  # at most the product of the inputs
        return _unknown(math.prod(sizes.count(p) for p in used))
    rank = max((len(dims) for dims in shapes), default=0)
    padded = [[1] * (rank - len(dims)) + list(dims) for dims in shapes]
    return _made([max(column) for column in zip(*padded)])


def _concatenation(sizes, op):
    shapes = [sizes.shape(p) for p in range(len(sizes.inputs))]
    total = sum(sizes.count(p) for p in range(len(sizes.inputs)))
    options = op.options(1, 10)
    axis = options.int32(0) if options is not None else 0
    if not shapes or not shapes[0] or any(d is None or len(d) != len(shapes[0]) for d in shapes):
        return _unknown(total)
    axis %= len(shapes[0])
    dims = [max(column) for column in zip(*shapes)]  # equal but on the axis, else an error
    dims[axis] = sum(shape[axis] for shape in shapes)
    return _made(dims)


def _fully_connected(sizes, op):
    weights = sizes.shape(1)
    if weights is None or len(weights) != 2 or not weights[1]:
        return None
    units, depth = weights
    rows = -(-sizes.count(0) // depth)
    options, dims = op.options(1, 8), sizes.shape(0)
    if options is not None and options.bool(2) and dims is not None:
        return _made([*dims[:-1], units])
    return _made([rows, units]) if dims is not None else _unknown(rows * units)


def _batch_matmul(sizes, op):
    x, y = sizes.shape(0), sizes.shape(1)
    if x is None or y is None or len(x) < 2 or len(y) < 2:
        return _unknown(sizes.count(0) * sizes.count(1))
    options = op.options(1, 101)
    rows = x[-1] if options is not None and options.bool(0) else x[-2]
    columns = y[-2] if options is not None and options.bool(1) else y[-1]
    rank = max(len(x), len(y))
    batch = [
        max(a, b) for a, b in zip([1] * (rank - len(x)) + x[:-2], [1] * (rank - len(y)) + y[:-2])
    ]
    return _made([*batch, rows, columns])


def _gather(sizes, op):
    params, indices = sizes.shape(0), sizes.shape(1)
    if params is None or indices is None or not params:
        return _unknown(sizes.count(0) * sizes.count(1))
    options = op.options(1, 23)
    axis = options.int32(0) % len(params) if options is not None else 0
    batch = options.int32(1) if options is not None else 0
    batch = batch % len(indices) if batch < 0 and indices else min(batch, len(indices))
    return _made([*params[:axis], *indices[batch:], *params[axis + 1 :]])


def _embedding_lookup(sizes, op):  # inputs: ids, then the table
    ids, table = sizes.shape(0), sizes.shape(1)
    if ids is None or table is None:
        return _unknown(sizes.count(0) * sizes.count(1))
    return _made([*ids, *table[1:]])


def _gather_nd(sizes, op):
    params, indices = sizes.shape(0), sizes.shape(1)
    if params is None or indices is None or not indices:
        return _unknown(sizes.count(0) * sizes.count(1))
    return _made([*indices[:-1], *params[indices[-1] :]])


def _transpose(sizes, op):
    dims, permutation = sizes.shape(0), sizes.values(1)
    if dims is None or permutation is None or sorted(permutation) != list(range(len(dims))):
        return _unknown(sizes.count(0))
    return _made([dims[p] for p in permutation])


def _tile(sizes, op):
    multiples = sizes.sizes(1)
    if multiples is None:
        return None  # sized when it runs
    dims = sizes.shape(0)
    if dims is not None and len(dims) == len(multiples):
        return _made([size * m for size, m in zip(dims, multiples)])
    return _unknown(sizes.count(0) * math.prod(multiples))


def _sized_by(position):
    """BROADCAST_TO, FILL, RANDOM_*: the output's shape is the constant input's values."""

    def rule(sizes, op):
        shape = sizes.sizes(position)
        return None if shape is None else _made(shape)

    return rule


def _padded(sizes, padding, low=0):
    """`padding`: [(before, after, interior)] per dimension."""
    dims = sizes.shape(0)
    if dims is not None and len(dims) == len(padding):
        return _made(
            [
                max(size + b + a + max(size - 1, 0) * i, low)
                for size, (b, a, i) in zip(dims, padding)
            ]
        )
    return _unknown(sizes.count(0) * math.prod(1 + b + a + i for b, a, i in padding))


def _pad(sizes, op):
    paddings = sizes.sizes(1)
    if paddings is None:
        return None
    return _padded(sizes, [(b, a, 0) for b, a in zip(paddings[::2], paddings[1::2])])


def _stablehlo_pad(sizes, op):
    options = op.options(2, 10)
    if options is None:
        return None
    low, high, interior = (options.int64s(field) for field in range(3))
    if len(low) > sizes.checker.max_rank:  # one per dimension of the input, of rank <= 8
        return None
    # A negative edge padding crops: at most 0.
    return _padded(
        sizes, [(max(b, 0), max(a, 0), max(i, 0)) for b, a, i in zip(low, high, interior)]
    )


def _dilate(sizes, op):
    dilations = sizes.sizes(1)
    if dilations is None:
        return None
    return _padded(sizes, [(0, 0, max(d - 1, 0)) for d in dilations])


def _resize(sizes, op):
    size = sizes.sizes(1)
    if size is None or len(size) != 2:
        return None
    dims = sizes.shape(0)
    if dims is not None and len(dims) == 4:
        return _made([dims[0], *size, dims[3]])
    return _unknown(sizes.count(0) * math.prod(size))


def _space_to_batch(sizes, op):
    block, paddings = sizes.sizes(1), sizes.sizes(2)
    if block is None or paddings is None:
        return None
    padding = list(zip(paddings[::2], paddings[1::2]))
    dims = sizes.shape(0)
    if dims is None or len(dims) < len(block) + 1 or len(padding) != len(block) or 0 in block:
        return _unknown(sizes.count(0) * math.prod(1 + b + a for b, a in padding))
    spatial = [-(-(size + b + a) // k) for size, (b, a), k in zip(dims[1:], padding, block)]
    return _made([dims[0] * math.prod(block), *spatial, *dims[1 + len(block) :]])


def _batch_to_space(sizes, op):
    block, crops = sizes.sizes(1), sizes.values(2)
    if block is None or crops is None:
        return None
    # Crops are taken off: one outside 0 to 2**31 - 1 counts as -(2**31 - 1), adding.
    crops = [c if 0 <= c <= _LARGEST else -_LARGEST for c in crops]
    cropped = list(zip(crops[::2], crops[1::2]))
    dims = sizes.shape(0)
    if dims is None or len(dims) < len(block) + 1 or len(cropped) != len(block) or 0 in block:
        return _unknown(sizes.count(0) * math.prod(1 + max(-c, 0) for c in crops))
    spatial = [size * k - b - a for size, k, (b, a) in zip(dims[1:], block, cropped)]
    batch = -(-dims[0] // math.prod(block))
    return _made([batch, *(max(size, 0) for size in spatial), *dims[1 + len(block) :]])


def _one_hot(sizes, op):
    depth = sizes.sizes(1)
    if depth is None or len(depth) != 1:
        return None
    dims, options = sizes.shape(0), op.options(1, 61)
    axis = options.int32(0) if options is not None else -1
    if dims is None:
        return _unknown(sizes.count(0) * depth[0])
    at = len(dims) if axis == -1 else axis
    return _made([*dims[:at], depth[0], *dims[at:]])


def _range(sizes, op):
    start, limit, delta = (sizes.values(p, _NUMBER_TYPES) for p in range(3))
    if not (start and limit and delta):
        return None
    span = abs((limit[0] - start[0]) / delta[0]) if delta[0] else math.inf
    return _made([math.ceil(span) if math.isfinite(span) and span < _LARGEST else _LARGEST])


def _multinomial(sizes, op):
    logits, samples = sizes.shape(0), sizes.sizes(1)
    if samples is None or len(samples) != 1:
        return None
    batch = logits[0] if logits else sizes.count(0)
    return _made([batch, samples[0]])


_CODES = {name: code for code, name in _NAMES.items()}
# fmt: off
_RULES = {
    **dict.fromkeys(_UNARY, _first_shape), **dict.fromkeys(_BROADCASTING, _broadcast),
    **{_CODES[name]: rule for name, rule in {
        "RESHAPE": _reshape, "SQUEEZE": _squeeze, "EXPAND_DIMS": _expand_dims,
        "CONCATENATION": _concatenation, "FULLY_CONNECTED": _fully_connected,
        "BATCH_MATMUL": _batch_matmul, "GATHER": _gather, "GATHER_ND": _gather_nd,
        "EMBEDDING_LOOKUP": _embedding_lookup, "TRANSPOSE": _transpose, "TILE": _tile,
        "BROADCAST_TO": _sized_by(1), "FILL": _sized_by(0), "RANDOM_UNIFORM": _sized_by(0),
        "RANDOM_STANDARD_NORMAL": _sized_by(0), "TRANSPOSE_CONV": _sized_by(0),
        "PAD": _pad, "PADV2": _pad, "MIRROR_PAD": _pad, "STABLEHLO_PAD": _stablehlo_pad,
        "DILATE": _dilate, "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
        "SPACE_TO_BATCH_ND": _space_to_batch, "BATCH_TO_SPACE_ND": _batch_to_space,
        "ONE_HOT": _one_hot, "RANGE": _range, "MULTINOMIAL": _multinomial,
    }.items()},
}
# fmt: on
