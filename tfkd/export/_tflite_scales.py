"""The quantization scale a `.tflite` op's LiteRT kernel divides by.

LiteRT's kernels for quantized ADD, SUB, SQUARED_DIFFERENCE and the comparisons (int8,
uint8, int16 tensors), and for quantized LOG, SQRT and RSQRT (int16), rescale their
inputs by the ratio of their tensors' scales. A tensor of such a type that the file gives
no quantization scale holds scale 0: a one-op file whose ADD took and gave int8 tensors
without one aborted the process as it loaded (SIGABRT: LiteRT's check on the NaN
multiplier), and one whose int16 LOG did died running (SIGSEGV); 22 of 3,703 one-op files
giving every builtin op int8, uint8, int16 or string tensors crashed so (the others named
here). A file that quantizes them gives each such tensor its scale, and one: these
kernels read a tensor of several (per channel) as of scale 0, and a scale of 0, negative,
NaN, inf or over 2**126 aborted the process as well, as did an ADD whose output scale was
at most twice its larger input scale over 2**20 (int16: 2**15), below what its kernel
rescales to; scales from 2**-126 (subnormal ones, which no real file holds, are refused
with them) to 2**126 pass. A QUANTIZE of int8 or uint8 whose scale was 0, negative, NaN,
inf or subnormal, or whose zero point was out of its type's range, crashed it too
(SIGSEGV). Per-channel vectors of other lengths than each other or than the tensor's
channels, and a `quantized_dimension` out of range, LiteRT refuses itself; crafted one-op
files of the quantized ops tfkd's exports hold found no other crash (`tests/export` keeps a file
of each class that crashed). Real int16x8 exports hold scale 0 for a channel of zero
weights and its bias: no op checked here reads those.

The ops whose sizes the check follows (`_tflite_rules.RULES`: numeric ops) make a string
only of strings: a SOFTMAX of float32 whose output was declared a string crashed the
process running it (SIGSEGV); `check_strings` refuses such an output.
"""

import numpy as np

from tfkd.export._tflite_ops import Refused
from tfkd.export._tflite_rules import RULES, op_name
from tfkd.export._tflite_windows import RULES as WINDOW_RULES

_QUANTIZED = {3: "uint8", 7: "int16", 9: "int8"}
_ALL = tuple(_QUANTIZED)
# builtin code: the types whose scales its kernel divides by.
_RESCALING = {
    0: _ALL,  # ADD
    41: _ALL,  # SUB
    99: _ALL,  # SQUARED_DIFFERENCE
    71: _ALL,  # EQUAL
    72: _ALL,  # NOT_EQUAL
    58: _ALL,  # LESS
    63: _ALL,  # LESS_EQUAL
    61: _ALL,  # GREATER
    62: _ALL,  # GREATER_EQUAL
    73: (7,),  # LOG
    75: (7,),  # SQRT
    76: (7,),  # RSQRT
}


# A scale LiteRT's kernels rescale by, from 2**-126 (the smallest normal float32) to 2**126
# (an int16 SUB of scale 3e38, under float32's largest, still aborted the process).
_SMALLEST, _LARGEST = 2.0**-126, 2.0**126
_QUANTIZE = 114
# The zero points a QUANTIZE's kernel takes, by type: out of them it crashed (SIGSEGV).
_ZERO_POINTS = {3: (0, 255), 9: (-128, 127)}
_ADD, _SUB = 0, 41


def check_scales(graph, where):
    """Refuses an op of `_RESCALING` whose input or output of a quantized type has no
    quantization scale, several (per channel: LiteRT's kernel reads 0 then) or one out
    of `[_SMALLEST, _LARGEST]`, an ADD whose output scale its kernel cannot rescale to,
    and a QUANTIZE of int8 or uint8 with such a scale or a zero point out of its type.
    `graph`: a `_tflite_subgraphs.Graph`, its tensors' `quantization` read."""
    for index, code, _, inputs, outputs in graph.ops:
        types = _RESCALING.get(code, ())
        kinds = (("input", inputs), ("output", outputs))
        for kind, tensor, declared in _quantized(graph, kinds, types, code):
            problem = _scale_problem(declared, code == _QUANTIZE)
            if problem:
                raise Refused(
                    f"op {index} of {where} ({op_name(code)}) has the {kind} tensor "
                    f"{tensor} ({declared.name[:60]!r}) of {_QUANTIZED[declared.type]} "
                    f"{problem}"
                )
        if code in (_ADD, _SUB):
            where_op = f"op {index} of {where} ({op_name(code)})"
            _check_output_scale(graph, inputs, outputs, where_op)


