"""How LiteRT sizes the ops that take part of their input, as it prepares them: the rules
`_tflite_ops.Sizes` follows for SLICE, STRIDED_SLICE, SPLIT, SPLIT_V, UNPACK, ARG_MAX,
ARG_MIN, TOPK_V2 and SHAPE (REVERSE_V2 and CUMSUM keep their input's shape:
`_tflite_rules`).

LiteRT makes their outputs from the input's shape and the constant values that say what
to take (begin, size, end, strides, axis, size_splits, k), whatever shapes the file
declares: a 2,720-byte file's REVERSE_V2 of a constant [258, 1, 1, 1], declared [1, 1,
1, 1], was a CONV_2D's filter, which made a 1 GB output; three REVERSE_V2 of a 256 MiB
input were counted as 12 bytes. Each value is counted as LiteRT's kernel uses it where
the kernel accepts it, and as the largest it can make where it refuses or cannot tell:
a negative size as its absolute value, one past 2**31 - 1 (LiteRT keeps sizes in 32
bits) as 2**31 - 1.

Where those values are computed by the graph (or the input's shape is not followed),
LiteRT makes the output when the op runs, and at load prepares the ops after it from the
shape the file declares: the rule returns None, as declared (`Sizes.as_declared`, times
the most an input grew), as for every output sized from computed values. (Counted as the
larger of the declared shape and the input's, a BERT backbone's position embeddings,
SLICEd to the sequence's length, went on through BROADCAST_TO and ADD as 16 million
elements of any shape, then 2**33: tfkd refused its own int8 export.)
"""

import math

import numpy as np

from tfkd.export._tflite_rules import CODES, LARGEST, made, unknown


def _clamped(value):
    return min(abs(value), LARGEST)


def _slice(sizes, op):
    """SLICE: `size` of each axis from `begin`; -1, to the axis's end. LiteRT refuses a
    begin and size past the axis's end (and, since 2.x, a negative begin, which older
    kernels took: counted as they made it)."""
    dims, begin, size = sizes.shape(0), sizes.values(1), sizes.values(2)
    if dims == []:  # LiteRT leaves the output of a scalar as declared
        return None
    if dims is None or begin is None or size is None:
        return None  # sized when it runs: as declared
    if min(len(begin), len(size)) < len(dims):  # LiteRT would read past their values
        return unknown(LARGEST)
    return made([_clamped(d - b if s == -1 else s) for d, b, s in zip(dims, begin, size)])


def _strided_options(op):
    """StridedSliceOptions: begin, end, ellipsis, new axis and shrink axis masks; offset."""
    table = op.options(1, 32)
    if table is None:
        return [0] * 5, False
    return [table.int32(field) for field in range(5)], table.bool(5)


def _start(size, begin, stride, masked):
    if masked:
        return 0 if stride > 0 else size - 1
    begin += size if begin < 0 else 0
    return min(max(begin, 0), size) if stride > 0 else min(max(begin, -1), size - 1)


def _stop(size, start, end, stride, masked):
    if masked:
        return size if stride > 0 else -1
    end += size if end < 0 else 0
    return min(max(end, 0), size) if stride > 0 else min(max(end, -1), size - 1)


def _int32(value):
    """`value` as a C++ int holds it (wrapped past 2**31 - 1)."""
    return (value + 2**31) % 2**32 - 2**31


