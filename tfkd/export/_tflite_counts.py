"""How many tensors a `.tflite` op must be given where LiteRT's kernel reads them by
position without counting them first.

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
