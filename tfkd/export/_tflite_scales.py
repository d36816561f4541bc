"""The quantization scale a `.tflite` op's LiteRT kernel divides by.

LiteRT's kernels for quantized ADD, SUB, SQUARED_DIFFERENCE and the comparisons (int8,
uint8, int16 tensors), and for quantized LOG, SQRT and RSQRT (int16), rescale their
inputs by the ratio of their tensors' scales. A tensor of such a type that the file gives
no quantization scale holds scale 0: a one-op file whose ADD took and gave int8 tensors
without one aborted the process as it loaded (SIGABRT: LiteRT's check on the NaN
multiplier), and one whose int16 LOG did died running (SIGSEGV); 22 of 3,703 one-op files
giving every builtin op int8, uint8, int16 or string tensors crashed so (the others named
here). A file that quantizes them gives each such tensor its scale.

The ops whose sizes the check follows (`_tflite_rules.RULES`: numeric ops) make a string
only of strings: a SOFTMAX of float32 whose output was declared a string crashed the
process running it (SIGSEGV); `check_strings` refuses such an output.
"""

from tfkd.export._tflite_ops import Refused
from tfkd.export._tflite_rules import RULES, op_name

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


def check_scales(graph, where):
    """Refuses an op of `_RESCALING` whose input or output of a quantized type has no
    quantization scale. `graph`: a `_tflite_subgraphs.Graph`, its tensors' `scaled` read."""
    for index, code, _, inputs, outputs in graph.ops:
        types = _RESCALING.get(code, ())
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for tensor in tensors.tolist():
                declared = graph.tensors[tensor] if tensor >= 0 else None
                if declared is not None and declared.type in types and not declared.scaled:
                    raise Refused(
                        f"op {index} of {where} ({op_name(code)}) has the {kind} tensor "
                        f"{tensor} ({declared.name[:60]!r}) of {_QUANTIZED[declared.type]} "
                        "without a quantization scale; LiteRT's kernel rescales by it "
                        "(accepted: a tensor whose quantization gives a scale)"
                    )


_STRING = 5


def check_strings(graph, where):
    """Refuses a string output of an op in `RULES` that takes no string input."""
    for index, code, _, inputs, outputs in graph.ops:
        if code not in RULES:
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
