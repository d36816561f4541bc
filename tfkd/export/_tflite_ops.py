"""What a `.tflite` file's ops make LiteRT allocate, read from the tables `_tflite_file`
checked, before LiteRT sees the bytes (how each op sizes its outputs: `_tflite_rules`; the
subgraphs ops run: `_tflite_subgraphs`).

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
  TRANSPOSE_CONV (VALID, where XNNPACK may run it: at least what its input, window and
  stride make, which XNNPACK makes whatever the shape says), CONV_3D_TRANSPOSE,
  RANDOM_UNIFORM, RANDOM_STANDARD_NORMAL, MULTINOMIAL;
  RESHAPE, SQUEEZE and EXPAND_DIMS keep their input's elements (LiteRT refuses a RESHAPE
  to another number);
- sized from their inputs' shapes, which they can multiply: the broadcasting ops (ADD,
  MUL, LESS, SELECT_V2...: [16384, 1] + [1, 8192] is 512 MiB), FULLY_CONNECTED,
  BATCH_MATMUL, GATHER, GATHER_ND, EMBEDDING_LOOKUP, CONCATENATION, PACK (a 4,604-byte
  file stacked its [1024, 256] input 1,040 times: 1 GiB, its output declared [1, 1]),
  TRANSPOSE, DEPTH_TO_SPACE and SPACE_TO_DEPTH (their input's blocks of block_size
  pixels moved to its channels or back; as declared where LiteRT refuses the block_size),
  and the ops that keep their input's shape (SOFTMAX, RELU, QUANTIZE, CAST, REVERSE_V2,
  REVERSE_SEQUENCE, CUMSUM...);
- sized from their input's shape and the constant values that say which part to take
  (`_tflite_slices`): SLICE, STRIDED_SLICE (its end an offset from its begin can make it
  larger than its input), SPLIT, SPLIT_V, UNPACK, ARG_MAX, ARG_MIN, TOPK_V2, SHAPE; where
  those values are computed, as declared (LiteRT prepares the ops after it from that
  shape, and sizes the output when it runs: see "Not covered");
- sized from their input's and filter's shapes and their options (`_tflite_windows`):
  CONV_2D, DEPTHWISE_CONV_2D, CONV_3D (a 5 KB file's CONV_2D made 2.5 GB, its output
  declared [1, 1, 1, 1]), AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D, and the scratch their
  kernels allocate as they are prepared (LiteRT's im2col, XNNPACK's indirection buffer;
  TRANSPOSE_CONV's and CONV_3D_TRANSPOSE's col2im: a 131,612-byte file reserved 2.15 GB,
  or XNNPACK's indirection for a TRANSPOSE_CONV: a 66,056-byte file asked for 8.5 GB),
  held to a tensor's limits and counted to the total; the reductions (MEAN, SUM,
  REDUCE_MAX...: at most their input's elements);
- any other op (UNIDIRECTIONAL_SEQUENCE_LSTM, a custom op...): its outputs as declared,
  times the most any of its inputs grew past its declared size (the elements, not the
  shape: a bound for an op whose output grows as its inputs do).

Not covered:
- an output sized from values the graph computes, not the file's constants (TILE's
  multiples made by an ADD; TRANSPOSE_CONV's and CONV_3D_TRANSPOSE's output shape from
  SHAPE and PACK, as Keras exports them even for a fixed batch, and so their col2im):
  LiteRT sizes it when the op runs (`invoke`), from data (such a TILE of 512 MiB passes,
  and allocated when run);
- an output that its declared shape and an op not listed above size
  (UNIDIRECTIONAL_SEQUENCE_LSTM, the StableHLO ops...), unless an input grew; such an op
  can hide a larger tensor from the ops after it (a REVERSE_V2 of a constant [258, 1, 1,
  1] declared [1, 1, 1, 1], a CONV_2D's filter, made a 1 GB output from 2,720 bytes
  before REVERSE_V2 was sized; a DEPTH_TO_SPACE, SPACE_TO_DEPTH or REVERSE_SEQUENCE
  output of 2**16 elements declared [1, 1, 1, 1], added to 4,097 zeros, made 1 GiB and
  256 KiB before they were);
- the scratch of kernels other than the convolutions' and XNNPACK's pools' (the hybrid
  kernels' quantized copies of their input), and memory XNNPACK packs weights into;
- what a subgraph that a WHILE, IF or STABLEHLO_CASE runs makes when LiteRT sizes it as
  it runs (its outputs' shapes differ from its inputs', or its ops' are sized from data):
  the subgraphs are followed from the sizes the op gives them, and the op's outputs
  take theirs where they agree, else (sized when the op runs) as declared
  (`_tflite_subgraphs`), not what a body grows to over the iterations it runs.
"""

