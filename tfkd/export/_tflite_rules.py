"""How LiteRT sizes each op's outputs as it prepares it: the rules `_tflite_ops.Sizes`
follows, one function per op (or family), keyed by LiteRT's builtin operator code. What they
cover, and what they do not, is in `_tflite_ops`'s docstring."""

import functools
import math


def _codes(text):
    """`{code: name}` of "NAME=code" words: LiteRT's builtin operator codes (schema.fbs's
    BuiltinOperator)."""
    return {int(code): name for name, code in (word.split("=") for word in text.split())}


# Ops whose output keeps the shape of their first input.
_UNARY = _codes("""
    ABS=101 ADD_N=106 CAST=53 CEIL=104 COS=108 CUMSUM=128 DEQUANTIZE=6 ELU=111 EXP=47
    FAKE_QUANT=80 FLOOR=8 GELU=150 HARD_SWISH=117 L2_NORMALIZATION=11 LEAKY_RELU=98
    LOCAL_RESPONSE_NORMALIZATION=13 LOG=73 LOG_SOFTMAX=50 LOGICAL_NOT=87 LOGISTIC=14 NEG=59
    QUANTIZE=114 RELU=19 RELU6=21 RELU_0_TO_1=152 RELU_N1_TO_1=20 REVERSE_SEQUENCE=112
    REVERSE_V2=105 ROUND=116
    RSQRT=76 SIGN=158 SIN=66 SOFTMAX=25 SQRT=75 SQUARE=92 TANH=28 ZEROS_LIKE=93
""")
# Ops whose output is their inputs' shapes broadcast together.
_BROADCASTING = _codes("""
    ADD=0 SUB=41 MUL=18 DIV=42 FLOOR_DIV=90 FLOOR_MOD=95 MAXIMUM=55 MINIMUM=57 POW=78
    SQUARED_DIFFERENCE=99 LESS=58 LESS_EQUAL=63 GREATER=61 GREATER_EQUAL=62 EQUAL=71
    NOT_EQUAL=72 LOGICAL_AND=86 LOGICAL_OR=84 PRELU=54 ATAN2=156 BITWISE_XOR=160
    RIGHT_SHIFT=161 SELECT=64 SELECT_V2=123
""")
# Ops reducing their first input over the axes their second holds (ReducerOptions).
_REDUCING = _codes("""
    MEAN=40 SUM=74 REDUCE_PROD=81 REDUCE_MAX=82 REDUCE_MIN=89 REDUCE_ANY=91 REDUCE_ALL=140
""")
_NAMES = {
    **_UNARY,
    **_BROADCASTING,
    **_codes("""
        RESHAPE=22 SQUEEZE=43 EXPAND_DIMS=70 CONCATENATION=2 PACK=83 FULLY_CONNECTED=9
        BATCH_MATMUL=126 GATHER=36 GATHER_ND=107 EMBEDDING_LOOKUP=7 TRANSPOSE=39 TILE=69
        BROADCAST_TO=130 FILL=94 PAD=34 PADV2=60 MIRROR_PAD=100 STABLEHLO_PAD=195
        RESIZE_BILINEAR=23 RESIZE_NEAREST_NEIGHBOR=97 SPACE_TO_BATCH_ND=38
        BATCH_TO_SPACE_ND=37 DEPTH_TO_SPACE=5 SPACE_TO_DEPTH=26 DILATE=203 ONE_HOT=85
        RANGE=96 TRANSPOSE_CONV=67 CONV_3D_TRANSPOSE=141 RANDOM_UNIFORM=148
        RANDOM_STANDARD_NORMAL=146 MULTINOMIAL=149 WHILE=119 IF=118
        CALL_ONCE=129 CALL=31 STABLEHLO_WHILE=200 STABLEHLO_CASE=209 STABLEHLO_COMPOSITE=206
        STABLEHLO_REDUCE=174 STABLEHLO_REDUCE_WINDOW=198 STABLEHLO_SORT=199
        STABLEHLO_SCATTER=190 CONV_2D=3 DEPTHWISE_CONV_2D=4 CONV_3D=132 AVERAGE_POOL_2D=1
        MAX_POOL_2D=17 L2_POOL_2D=12 SLICE=65 STRIDED_SLICE=45 SPLIT=49 SPLIT_V=102
        UNPACK=88 ARG_MAX=56 ARG_MIN=79 TOPK_V2=48 SHAPE=77
    """),
    **_REDUCING,
}

