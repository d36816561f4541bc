"""A `.tflite` op given fewer inputs or outputs than its LiteRT kernel reads by position:
the kernel read past the op's list and the process died (SIGSEGV); tfkd refuses such a
file first."""

import sys

import numpy as np
import pytest

from tests.export.test_hostile_tflite_files import assert_refused_in_child, load_in_child
from tests.export.tflite_builder import assert_refused, build_file, check_file, option_table


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
    assert_refused(tmp_path / f"{case}.tflite", *CRASHED[case])


def test_an_op_given_what_its_kernel_reads_passes(tmp_path):
    check_file(build_file(tmp_path / "matmul.tflite", *_op("BATCH_MATMUL", 2, 1)))
    check_file(build_file(tmp_path / "sign.tflite", *_op("SIGN", 1, 1)))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_with_too_few_tensors_are_refused_and_the_process_lives(tmp_path):
    assert_refused_in_child(tmp_path, _op("SIGN", 1, 1), CRASHED)


def _split(num_splits):
    """SPLIT of a [1, 4] input on axis 1 into two [1, 2] outputs; `num_splits` in its
    options (None: no options)."""
    tensors = [("axis", [], "int32", 1), ("x", [1, 4], "float32", None)]
    tensors += [("y0", [1, 2], "float32", None), ("y1", [1, 2], "float32", None)]
    options = [] if num_splits is None else [option_table("SplitOptions", numSplits=num_splits)]
    return ((tensors, [("SPLIT", [0, 1], [2, 3], *options)], [1], [2, 3]),)


def _lrn(radius):
    tensors = [("x", [1, 1, 1, 4], "float32", None), ("y", [1, 1, 1, 4], "float32", None)]
    options = option_table("LocalResponseNormalizationOptions", radius=radius, beta=0.5)
    return ((tensors, [("LOCAL_RESPONSE_NORMALIZATION", [0], [1], options)], [0], [1]),)


def _softmax_to(dtype):
    tensors = [("x", [1, 4], "float32", None), ("y", [1, 4], dtype, None)]
    options = option_table("SoftmaxOptions", beta=1.0)
    return ((tensors, [("SOFTMAX", [0], [1], options)], [0], [1]),)


# Each crashed the process running it (SIGSEGV or SIGABRT) unchecked.
CRASHED_RUNNING = {
    "split_no_options": (_split(None), "(SPLIT) has num_splits 0 and 2 outputs"),
    "split_one_of_two": (_split(1), "(SPLIT) has num_splits 1 and 2 outputs"),
    "split_three_of_two": (_split(3), "(SPLIT) has num_splits 3 and 2 outputs"),
    "lrn_negative_radius": (_lrn(-1), "has radius -1; accepted: 0 to 1073741824"),
    "lrn_largest_radius": (_lrn(2**31 - 1), "has radius 2147483647"),
    "softmax_to_string": (_softmax_to("string"), "(SOFTMAX) makes the string tensor 1 ('y')"),
}


@pytest.mark.parametrize("case", CRASHED_RUNNING)
def test_options_or_types_a_kernel_crashed_on_are_refused(tmp_path, case):
    assert_refused(tmp_path / f"{case}.tflite", *CRASHED_RUNNING[case])


# Loads and runs each file after the first (a child as `load_in_child`'s, running them too).
_RUN = """
import os, sys, numpy as np
from tfkd.export.model import TFLiteModel
for path in sys.argv[2:]:
    try:
        model = TFLiteModel(path)
        model.predict(np.zeros((1, *model._runner.inputs[0]["shape"][1:]), np.float32))
        outcome = "ran"
    except Exception as error:
        outcome = type(error).__name__
    print(os.path.basename(path), "-", outcome, sep="\\t", flush=True)
"""


def test_files_that_crashed_running_are_refused_and_the_process_lives(tmp_path):
    cases = {**CRASHED_RUNNING, "split": (_split(2), None), "lrn": (_lrn(2), None)}
    paths = [build_file(tmp_path / f"{case}.tflite", *cases[case][0]) for case in ["lrn", *cases]]
    lines, result = load_in_child(paths, _RUN)
    assert result.returncode == 0, f"{result.returncode}: {lines} {result.stderr[-1500:]}"
    for case, (_, message) in cases.items():
        outcome = lines[f"{case}.tflite"].split("\t")[1]
        assert outcome == ("ran" if message is None else "UnsafeFileError"), (case, outcome)
