"""How many tensors a `.tflite` op must be given where LiteRT's kernel reads them by
position without counting them first.

Most of LiteRT's kernels check how many inputs and outputs an op has (ADD given one
input: "NumInputs(node) != 2", an error), but some read the tensor at a position the op
does not have, past the end of its list: a one-op file whose BATCH_MATMUL had one input,
or whose SIGN had no output, crashed the process (SIGSEGV) loading or running it through
`tfkd.TFLiteModel`; 39 of 2,576 files giving each builtin op 0 to 3 inputs and 0 to 3
outputs did so, all of them ops below. An op given more tensors than these passes (the
kernels ignore them, or check them).
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
