"""The tensors a `.tflite` op must be given: none absent (-1) but those LiteRT's kernels
take as optional (`check_absent`), and as many as a kernel reads by position without
counting them first (`check_counts`).

Most of LiteRT's kernels check how many inputs and outputs an op has (ADD given one
input: "NumInputs(node) != 2", an error), but some read the tensor at a position the op
does not have, past the end of its list: a one-op file whose BATCH_MATMUL had one input,
or whose SIGN had no output, crashed the process (SIGSEGV) loading or running it through
`tfkd.TFLiteModel`; 39 of 2,576 files giving each builtin op 0 to 3 inputs and 0 to 3
outputs did so, all of them ops below. An op given more tensors than these passes (the
kernels ignore them, or check them).

Two ops' options must agree with their tensors: a SPLIT whose `num_splits` was not its
number of outputs (0, -1, 1 of 2, 3 of 2, no options) crashed the process running it, as
did a LOCAL_RESPONSE_NORMALIZATION whose `radius` was negative or 2**31 - 1 (SIGSEGV,
SIGABRT).
"""

from tfkd.export._tflite_ops import Refused
from tfkd.export._tflite_rules import op_name

# The inputs LiteRT's kernels take as optional (-1: absent), by builtin code: the bias
# of the convolutions (CONV_2D, DEPTHWISE_CONV_2D, CONV_3D, TRANSPOSE_CONV,
# CONV_3D_TRANSPOSE), FULLY_CONNECTED and SVDF; the LSTMs' input gate, peephole,
# projection and layer-norm tensors (and a bidirectional one's auxiliary input); a
# bidirectional RNN's auxiliary input. Every other input, and every output, must be there.
_LSTM = (1, 5, 9, 10, 11, 12, 16, 17)
_OPTIONAL_INPUTS = {
    3: (2,), 4: (2,), 132: (2,), 67: (3,), 141: (3,), 9: (2,), 27: (3,),
    16: (*_LSTM, 20, 21, 22, 23), 44: (*_LSTM, 20, 21, 22, 23),
    52: (*_LSTM, *(17 + i for i in _LSTM), *range(39, 48)),
    46: (9, 10, 11),
}  # fmt: skip
_CUSTOM = 32

# builtin code: (inputs, outputs) the kernel reads by position.
_READ = {
    126: (2, 1),  # BATCH_MATMUL: the two matrices
    143: (1, 1),  # READ_VARIABLE: the resource
    144: (2, 0),  # ASSIGN_VARIABLE: the resource and its value
    158: (1, 1),  # SIGN
    65: (3, 1),  # SLICE: the input, begin and size
    49: (2, 1),  # SPLIT: the axis and the input; one output per split
    45: (4, 1),  # STRIDED_SLICE: the input, begin, end and strides
}


def check_absent(code, indices, where):
    """Refuses an op given no tensor (-1) where its LiteRT kernel takes one: only
    `_OPTIONAL_INPUTS` may be absent (57 of 594 two-op files whose op lacked another,
    a RELU's input, a TRANSPOSE's output, crashed the process, SIGSEGV)."""
    optional = _OPTIONAL_INPUTS.get(code, ())
    for kind, accepted in (("inputs", optional), ("outputs", ())):
        absent = [i for i, tensor in enumerate(indices[kind].tolist()) if tensor == -1]
        wrong = [i for i in absent if i not in accepted]
        if wrong and code != _CUSTOM:  # LiteRT refuses custom ops it has no kernel for
            allowed = f"of its {kind}, only {list(accepted)}" if accepted else "none"
            raise Refused(
                f"{where} ({op_name(code)}) has no tensor (-1) for its {kind} at {wrong}; "
                f"LiteRT's kernel needs them ({allowed} may be absent)"
            )


def check_counts(code, indices, where):
    """Refuses an op with fewer inputs or outputs than its kernel reads. `indices`: the
    op's `{"inputs": ..., "outputs": ...}` tensor indices."""
    if code not in _READ:
        return
    for kind, needed in zip(("inputs", "outputs"), _READ[code], strict=True):
        given = len(indices[kind])
        if given < needed:
            raise Refused(
                f"{where} ({op_name(code)}) has {given} {kind}; LiteRT's kernel reads "
                f"{needed} (accepted: at least {needed})"
            )


_SPLIT, _LRN = 49, 13
_LARGEST_RADIUS = 2**30  # LiteRT's kernel adds the channel to it in 32 bits


def check_options(code, operator, indices, where):
    """Refuses a SPLIT whose `num_splits` is not its number of outputs, and a
    LOCAL_RESPONSE_NORMALIZATION whose `radius` is outside [0, 2**30]."""
    if code == _SPLIT:
        table = operator.options(1, 35)  # SplitOptions
        splits, outputs = table.int32(0) if table is not None else 0, len(indices["outputs"])
        if splits != outputs:
            raise Refused(
                f"{where} (SPLIT) has num_splits {splits} and {outputs} outputs; LiteRT's "
                "kernel writes num_splits outputs (accepted: num_splits equal to the outputs)"
            )
    if code == _LRN:
        table = operator.options(1, 13)  # LocalResponseNormalizationOptions
        radius = table.int32(0) if table is not None else 0
        if not 0 <= radius <= _LARGEST_RADIUS:
            raise Refused(
                f"{where} (LOCAL_RESPONSE_NORMALIZATION) has radius {radius}; accepted: 0 "
                f"to {_LARGEST_RADIUS}"
            )
