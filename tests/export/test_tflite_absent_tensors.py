"""A `.tflite` op given no tensor (-1) where LiteRT's kernel takes one: LiteRT read the
absent tensor and the process died (SIGSEGV); tfkd refuses such a file first."""

import sys

import keras
import numpy as np
import pytest

import tfkd
from tests.export.test_hostile_tflite_files import assert_refused_in_child
from tests.export.test_tflite_control_flow import _stop
from tests.export.tflite_builder import assert_refused, build_file, check_file, option_table


def _absent(op, arity, at):
    """`op` of `arity` [1, 4] float32 inputs, one output; input `at` (or the output, for
    `at="output"`) absent (None: none)."""
    tensors = [(f"x{i}", [1, 4], "float32", None) for i in range(arity)]
    tensors.append(("y", [1, 4], "float32", None))
    inputs, outputs = list(range(arity)), [arity]
    if at == "output":
        outputs = [-1]
    elif at is not None:
        inputs[at] = -1
    return ((tensors, [(op, inputs, outputs)], list(range(arity)), [arity]),)


def _while_without_input():
    tensors = [("x", [1, 1], "float32", None), ("y", [1, 1], "float32", None)]
    options = option_table("WhileOptions", condSubgraphIndex=2, bodySubgraphIndex=1)
    body = ([("v", [1, 1], "float32", None)], [], [0], [0])
    return (tensors, [("WHILE", [-1], [1], options)], [0], [1]), body, _stop([1, 1])


# Each crashed the process in LiteRT (XNNPACK's or its own kernels) unchecked.
CRASHED = {
    "add_input_1": (_absent("ADD", 2, 1), "op 0 of subgraph 0 (ADD) has no tensor (-1) for"),
    "relu_input": (_absent("RELU", 1, 0), "(RELU) has no tensor (-1) for its inputs at [0]"),
    "transpose_output": (_absent("TRANSPOSE", 2, "output"), "for its outputs at [0]"),
    "split_output": (_absent("SPLIT", 2, "output"), "(SPLIT) has no tensor (-1) for its outputs"),
    "concatenation": (_absent("CONCATENATION", 3, 2), "(CONCATENATION) has no tensor (-1)"),
    "fully_connected_weights": (
        _absent("FULLY_CONNECTED", 3, 1),
        "inputs at [1]; LiteRT's kernel needs them (of its inputs, only [2] may be absent)",
    ),
    "while_input": (_while_without_input(), "(WHILE) has no tensor (-1) for its inputs at [0]"),
}


@pytest.mark.parametrize("case", CRASHED)
def test_an_absent_tensor_a_kernel_reads_is_refused(tmp_path, case):
    assert_refused(tmp_path / f"{case}.tflite", *CRASHED[case])


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_with_absent_tensors_are_refused_and_the_process_lives(tmp_path):
    assert_refused_in_child(tmp_path, _absent("RELU", 1, None), CRASHED)


def test_an_absent_bias_is_accepted_where_the_kernel_takes_none(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.Dense(5, use_bias=False)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    path = tmp_path / "no_bias.tflite"
    tfkd.export_tflite(model, path)
    sample = np.random.default_rng(0).normal(size=(3, 6, 6, 3)).astype("float32")
    expected = model.predict(sample, verbose=0)
    np.testing.assert_allclose(tfkd.TFLiteModel(path).predict(sample), expected, atol=1e-5)
    graphs = _absent("FULLY_CONNECTED", 3, 2)  # its weights [1, 4]: 1 unit
    check_file(build_file(tmp_path / "fc.tflite", *graphs))
