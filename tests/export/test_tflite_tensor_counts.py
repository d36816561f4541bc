"""A `.tflite` op given fewer inputs or outputs than its LiteRT kernel reads by position:
the kernel read past the op's list and the process died (SIGSEGV); tfkd refuses such a
file first."""

import re
import sys

import numpy as np
import pytest

from tests.export.test_hostile_tflite_files import assert_refused_in_child
from tests.export.tflite_builder import build_file, check_file


def _op(op, arity, num_outputs):
    """A file's graphs: `op` of `arity` inputs (the graph's input, then [1, 4] float32
    constants) and `num_outputs` outputs."""
    tensors = [("x", [1, 4], "float32", None)]
    tensors += [(f"c{i}", [1, 4], "float32", np.ones((1, 4))) for i in range(1, arity)]
    tensors += [(f"y{i}", [1, 4], "float32", None) for i in range(num_outputs)]
    start = max(arity, 1)
    outputs = list(range(start, start + num_outputs))
    return ((tensors, [(op, list(range(arity)), outputs)], [0], outputs or [0]),)


# Each crashed the process in LiteRT unchecked.
CRASHED = {
    "batch_matmul_one_input": (_op("BATCH_MATMUL", 1, 1), "(BATCH_MATMUL) has 1 inputs; Li"),
    "batch_matmul_no_output": (_op("BATCH_MATMUL", 2, 0), "has 0 outputs; LiteRT's kernel reads 1"),
    "sign_no_output": (_op("SIGN", 1, 0), "op 0 of subgraph 0 (SIGN) has 0 outputs"),
    "read_variable_no_output": (_op("READ_VARIABLE", 1, 0), "(READ_VARIABLE) has 0 outputs"),
    "assign_variable_one_input": (_op("ASSIGN_VARIABLE", 1, 0), "(ASSIGN_VARIABLE) has 1 inputs"),
    "slice_one_input": (_op("SLICE", 1, 2), "(SLICE) has 1 inputs; LiteRT's kernel reads 3"),
    "split_one_input": (_op("SPLIT", 1, 2), "(SPLIT) has 1 inputs; LiteRT's kernel reads 2"),
    "strided_slice_three_inputs": (
        _op("STRIDED_SLICE", 3, 1),
        "(STRIDED_SLICE) has 3 inputs; LiteRT's kernel reads 4 (accepted: at least 4)",
    ),
}


@pytest.mark.parametrize("case", CRASHED)
def test_an_op_given_fewer_tensors_than_its_kernel_reads_is_refused(tmp_path, case):
    graph, message = CRASHED[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        check_file(build_file(tmp_path / f"{case}.tflite", *graph))


def test_an_op_given_what_its_kernel_reads_passes(tmp_path):
    check_file(build_file(tmp_path / "matmul.tflite", *_op("BATCH_MATMUL", 2, 1)))
    check_file(build_file(tmp_path / "sign.tflite", *_op("SIGN", 1, 1)))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_with_too_few_tensors_are_refused_and_the_process_lives(tmp_path):
    assert_refused_in_child(tmp_path, _op("SIGN", 1, 1), CRASHED)