def _strided_axis(size, begin, end, stride, masks, offset):
    """One axis of STRIDED_SLICE's output, as LiteRT's strided_slice_logic computes it
    (`masks`: this axis's begin, end and shrink bits); a stride of 0 (refused) as 1. With
    `offset`, the end is begin plus `end`, neither clamped nor masked: past the axis."""
    begin_masked, end_masked, shrink = masks
    if size == 0:
        return 0 if not shrink else 1
    stride = stride or 1
    start = _start(size, begin, stride, begin_masked)
    if shrink:
        stop = start + 1
    elif offset:
        stop = _int32(start + end)
    else:
        stop = _stop(size, start, end, stride, end_masked)
    span = _int32(stop - start)
    if abs(span) <= 2**24:  # float32 holds it exactly: LiteRT's division is the exact one
        return max(0, -(-span // stride))
    return max(0, math.ceil(np.float32(span) / np.float32(stride)))


def _unset_sizes(dims, values, expanding, offset):
    """Whether LiteRT makes a STRIDED_SLICE of sizes it never sets (393216, 262152...):
    with fewer values than the input's axes and an offset end, or with an ellipsis or a
    new axis and an offset end, fewer values than axes or a mask bit past the values."""
    given = min((len(v) for v in values if v is not None), default=0)
    short = dims is not None and given < len(dims)
    return (short and offset) or (expanding and (offset or short or expanding >> given))


def _strided_slice(sizes, op):
    """STRIDED_SLICE: what a Python slice of each axis takes (begin_mask and end_mask: from
    the axis's start, to its end), an axis dropped where shrink_axis_mask says. With an
    ellipsis or a new axis (which the converter folds away): at most the input's elements."""
    dims = sizes.shape(0)
    values = [sizes.values(p) for p in (1, 2, 3)]
    (begin_mask, end_mask, ellipsis, new_axis, shrink), offset = _strided_options(op)
    if _unset_sizes(dims, values, ellipsis | new_axis, offset):
        return unknown(LARGEST)
    if dims is None:
        return None  # its input's shape not followed: as declared
    if ellipsis or new_axis:  # sized at load, not followed: at most the input's elements
        elements = math.prod(max(size, 1) for size in dims)
        return [unknown(max(sizes.tensors[t].elements, elements))[0] for t in sizes.outputs]
    if any(v is None for v in values):
        return None  # sized when it runs: as declared
    output = []
    for axis, size in enumerate(dims):
        bits = [mask >> axis & 1 for mask in (begin_mask, end_mask, shrink)]
        given = axis < min(len(v) for v in values)  # a missing axis: taken whole
        begin, end, stride = (v[axis] if given else 0 for v in values)
        made_size = _strided_axis(size, begin, end, stride, bits, offset) if given else size
        if not bits[2] or not given:
            output.append(made_size)
    return made(output)


def _axis(value, rank):
    """A constant axis in 0 to `rank`, negatives from the end; None where LiteRT refuses it."""
    if value is None or len(value) != 1 or not -rank <= value[0] < rank:
        return None
    return value[0] % rank


def _split(sizes, op):
    """SPLIT (the axis, then the input): `num_splits` equal parts of the axis."""
    dims, count = sizes.shape(1), len(sizes.outputs)
    axis = _axis(sizes.values(0), len(dims)) if dims else None
    if axis is None or count == 0:
        return None  # sized when it runs: as declared
    part = [*dims[:axis], -(-dims[axis] // count), *dims[axis + 1 :]]
    return made(part) * count


def _split_v(sizes, op):
    """SPLIT_V (the input, size_splits, the axis): a part of each size on the axis; one
    -1, what the others leave. Sizes that do not add up to the axis (LiteRT 2.x refuses
    them; older kernels reported them and went on) count as given, a negative one as its
    absolute value. One size an output: as many values as the op has outputs are read."""
    dims = sizes.shape(0)
    splits = sizes.values(1, limit=max(len(sizes.outputs), 4 * sizes.checker.max_rank))
    axis = _axis(sizes.values(2), len(dims)) if dims else None
    if dims is None or splits is None or axis is None:
        return None  # sized when it runs: as declared
    rest = dims[axis] - sum(size for size in splits if size != -1)
    parts = [_clamped(rest if size == -1 else size) for size in splits]
    return [made([*dims[:axis], part, *dims[axis + 1 :]])[0] for part in parts]


def _unpack(sizes, op):
    """UNPACK: the input without the axis (UnpackOptions' field 1), once per output."""
    dims, table = sizes.shape(0), op.options(1, 64)
    axis = _axis([table.int32(1) if table is not None else 0], len(dims)) if dims else None
    if axis is None:
        return None  # sized when it runs: as declared
    return made([*dims[:axis], *dims[axis + 1 :]]) * len(sizes.outputs)


def _arg_extreme(sizes, op):
    """ARG_MAX, ARG_MIN: the input without the axis its second input holds."""
    dims = sizes.shape(0)
    axis = _axis(sizes.values(1), len(dims)) if dims else None
    if axis is None:
        return None  # sized when it runs: as declared
    return made([*dims[:axis], *dims[axis + 1 :]])


def _top_k(sizes, op):
    """TOPK_V2: values and indices, the input's shape with `k` last (LiteRT refuses a k
    past the last axis, and makes a negative one 0)."""
    dims, k = sizes.shape(0), sizes.values(1)
    if not dims or k is None or len(k) != 1:
        return None  # sized when it runs: as declared
    return made([*dims[:-1], min(max(k[0], 0), LARGEST)]) * 2


def _shape(sizes, op):
    dims = sizes.shape(0)
    return made([len(dims) if dims is not None else sizes.checker.max_rank])


RULES = {
    CODES["SLICE"]: _slice,
    CODES["STRIDED_SLICE"]: _strided_slice,
    CODES["SPLIT"]: _split,
    CODES["SPLIT_V"]: _split_v,
    CODES["UNPACK"]: _unpack,
    CODES["ARG_MAX"]: _arg_extreme,
    CODES["ARG_MIN"]: _arg_extreme,
    CODES["TOPK_V2"]: _top_k,
    CODES["SHAPE"]: _shape,
}