def _quantized(graph, kinds, types, code):
    """`(kind, index, tensor)` of each tensor of an op whose quantization is checked."""
    if code == _QUANTIZE:
        types = tuple(_ZERO_POINTS)
    for kind, tensors in kinds:
        for tensor in tensors.tolist():
            if tensor >= 0 and graph.tensors[tensor].type in types:
                yield kind, tensor, graph.tensors[tensor]


def _scale_problem(tensor, quantize):
    """What is wrong with `tensor`'s quantization for a kernel that rescales by it (or,
    `quantize`, a QUANTIZE's), or None."""
    scales = _scales(tensor)
    if not len(scales):
        if quantize:
            return None  # LiteRT's QUANTIZE refuses it itself
        return (
            "without a quantization scale; LiteRT's kernel rescales by it (accepted: a "
            "tensor whose quantization gives a scale)"
        )
    if len(scales) > 1 and not quantize:
        return (
            f"with {len(scales)} quantization scales (one per channel); LiteRT's kernel "
            "rescales by one and reads 0 of several (accepted: one scale)"
        )
    bad = [float(s) for s in scales if not _SMALLEST <= s <= _LARGEST]
    if bad:
        return (
            f"with the quantization scale {bad[0]!r}; LiteRT's kernel rescales by it "
            f"(accepted: scales from 2**-126 to 2**126, about {_SMALLEST:.3g} to {_LARGEST:.3g})"
        )
    if quantize:
        low, high = _ZERO_POINTS[tensor.type]
        bad = [z for z in _zero_points(tensor) if not low <= z <= high]
        if bad:
            return f"with the zero point {bad[0]} (accepted: zero points from {low} to {high})"
    return None


def _check_output_scale(graph, inputs, outputs, where):
    """Refuses an ADD or SUB whose output scale is at most twice its larger input scale
    over 2**20 (int16: 2**15): LiteRT's kernel requires that multiplier under 1, and aborted
    the process (SIGABRT) on an int8 ADD of 0.05 into 0.99 times that. LiteRT 2.3 ran such
    a SUB; its source prepares SUB with the same check (sub.cc), so it is refused too."""
    indices = [*inputs.tolist()[:2], *outputs.tolist()[:1]]
    tensors = [graph.tensors[t] for t in indices if t >= 0]
    if len(tensors) != 3 or any(t.type not in _QUANTIZED for t in tensors):
        return
    first, second, output = (float(_scales(t)[0]) for t in tensors)
    shift = 15 if tensors[2].type == 7 else 20
    if 2 * max(first, second) >= 2**shift * output:
        raise Refused(
            f"{where} has the input scales {first!r} and {second!r} and the output scale "
            f"{output!r}; LiteRT's kernel needs twice the larger input scale under 2**{shift} "
            f"times the output's (accepted: an output scale over "
            f"{2 * max(first, second) / 2**shift:.3g})"
        )


def _scales(tensor):
    """A tensor's quantization scales (float32 `scale`, QuantizationParameters field 2)."""
    table = tensor.quantization
    start, length = table.vector(2, 4) if table is not None else (0, 0)
    return np.frombuffer(table.content, "<f4", length, start) if length else ()


def _zero_points(tensor):
    """Its zero points (int64 `zero_point`, QuantizationParameters field 3)."""
    return tensor.quantization.int64s(3) if tensor.quantization is not None else []


_STRING = 5


def check_strings(graph, where):
    """Refuses a string output of an op in `RULES` or `WINDOW_RULES` (the convolutions
    and pools) that takes no string input."""
    for index, code, _, inputs, outputs in graph.ops:
        if code not in RULES and code not in WINDOW_RULES:
            continue
        if any(graph.tensors[t].type == _STRING for t in inputs.tolist() if t >= 0):
            continue
        for tensor in outputs.tolist():
            if tensor >= 0 and graph.tensors[tensor].type == _STRING:
                raise Refused(
                    f"op {index} of {where} ({op_name(code)}) makes the string tensor "
                    f"{tensor} ({graph.tensors[tensor].name[:60]!r}) of no string input "
                    "(accepted: an output of a numeric type, or a string made of strings)"
                )
