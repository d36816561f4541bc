"""What a `.tflite` file declares, read without trusting it before LiteRT sees its bytes.

Files tfkd reads may be hostile. LiteRT verifies a file's flatbuffer offsets but not what
its tables say, and acts on it in this process: an int8 file whose input tensor was given
rank 64 crashed it (SIGSEGV in the XNNPACK delegate), a 2 KB file whose hidden tensor
declares [16384, 32768] floats made XNNPACK allocate and touch 2 GiB at load ([65536,
65536]: the kernel's OOM killer), and an op reading tensor 9999 was a bare RuntimeError.

`check` reads the tables it needs itself, each offset checked against the file's size
(LiteRT's schema, `schema.fbs`, gives the field numbers below): reading them with the
generated `schema_py_generated` accessors took 7 ms for MobileNetV2, as long as LiteRT
takes to load it, since they read a table's vtable again for each field.

What LiteRT allocates when it prepares the ops (sizes it computes itself, from constant
data or from its inputs' shapes), and the subgraphs control-flow ops run, are checked by
`_tflite_ops`, whose docstring says what it covers and what it does not.
"""

import functools
import math
import struct

import numpy as np

from tfkd.export import _tflite_counts, _tflite_ops, _tflite_scales, _tflite_subgraphs

# The most dimensions a tensor may have. No LiteRT kernel takes more than 8 (BROADCAST_TO's
# kMaxDims; most take 4 to 6, and XNNPACK 6: XNN_MAX_TENSOR_DIMS); an int8 file whose input
# had rank 11 or more crashed the process in XNNPACK's delegate (rank 7 to 10: an error).
MAX_RANK = 8

# The most bytes a tensor the file holds no data for (an input, an activation, a variable)
# may declare for one example, and all of them together. LiteRT allocates (XNNPACK also
# touches) what a file declares when it loads it, before any check of its own. The largest
# activation of an image model for the edge is a few MB an example (MobileNetV2 at 224x224:
# 4.8 MB, float32); 1 GiB is a 64-channel float32 map of 2048x2048 pixels. The sum counts
# every activation once, although LiteRT reuses their memory: MobileNetV2's is 28 MB.
MAX_TENSOR_BYTES = 2**30
MAX_TOTAL_BYTES = 4 * 2**30

# LiteRT's tensor types (schema.fbs's TensorType): name and bits per element. Strings,
# resources and variants hold their data elsewhere: 8 bits is a floor. A code missing here
# (a type newer than this table) counts 128 bits, and LiteRT judges the type itself.
_TYPES = {
    0: ("float32", 32),
    1: ("float16", 16),
    2: ("int32", 32),
    3: ("uint8", 8),
    4: ("int64", 64),
    5: ("string", 8),
    6: ("bool", 8),
    7: ("int16", 16),
    8: ("complex64", 64),
    9: ("int8", 8),
    10: ("float64", 64),
    11: ("complex128", 128),
    12: ("uint64", 64),
    13: ("resource", 8),
    14: ("variant", 8),
    15: ("uint32", 32),
    16: ("uint16", 16),
    17: ("int4", 4),
    18: ("bfloat16", 16),
    19: ("int2", 2),
    20: ("uint4", 4),
    21: ("float8_e4m3fn", 8),
    22: ("float8_e5m2", 8),
}

_UOFFSET = struct.Struct("<I")
_SOFFSET = struct.Struct("<i")
_UINT64 = struct.Struct("<Q")
_INT8 = struct.Struct("<b")
_INT32 = struct.Struct("<i")
_UINT8 = struct.Struct("<B")

_Refused = _tflite_ops.Refused