import numpy as np

from tfkd.export._tflite_rules import CODES, INT_TYPES, LARGEST, RULES, op_name
from tfkd.export._tflite_slices import RULES as SLICE_RULES
from tfkd.export._tflite_windows import RULES as WINDOW_RULES

_RULES = {**RULES, **WINDOW_RULES, **SLICE_RULES}


_DEQUANTIZE = CODES["DEQUANTIZE"]


class Refused(Exception):
    """A file whose tables say something LiteRT must not be given."""


class Sizes:
    """Follows one subgraph's sizes op by op (see the module's docstring)."""

    def __init__(self, checker, where, tensors, counted=None):
        """`counted`: the bytes counted for each tensor, shared by each time the subgraph
        is followed (LiteRT resizes its tensors each time it prepares it)."""
        self.checker, self.where, self.tensors = checker, where, tensors
        self.dims = [tensor.dims for tensor in tensors]  # None: only `elements` is known
        self.elements = [tensor.elements for tensor in tensors]
        self.counted = [tensor.counted for tensor in tensors] if counted is None else counted
        # Tensors whose values the file holds, or DEQUANTIZE makes from them (float16
        # weights): XNNPACK packs such a filter as it prepares an op.
        self.static = {i for i, tensor in enumerate(tensors) if tensor.data is not None}

    def follow(self, index, code, operator, inputs, outputs, made=None):
        """Sizes the op's outputs by its rule, or as `made` says (`[(dims, elements)]`:
        what the subgraphs a WHILE or IF runs made)."""
        self.inputs, self.outputs = inputs.tolist(), outputs.tolist()
        self.scratches = []
        rule = _RULES.get(code)
        made = rule(self, operator) if made is None and rule is not None else made
        if made is None:  # not modelled, or sized from data when it runs: as declared
            made = self.as_declared(self.outputs)
        for tensor, (dims, elements) in zip(self.outputs, made):
            self.set(tensor, dims, elements, index, code)
        if code == _DEQUANTIZE and self.input(0) in self.static:
            self.static.update(self.outputs)
        for nbytes, what in self.scratches:
            made = f"op {index} ({op_name(code)}) of {self.where} {what}"
            self.checker.add_bytes(nbytes, nbytes, made)

    def scratch(self, nbytes, what):
        """Counts `nbytes` that the op's kernel allocates for itself as it is prepared (as
        one more tensor, once its outputs are counted); `what`: what they hold."""
        self.scratches.append((nbytes, what))

    def as_declared(self, outputs):
        growth = 1
        for i in self.inputs:
            if i >= 0 and self.elements[i] > self.tensors[i].elements:
                growth = max(growth, -(-self.elements[i] // self.tensors[i].elements))
        if growth == 1:
            return [(self.tensors[t].dims, self.tensors[t].elements) for t in outputs]
        return [(None, self.tensors[t].elements * growth) for t in outputs]

    def set(self, tensor, dims, elements, index, code):
        self.resize(tensor, dims, elements, f"op {index} ({op_name(code)}) of {self.where} makes")

    def resize(self, tensor, dims, elements, by, bits=None):
        """Gives `tensor` its size, which `by` made (its type: `bits` per element, where it
        takes another's: a WHILE's)."""
        info = self.tensors[tensor]
        if info.data is not None:  # LiteRT refuses to resize a constant ("fixed-size")
            return
        self.dims[tensor], self.elements[tensor] = dims, elements
        nbytes = elements * max(info.bits, bits or 0) // 8
        over_rank = dims is not None and len(dims) > self.checker.max_rank
        if nbytes <= self.counted[tensor] and not over_rank:
            return
        made = f"{by} tensor {tensor} ({info.name[:60]!r}) " + (
            f"of shape {dims}" if dims is not None else f"of up to {elements} elements"
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

    def values(self, position, types=INT_TYPES, limit=None):
        """The values of a constant input, as Python numbers; None when it is computed.
        More than `limit` values (default: 4 a dimension) are refused."""
        i = self.input(position)
        info = self.tensors[i] if i >= 0 else None
        if info is None or info.data is None or info.type not in types:
            return None
        start, length = info.data
        form = np.dtype(types[info.type])
        count = length // form.itemsize
        if count > (limit or 4 * self.checker.max_rank):  # sizes, paddings: a few
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
        return None if values is None else [min(abs(v), LARGEST) for v in values]
