"""A `.tflite` op whose LiteRT kernel rescales its quantized tensors, given int8, uint8
or int16 tensors without a quantization scale, with several (per channel) or with one
of 0, negative, NaN, inf, subnormal or over 2**126, or an ADD whose output scale is too
small for its inputs': the kernel's multiplier was NaN or out of range and the process
died (SIGABRT, or SIGSEGV); so did a QUANTIZE of int8 or uint8 given such a scale or a
zero point out of its type's range. tfkd refuses such a file first."""

import math
import sys

import numpy as np
import pytest

from tests.export.test_hostile_tflite_files import assert_refused_in_child
from tests.export.tflite_builder import assert_refused, build_file, check_file

SCALE = ([0.5],)


def _op(op, arity, dtype, quantization=(), changed=None):
    """A file's graphs: `op` of `arity` [1, 4] `dtype` graph inputs and one output, each
    tensor quantized with `quantization` (`(scales[, zero points[, dimension]])`; none: no
    quantization), but tensor `changed[0]` with `changed[1:]`."""
    tensors = [(f"x{i}", [1, 4], dtype, None, *quantization) for i in range(arity)]
    output = "bool" if op in ("LESS", "EQUAL") else dtype
    tensors.append(("y", [1, 4], output, None, *quantization))
    if changed is not None:
        index, *replaced = changed
        tensors[index] = (*tensors[index][:4], *replaced)
    return ((tensors, [(op, list(range(arity)), [arity])], list(range(arity)), [arity]),)


def _quantize(source, target, x=(), y=()):
    """A file's graphs: a QUANTIZE of a [1, 4] `source` input (quantized with `x`) into
    `target` (with `y`)."""
    tensors = [("x", [1, 4], source, None, *x), ("y", [1, 4], target, None, *y)]
    return ((tensors, [("QUANTIZE", [0], [1])], [0], [1]),)


def _float32(value):
    return float(np.float32(value))


# Each crashed the process in LiteRT unchecked (ADD as it loaded, the others when run).
CRASHED = {
    "add_int8": (_op("ADD", 2, "int8"), "op 0 of subgraph 0 (ADD) has the input tensor 0"),
    "sub_uint8": (_op("SUB", 2, "uint8"), "('x0') of uint8 without a quantization scale"),
    "less_int8": (_op("LESS", 2, "int8"), "(LESS) has the input tensor 0 ('x0') of int8"),
    "log_int16": (_op("LOG", 1, "int16"), "(LOG) has the input tensor 0 ('x0') of int16"),
    "add_scale_zero": (
        _op("ADD", 2, "int8", SCALE, (0, [0.0])),
        "(ADD) has the input tensor 0 ('x0') of int8 with the quantization scale 0.0;",
    ),
    "sub_scale_negative": (
        _op("SUB", 2, "uint8", SCALE, (1, [-0.5])),
        "(SUB) has the input tensor 1 ('x1') of uint8 with the quantization scale -0.5;",
    ),
    "equal_scale_nan": (
        _op("EQUAL", 2, "int16", SCALE, (0, [math.nan])),
        "(EQUAL) has the input tensor 0 ('x0') of int16 with the quantization scale nan;",
    ),
    "add_scale_inf": (
        _op("ADD", 2, "int8", SCALE, (2, [math.inf])),
        "(ADD) has the output tensor 2 ('y') of int8 with the quantization scale inf;",
    ),
    "sub_scale_over_2_126": (
        _op("SUB", 2, "int16", SCALE, (0, [3e38])),
        f"('x0') of int16 with the quantization scale {_float32(3e38)!r}; LiteRT's kernel",
    ),
    "add_scale_subnormal": (
        _op("ADD", 2, "uint8", SCALE, (2, [1e-40])),
        f"('y') of uint8 with the quantization scale {_float32(1e-40)!r}; LiteRT's kernel",
    ),
    "less_per_channel": (
        _op("LESS", 2, "int8", SCALE, (0, [0.5] * 4, [0] * 4, 1)),
        "(LESS) has the input tensor 0 ('x0') of int8 with 4 quantization scales (one per",
    ),
    "add_output_scale_too_small": (
        _op("ADD", 2, "int8", SCALE, (2, [0.99 / 2**20])),
        f"(ADD) has the input scales 0.5 and 0.5 and the output scale {_float32(0.99 / 2**20)!r}",
    ),
    "quantize_scale_zero": (
        _quantize("float32", "int8", y=([0.0],)),
        "(QUANTIZE) has the output tensor 1 ('y') of int8 with the quantization scale 0.0;",
    ),
    "quantize_zero_point": (
        _quantize("float32", "uint8", y=([0.5], [300])),
        "('y') of uint8 with the zero point 300 (accepted: zero points from 0 to 255)",
    ),
    "requantize_scale_subnormal": (
        _quantize("int8", "int8", x=([1e-40],), y=SCALE),
        f"(QUANTIZE) has the input tensor 0 ('x') of int8 with the quantization scale "
        f"{_float32(1e-40)!r}",
    ),
}