def check(content, open_size, builtin_kernels=False):
    """Raises ValueError (what is wrong, and the limit) unless `content` is a `.tflite`
    flatbuffer whose tables are safe to hand to LiteRT: with its XNNPACK delegate, or with
    its builtin kernels only (`builtin_kernels`), whose convolutions' im2col scratch is
    counted then (see `_tflite_windows`).

    Byte counts are for one example: a batch size of 0 or -1 counts as 1 (the batch that
    `TFLiteModel` resizes to then multiplies every activation, as the batch size of Keras's
    `predict` does), and a size the file leaves open (-1 beyond the batch) as `open_size`,
    the size LiteRT is given for it at load.
    """
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ValueError(
            f"its bytes 4 to 8 are {bytes(content[4:8])!r}, not the identifier of a .tflite "
            "flatbuffer (b'TFL3')"
        )
    try:
        _Checker(content, open_size, builtin_kernels).check_model()
    except _Refused as error:
        raise ValueError(str(error)) from None
    except struct.error as error:  # an offset past the file's end
        raise ValueError(f"its flatbuffer is cut or points outside the file ({error})") from None


@functools.cache
def _slots(count):
    return struct.Struct(f"<{count}H")


@functools.cache
def _sizes(count):
    return struct.Struct(f"<{count}i")