INT_TYPES = {2: "<i4", 4: "<i8"}  # int32, int64
_NUMBER_TYPES = {**INT_TYPES, 0: "<f4", 10: "<f8"}  # and float32, float64 (RANGE's)
LARGEST = 2**31 - 1  # LiteRT keeps sizes in 32 bits


def op_name(code):
    return _NAMES.get(code) or _schema_names().get(code, f"builtin op {code}")


@functools.cache
def _schema_names():
    """Every builtin op's name, from LiteRT's schema (read for an error's words only)."""
    from ai_edge_litert import schema_py_generated as schema

    names = vars(schema.BuiltinOperator).items()
    return {code: name for name, code in names if isinstance(code, int) and name.isupper()}


def made(dims):
    return [(dims, math.prod(dims))]


def unknown(elements):
    return [(None, elements)]


def _first_shape(sizes, op):
    dims = sizes.shape(0)
    return made(dims) if dims is not None else unknown(sizes.count(0))


def _keep_elements(sizes, op, dims=None):
    """RESHAPE, SQUEEZE, EXPAND_DIMS: the input's elements, in `dims` (or the declared
    shape) where they hold as many (LiteRT refuses a RESHAPE to another number)."""
    elements = sizes.count(0)
    declared = sizes.tensors[sizes.outputs[0]].dims if sizes.outputs else None
    for shape in (dims, declared):
        if shape is not None and min(shape, default=0) >= 0 and math.prod(shape) == elements:
            return [(list(shape), elements)]
    return unknown(elements)


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
        return unknown(math.prod(sizes.count(p) for p in used))
    rank = max((len(dims) for dims in shapes), default=0)
    padded = [[1] * (rank - len(dims)) + list(dims) for dims in shapes]
    return made([max(column) for column in zip(*padded)])


def _concatenation(sizes, op):
    shapes = [sizes.shape(p) for p in range(len(sizes.inputs))]
    total = sum(sizes.count(p) for p in range(len(sizes.inputs)))
    options = op.options(1, 10)
    axis = options.int32(0) if options is not None else 0
    if not shapes or not shapes[0] or any(d is None or len(d) != len(shapes[0]) for d in shapes):
        return unknown(total)
    axis %= len(shapes[0])
    dims = [max(column) for column in zip(*shapes)]  # equal but on the axis, else an error
    dims[axis] = sum(shape[axis] for shape in shapes)
    return made(dims)


def _pack(sizes, op):
    """PACK: its inputs (of one shape, or LiteRT refuses) stacked on a new axis (PackOptions'
    field 1), as many as it names: the same tensor may be named again and again."""
    count = len(sizes.inputs)
    shapes = [sizes.shape(p) for p in range(count)]
    options = op.options(1, 59)
    axis = options.int32(1) if options is not None else 0
    rank = len(shapes[0]) if shapes and shapes[0] is not None else -1
    if rank < 0 or any(d is None or len(d) != rank for d in shapes) or abs(axis) > rank + 1:
        return unknown(count * max((sizes.count(p) for p in range(count)), default=0))
    dims = [max(column) for column in zip(*shapes)]
    axis %= rank + 1
    return made([*dims[:axis], count, *dims[axis:]])