@pytest.mark.parametrize("case", CRASHED)
def test_a_quantized_tensor_without_a_usable_scale_is_refused(tmp_path, case):
    assert_refused(tmp_path / f"{case}.tflite", *CRASHED[case])


def test_a_sub_is_held_to_the_output_scale_an_add_is(tmp_path):
    # LiteRT 2.3 ran this SUB; its source prepares SUB with the check ADD aborted on.
    sub = _op("SUB", 2, "int8", SCALE, (2, [0.99 / 2**20]))
    assert_refused(tmp_path / "sub.tflite", sub, "(SUB) has the input scales 0.5 and 0.5")
    check_file(build_file(tmp_path / "edge.tflite", *_op("SUB", 2, "int8", SCALE, (2, [2**-19]))))


def test_a_scale_vector_past_the_files_end_is_refused(tmp_path):
    # Read only for the ops that rescale (a RELU's went unchecked), every tensor's scales
    # and zero points are held inside the file again.
    path = build_file(tmp_path / "relu.tflite", *_op("RELU", 1, "int8", SCALE))
    content, half = path.read_bytes(), np.float32(0.5).tobytes()
    assert content.count(b"\x01\x00\x00\x00" + half) == 2  # x's and y's one scale
    path.write_bytes(content.replace(b"\x01\x00\x00\x00" + half, b"\xff\xff\xff\x0f" + half))
    with pytest.raises(ValueError, match="declares 268435455 entries, past the file's end"):
        check_file(path)


def test_quantized_tensors_with_scales_pass(tmp_path):
    check_file(build_file(tmp_path / "add.tflite", *_op("ADD", 2, "int8", SCALE)))
    check_file(build_file(tmp_path / "log.tflite", *_op("LOG", 1, "int16", SCALE)))
    check_file(build_file(tmp_path / "relu.tflite", *_op("RELU", 1, "int8")))
    # The least output scale an int8 ADD of 0.5 and 0.5 rescales to, and a bit more.
    small = _op("ADD", 2, "int8", SCALE, (2, [1.01 / 2**20]))
    check_file(build_file(tmp_path / "small.tflite", *small))
    edge = _quantize("float32", "uint8", y=([2.0**-126, 2.0**126], [0, 255], 1))
    check_file(build_file(tmp_path / "quantize.tflite", *edge))
    # A channel of zero weights has scale 0 in a real int16x8 export: not an op checked.
    zero = _op("RELU", 1, "int8", ([0.5, 0.0, 0.5, 0.5], [0] * 4, 1))
    check_file(build_file(tmp_path / "zero.tflite", *zero))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_without_usable_scales_are_refused_and_the_process_lives(tmp_path):
    assert_refused_in_child(tmp_path, _op("LOG", 1, "int16", SCALE), CRASHED)