class _Table:
    """A flatbuffer table: where its fields are, read once from its vtable."""

    __slots__ = ("content", "position", "fields")

    def __init__(self, content, position, num_fields):
        self.content, self.position = content, position
        vtable = position - _SOFFSET.unpack_from(content, position)[0]
        if vtable < 0:
            raise _Refused(f"the table at byte {position} points before the file's start")
        vtable_bytes = _slots(1).unpack_from(content, vtable)[0]
        count = min(max(vtable_bytes - 4, 0) // 2, num_fields)  # beyond: fields not read
        self.fields = _slots(count).unpack_from(content, vtable + 4) if count else ()

    def where(self, field):
        """The field's position in the file, or 0 when the table leaves it out."""
        offset = self.fields[field] if field < len(self.fields) else 0
        return self.position + offset if offset else 0

    def scalar(self, field, form):
        at = self.where(field)
        return form.unpack_from(self.content, at)[0] if at else 0

    def vector(self, field, width):
        """`(start, length)` of a vector field, `(0, 0)` when left out."""
        at = self.where(field)
        if not at:
            return 0, 0
        start = at + _UOFFSET.unpack_from(self.content, at)[0]
        length = _UOFFSET.unpack_from(self.content, start)[0]
        if start + 4 + length * width > len(self.content):
            raise _Refused(
                f"a vector at byte {start} declares {length} entries, past the file's end "
                f"({len(self.content)} bytes)"
            )
        return start + 4, length

    def int32s(self, field):
        start, length = self.vector(field, 4)
        return np.frombuffer(self.content, "<i4", length, start) if length else np.zeros(0, "<i4")

    def int64s(self, field):
        start, length = self.vector(field, 8)
        return np.frombuffer(self.content, "<i8", length, start).tolist() if length else []

    def int32(self, field):
        return self.scalar(field, _INT32)

    def bool(self, field):
        return bool(self.scalar(field, _UINT8))

    def table(self, field, num_fields):
        at = self.where(field)
        return (
            _Table(self.content, at + _UOFFSET.unpack_from(self.content, at)[0], num_fields)
            if at
            else None
        )

    def options(self, union, kind):
        """An Operator's options table (`builtin_options`: union 1; `builtin_options_2`:
        2) when it is of type `kind`, else None (LiteRT then reads its defaults)."""
        type_field = 3 if union == 1 else 11
        if self.scalar(type_field, _UINT8) != kind:
            return None
        return self.table(type_field + 1, 16)

    def text(self, field, what):
        start, length = self.vector(field, 1)
        raw = self.content[start : start + length]
        try:
            return raw.decode("utf-8")  # LiteRT decodes names so when it lists them
        except UnicodeDecodeError:
            raise _Refused(f"{what} is not UTF-8 text: {raw[:40]!r}") from None


class _Tensor:
    """What the size checks need of a tensor: its sizes for one example (`dims`, as the
    file declares them), its type, its data in the file and the bytes counted for it."""

    __slots__ = (
        "name",
        "dims",
        "elements",
        "type",
        "type_name",
        "bits",
        "data",
        "counted",
        "quantization",
    )

    def __init__(self, name, dims, type_code, data, counted, quantization=None):
        self.name, self.dims, self.type, self.data = name, dims, type_code, data
        self.quantization = quantization  # its QuantizationParameters table, if any
        self.elements = math.prod(dims)
        self.type_name, self.bits = _TYPES.get(type_code, ("an unknown type", 128))
        self.counted = counted


class _Checker:
    max_rank = MAX_RANK

    def __init__(self, content, open_size, builtin_kernels):
        self.content = content
        self.open_size = open_size
        self.builtin_kernels = builtin_kernels
        # Each entry of the vectors read here (offsets, int32 indices and sizes) takes 4
        # bytes of the file; more entries than that means vectors overlap, which no writer
        # makes, and would make a small file cost as much work as a huge one.
        self.entries_left = len(content) // 4
        self.total_bytes = 0

    def tables(self, table, field, num_fields, what):
        start, length = table.vector(field, 4)
        self.count(length, what)
        for index in range(length):
            at = start + 4 * index
            yield (
                index,
                _Table(self.content, at + _UOFFSET.unpack_from(self.content, at)[0], num_fields),
            )

    def count(self, length, what):
        self.entries_left -= length
        if self.entries_left < 0:
            raise _Refused(
                f"{what} has {length} entries, more than a file of {len(self.content)} bytes "
                "holds (each takes 4 bytes)"
            )
        return length

    def check_model(self):
        model = _Table(self.content, _UOFFSET.unpack_from(self.content, 0)[0], 10)
        # Tensors whose data lies in other files (external buffers, fields 8 and 9): tfkd
        # writes and reads self-contained files only.
        if model.vector(8, 4)[1] or model.vector(9, 4)[1]:
            raise _Refused("its tensors' data lies in other files (external buffers)")
        self.codes = []
        for index, code in self.tables(model, 1, 4, "The operator code list"):
            code.text(1, f"operator code {index}'s custom name")
            # LiteRT reads the larger of the two fields (codes past 127 need the second).
            self.codes.append(max(code.scalar(0, _INT8), code.int32(3)))
        self.num_codes = len(self.codes)
        self.buffers, self.data = [], []
        for index, buffer in self.tables(model, 4, 3, "The buffer list"):
            self.buffers.append(self.buffer_bytes(buffer, index))
        self.num_subgraphs = model.vector(2, 4)[1]
        self.calls = []  # per subgraph: [(op index, op name, field, subgraph index)]
        self.graphs = [
            self.check_subgraph(subgraph, f"subgraph {index}")
            for index, subgraph in self.tables(model, 2, 6, "The subgraph list")
        ]
        if not self.graphs:
            raise _Refused("it has no subgraph (no graph to run)")
        _tflite_subgraphs.check_cycles(self.calls)
        _tflite_subgraphs.follow_sizes(self, self.graphs)
        for index, signature in self.tables(model, 7, 5, "The signature list"):
            self.check_signature(signature, f"signature {index}")

    def buffer_bytes(self, buffer, index):
        """The bytes of data `buffer` holds: in the flatbuffer, or past it (files over 2 GB:
        an offset from the file's start, used when > 1)."""
        start, length = buffer.vector(0, 1)
        offset, size = buffer.scalar(1, _UINT64), buffer.scalar(2, _UINT64)
        if offset <= 1:
            self.data.append((start, length) if length else None)
            return length
        if offset + size > len(self.content):
            raise _Refused(
                f"buffer {index} declares {size} bytes at byte {offset}; the file has "
                f"{len(self.content)}"
            )
        self.data.append((offset, size) if size else (start, length) if length else None)
        return length + size

    def check_subgraph(self, subgraph, where):
        tensors = [
            self.check_tensor(tensor, f"tensor {index} of {where}")
            for index, tensor in self.tables(subgraph, 0, 11, f"The tensor list of {where}")
        ]
        ends = []
        for field, kind in ((1, "inputs"), (2, "outputs")):
            ends.append(subgraph.int32s(field))
            self.count(len(ends[-1]), f"The {kind} of {where}")
            self.check_indices(ends[-1], len(tensors), f"{where}'s {kind}", low=0)
        graph = _tflite_subgraphs.Graph(tensors, *ends)
        self.calls.append([])
        for index, operator in self.tables(subgraph, 3, 13, f"The operator list of {where}"):
            self.check_operator(operator, index, where, len(tensors), graph.ops)
        _tflite_scales.check_scales(graph, where)
        _tflite_scales.check_strings(graph, where)
        return graph

    def check_tensor(self, tensor, where):
        name = tensor.text(3, f"the name of {where}")
        where = f"{where} ({name[:60]!r})"
        shape = self.dims(tensor, 0, where, "shape", low=0)
        signature = self.dims(tensor, 7, where, "shape_signature", low=-1)
        buffer = tensor.scalar(2, _UOFFSET)
        if buffer >= len(self.buffers):
            raise _Refused(f"{where} reads buffer {buffer}; the file has {len(self.buffers)}")
        if tensor.scalar(10, _UOFFSET):
            raise _Refused(f"{where}'s data lies in another file (an external buffer)")
        if signature and len(signature) != len(shape):
            raise _Refused(
                f"{where} has shape {shape} and shape_signature {signature} of another rank"
            )
        # LiteRT allocates the shape, and tfkd resizes an input to its signature (sizes
        # left open: `open_size`): the larger counts, and the larger of each size is what
        # the ops' sizes are followed from.
        dims = self.counted_dims(shape)
        elements = math.prod(dims)
        if signature:
            resized = self.counted_dims(signature)
            elements = max(elements, math.prod(resized))
            dims = [max(a, b) for a, b in zip(dims, resized)]
        type_code = tensor.scalar(1, _INT8)
        type_name, bits = _TYPES.get(type_code, ("an unknown type", 128))
        declares = f"{where} declares shape {shape}"
        if signature and signature != shape:
            declares += f" (signature {signature})"
        nbytes = bits * elements // 8
        self.check_bytes(nbytes, self.buffers[buffer], f"{declares} of {type_name}")
        counted = 0 if self.buffers[buffer] else nbytes
        quantization = tensor.table(4, 7)
        if quantization is not None:  # its scales and zero points inside the file
            quantization.vector(2, 4), quantization.vector(3, 8)
        return _Tensor(name, dims, type_code, self.data[buffer], counted, quantization)

    def counted_dims(self, sizes):
        """Sizes for one example: a batch of 0 or -1 counts 1 (a batch of 0 cannot hide a
        tensor), another size left open (-1) `open_size`."""
        counted = [max(size, 1) for size in sizes[:1]]
        return counted + [self.open_size if size == -1 else max(size, 1) for size in sizes[1:]]

    def check_bytes(self, nbytes, data, declares):
        if data:  # the file holds its bytes; LiteRT compares them with the shape itself
            if nbytes > max(MAX_TENSOR_BYTES, data):
                raise _Refused(
                    f"{declares}: {nbytes} bytes, more than the {data} bytes of data the file "
                    f"holds for it and than the {MAX_TENSOR_BYTES} bytes (1 GiB) a tensor may take"
                )
            return
        self.add_bytes(nbytes, nbytes, declares)

    def add_bytes(self, added, nbytes, declares):
        """Counts `added` more bytes for a tensor that takes `nbytes`, as `declares` says."""
        if nbytes > MAX_TENSOR_BYTES:
            raise _Refused(
                f"{declares}: {nbytes} bytes for one example, which LiteRT would allocate at "
                f"load; a tensor the file holds no data for may take at most {MAX_TENSOR_BYTES} "
                "bytes (1 GiB)"
            )
        self.total_bytes += added
        if self.total_bytes > MAX_TOTAL_BYTES:
            raise _Refused(
                f"its tensors without data in the file take more than {MAX_TOTAL_BYTES} "
                f"bytes (4 GiB) together for one example, the most tfkd lets LiteRT allocate "
                f"({self.total_bytes} bytes when {declares})"
            )

    def dims(self, tensor, field, where, name, low):
        start, length = tensor.vector(field, 4)
        if length > MAX_RANK:
            raise _Refused(
                f"{where} has a {name} of rank {length}; LiteRT's kernels take at most "
                f"{MAX_RANK} dimensions"
            )
        self.count(length, f"The {name} of {where}")
        values = list(_sizes(length).unpack_from(self.content, start))
        if any(size < low for size in values):
            accepted = "sizes >= 0" if low == 0 else "sizes >= 0, or -1 for a size left open"
            raise _Refused(f"{where} has {name} {values}; accepted: {accepted}")
        return values

    def check_operator(self, operator, index, graph, num_tensors, ops):
        where = f"op {index} of {graph}"
        code = operator.scalar(0, _UOFFSET)
        if code >= self.num_codes:
            raise _Refused(f"{where} uses operator code {code}; the file has {self.num_codes}")
        indices = {}
        for field, kind in ((1, "inputs"), (2, "outputs"), (8, "intermediates")):
            indices[kind] = operator.int32s(field)
            self.count(len(indices[kind]), f"The {kind} of {where}")
            # -1: an optional input the op is not given.
            self.check_indices(indices[kind], num_tensors, f"{where}'s {kind}", low=-1)
        code = self.codes[code]
        _tflite_counts.check_absent(code, indices, where)
        _tflite_counts.check_counts(code, indices, where)
        _tflite_counts.check_options(code, operator, indices, where)
        for field, called in _tflite_subgraphs.called_subgraphs(code, operator):
            if not 0 <= called < self.num_subgraphs:
                raise _Refused(
                    f"{where} ({_tflite_ops.op_name(code)}) runs subgraph {called} (its "
                    f"{field}); the file has subgraphs 0 to {self.num_subgraphs - 1}"
                )
            self.calls[-1].append((index, _tflite_ops.op_name(code), field, called))
        ops.append((index, code, operator, indices["inputs"], indices["outputs"]))
        # Custom options past 2 GB lie after the flatbuffer, as buffers' data does.
        offset, size = operator.scalar(9, _UINT64), operator.scalar(10, _UINT64)
        if offset > 1 and offset + size > len(self.content):
            raise _Refused(
                f"{where}'s options declare {size} bytes at byte {offset}; the file has "
                f"{len(self.content)}"
            )

    def check_indices(self, indices, num_tensors, what, low):
        if len(indices) and (indices.min() < low or indices.max() >= num_tensors):
            bad = next(int(i) for i in indices if not low <= i < num_tensors)
            raise _Refused(
                f"{what} name tensor {bad}; the subgraph has tensors 0 to {num_tensors - 1}"
            )

    def check_signature(self, signature, where):
        signature.text(2, f"{where}'s key")
        subgraph = signature.scalar(4, _UOFFSET)
        if subgraph >= len(self.graphs):
            raise _Refused(f"{where} runs subgraph {subgraph}; the file has {len(self.graphs)}")
        for field, kind in ((0, "inputs"), (1, "outputs")):
            for index, entry in self.tables(signature, field, 2, f"{where}'s {kind}"):
                entry.text(0, f"the name of {where}'s {kind} {index}")
                tensor = np.array([entry.scalar(1, _UOFFSET)])
                num_tensors = len(self.graphs[subgraph].tensors)
                self.check_indices(tensor, num_tensors, f"{where}'s {kind}", low=0)