def _fully_connected(sizes, op):
    weights = sizes.shape(1)
    if weights is None or len(weights) != 2 or not weights[1]:
        return None
    units, depth = weights
    rows = -(-sizes.count(0) // depth)
    options, dims = op.options(1, 8), sizes.shape(0)
    if options is not None and options.bool(2) and dims is not None:
        return made([*dims[:-1], units])
    return made([rows, units]) if dims is not None else unknown(rows * units)


def _batch_matmul(sizes, op):
    x, y = sizes.shape(0), sizes.shape(1)
    if x is None or y is None or len(x) < 2 or len(y) < 2:
        return unknown(sizes.count(0) * sizes.count(1))
    options = op.options(1, 101)
    rows = x[-1] if options is not None and options.bool(0) else x[-2]
    columns = y[-2] if options is not None and options.bool(1) else y[-1]
    rank = max(len(x), len(y))
    batch = [
        max(a, b) for a, b in zip([1] * (rank - len(x)) + x[:-2], [1] * (rank - len(y)) + y[:-2])
    ]
    return made([*batch, rows, columns])


def _gather(sizes, op):
    params, indices = sizes.shape(0), sizes.shape(1)
    if params is None or indices is None or not params:
        return unknown(sizes.count(0) * sizes.count(1))
    options = op.options(1, 23)
    axis = options.int32(0) % len(params) if options is not None else 0
    batch = options.int32(1) if options is not None else 0
    batch = batch % len(indices) if batch < 0 and indices else min(batch, len(indices))
    return made([*params[:axis], *indices[batch:], *params[axis + 1 :]])


def _embedding_lookup(sizes, op):  # inputs: ids, then the table
    ids, table = sizes.shape(0), sizes.shape(1)
    if ids is None or table is None:
        return unknown(sizes.count(0) * sizes.count(1))
    return made([*ids, *table[1:]])


def _gather_nd(sizes, op):
    params, indices = sizes.shape(0), sizes.shape(1)
    if params is None or indices is None or not indices:
        return unknown(sizes.count(0) * sizes.count(1))
    return made([*indices[:-1], *params[indices[-1] :]])


def _transpose(sizes, op):
    dims, permutation = sizes.shape(0), sizes.values(1)
    if dims is None or permutation is None or sorted(permutation) != list(range(len(dims))):
        return unknown(sizes.count(0))
    return made([dims[p] for p in permutation])


def _tile(sizes, op):
    multiples = sizes.sizes(1)
    if multiples is None:
        return None  # sized when it runs
    dims = sizes.shape(0)
    if dims is not None and len(dims) == len(multiples):
        return made([size * m for size, m in zip(dims, multiples)])
    return unknown(sizes.count(0) * math.prod(multiples))


def _sized_by(position):
    """BROADCAST_TO, FILL, RANDOM_*: the output's shape is the constant input's values."""

    def rule(sizes, op):
        shape = sizes.sizes(position)
        return None if shape is None else made(shape)

    return rule


def _padded(sizes, padding, low=0):
    """`padding`: [(before, after, interior)] per dimension."""
    dims = sizes.shape(0)
    if dims is not None and len(dims) == len(padding):
        return made(
            [
                max(size + b + a + max(size - 1, 0) * i, low)
                for size, (b, a, i) in zip(dims, padding)
            ]
        )
    return unknown(sizes.count(0) * math.prod(1 + b + a + i for b, a, i in padding))


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
        return made([dims[0], *size, dims[3]])
    return unknown(sizes.count(0) * math.prod(size))


def _space_to_batch(sizes, op):
    block, paddings = sizes.sizes(1), sizes.sizes(2)
    if block is None or paddings is None:
        return None
    padding = list(zip(paddings[::2], paddings[1::2]))
    dims = sizes.shape(0)
    if dims is None or len(dims) < len(block) + 1 or len(padding) != len(block) or 0 in block:
        return unknown(sizes.count(0) * math.prod(1 + b + a for b, a in padding))
    spatial = [-(-(size + b + a) // k) for size, (b, a), k in zip(dims[1:], padding, block)]
    return made([dims[0] * math.prod(block), *spatial, *dims[1 + len(block) :]])


def _batch_to_space(sizes, op):
    block, crops = sizes.sizes(1), sizes.values(2)
    if block is None or crops is None:
        return None
    # Crops are taken off: one outside 0 to 2**31 - 1 counts as -(2**31 - 1), adding.
    crops = [c if 0 <= c <= LARGEST else -LARGEST for c in crops]
    cropped = list(zip(crops[::2], crops[1::2]))
    dims = sizes.shape(0)
    if dims is None or len(dims) < len(block) + 1 or len(cropped) != len(block) or 0 in block:
        return unknown(sizes.count(0) * math.prod(1 + max(-c, 0) for c in crops))
    spatial = [size * k - b - a for size, k, (b, a) in zip(dims[1:], block, cropped)]
    batch = -(-dims[0] // math.prod(block))
    return made([batch, *(max(size, 0) for size in spatial), *dims[1 + len(block) :]])


def _depth_to_space(sizes, op, to_depth=False):
    """DEPTH_TO_SPACE, SPACE_TO_DEPTH: a [batch, height, width, channels] input's blocks of
    block_size x block_size pixels moved to its channels, or back (as many elements); None
    (as declared) where LiteRT refuses to prepare it: a block_size under 1 or not dividing
    the sizes it divides, an input not of rank 4, a size past 2**31 - 1."""
    dims, options = sizes.shape(0), op.options(1, 19 if to_depth else 94)
    block = options.int32(0) if options is not None else 0
    if dims is None:
        return unknown(sizes.count(0))
    if len(dims) != 4 or block < 1:
        return None
    batch, height, width, channels = dims
    if to_depth:
        if height % block or width % block:
            return None
        return made([batch, height // block, width // block, channels * block * block])
    if channels % (block * block) or max(height, width) * block > LARGEST:
        return None
    return made([batch, height * block, width * block, channels // (block * block)])


def _one_hot(sizes, op):
    depth = sizes.sizes(1)
    if depth is None or len(depth) != 1:
        return None
    dims, options = sizes.shape(0), op.options(1, 61)
    axis = options.int32(0) if options is not None else -1
    if dims is None:
        return unknown(sizes.count(0) * depth[0])
    at = len(dims) if axis == -1 else axis
    return made([*dims[:at], depth[0], *dims[at:]])


def _range(sizes, op):
    start, limit, delta = (sizes.values(p, _NUMBER_TYPES) for p in range(3))
    if not (start and limit and delta):
        return None
    span = abs((limit[0] - start[0]) / delta[0]) if delta[0] else math.inf
    return made([math.ceil(span) if math.isfinite(span) and span < LARGEST else LARGEST])


def _multinomial(sizes, op):
    logits, samples = sizes.shape(0), sizes.sizes(1)
    if samples is None or len(samples) != 1:
        return None
    batch = logits[0] if logits else sizes.count(0)
    return made([batch, samples[0]])


def _reduce(sizes, op):
    """MEAN, SUM, REDUCE_MAX...: the input's shape without the axes (a constant input), or
    with them set to 1 (keep_dims); at most the input's elements when the axes are computed."""
    dims, axes = sizes.shape(0), sizes.values(1)
    if dims is None or axes is None:
        return unknown(sizes.count(0))
    axes = {axis % len(dims) for axis in axes} if dims else set()
    options = op.options(1, 27)
    keep = options is not None and options.bool(0)
    return made([1 if a in axes else size for a, size in enumerate(dims) if keep or a not in axes])


CODES = {name: code for code, name in _NAMES.items()}
# fmt: off
RULES = {
    **dict.fromkeys(_UNARY, _first_shape), **dict.fromkeys(_BROADCASTING, _broadcast),
    **dict.fromkeys(_REDUCING, _reduce),
    **{CODES[name]: rule for name, rule in {
        "RESHAPE": _reshape, "SQUEEZE": _squeeze, "EXPAND_DIMS": _expand_dims,
        "CONCATENATION": _concatenation, "PACK": _pack, "FULLY_CONNECTED": _fully_connected,
        "BATCH_MATMUL": _batch_matmul, "GATHER": _gather, "GATHER_ND": _gather_nd,
        "EMBEDDING_LOOKUP": _embedding_lookup, "TRANSPOSE": _transpose, "TILE": _tile,
        "BROADCAST_TO": _sized_by(1), "FILL": _sized_by(0), "RANDOM_UNIFORM": _sized_by(0),
        "RANDOM_STANDARD_NORMAL": _sized_by(0),
        "PAD": _pad, "PADV2": _pad, "MIRROR_PAD": _pad, "STABLEHLO_PAD": _stablehlo_pad,
        "DILATE": _dilate, "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
        "SPACE_TO_BATCH_ND": _space_to_batch, "BATCH_TO_SPACE_ND": _batch_to_space,
        "DEPTH_TO_SPACE": _depth_to_space,
        "SPACE_TO_DEPTH": functools.partial(_depth_to_space, to_depth=True),
        "ONE_HOT": _one_hot, "RANGE": _range, "MULTINOMIAL": _multinomial,
    }.items()},
}
# fmt: on
