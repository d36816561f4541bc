"""A `.tflite` op whose LiteRT kernel rescales its quantized tensors, given int8, uint8
or int16 tensors without a quantization scale: the kernel's multiplier was NaN and the
process died (SIGABRT, or SIGSEGV); tfkd refuses such a file first."""

import re
import sys

import pytest

from tests.export.test_hostile_tflite_files import assert_refused_in_child
from tests.export.tflite_builder import build_file, check_file


def _op(op, arity, dtype, scale=()):
    """A file's graphs: `op` of `arity` [1, 4] `dtype` graph inputs and one output,
    each tensor quantized with `scale` (none: no quantization)."""
    tensors = [(f"x{i}", [1, 4], dtype, None, *scale) for i in range(arity)]
    tensors.append(("y", [1, 4], "bool" if op == "LESS" else dtype, None, *scale))
    return ((tensors, [(op, list(range(arity)), [arity])], list(range(arity)), [arity]),)


# Each crashed the process in LiteRT unchecked (ADD as it loaded, the others when run).
CRASHED = {
    "add_int8": (_op("ADD", 2, "int8"), "op 0 of subgraph 0 (ADD) has the input tensor 0"),
    "sub_uint8": (_op("SUB", 2, "uint8"), "('x0') of uint8 without a quantization scale"),
    "less_int8": (_op("LESS", 2, "int8"), "(LESS) has the input tensor 0 ('x0') of int8"),
    "log_int16": (_op("LOG", 1, "int16"), "(LOG) has the input tensor 0 ('x0') of int16"),
}


@pytest.mark.parametrize("case", CRASHED)
def test_a_quantized_tensor_without_a_scale_is_refused(tmp_path, case):
    graphs, message = CRASHED[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        check_file(build_file(tmp_path / f"{case}.tflite", *graphs))


def test_quantized_tensors_with_scales_pass(tmp_path):
    check_file(build_file(tmp_path / "add.tflite", *_op("ADD", 2, "int8", [0.5])))
    check_file(build_file(tmp_path / "log.tflite", *_op("LOG", 1, "int16", [0.5])))
    check_file(build_file(tmp_path / "relu.tflite", *_op("RELU", 1, "int8")))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_without_scales_are_refused_and_the_process_lives(tmp_path):
    assert_refused_in_child(tmp_path, _op("LOG", 1, "int16", [0.5]), CRASHED)
