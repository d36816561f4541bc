"""The sizes WHILE and IF give the subgraphs they run (`tfkd/export/_tflite_subgraphs.py`):
LiteRT resizes those subgraphs' inputs to the shapes the op passes them, whatever they
declare, then prepares them; the check follows them from those shapes too."""

import sys

import keras
import numpy as np
import pytest

import tfkd
from tests.export.test_hostile_tflite_files import load_in_child
from tests.export.test_tflite_window_sizes import _computed
from tests.export.tflite_builder import build_file, check_file, option_table

K = 2**14
CONV = option_table(
    "Conv2DOptions", padding=1, strideW=1, strideH=1, dilationWFactor=1, dilationHFactor=1
)


def _caller(op, given, first, second):
    """A graph whose `op` runs subgraphs `first` and `second` (WHILE: its condition and
    body; IF, on a constant True: its branches) on its input `x`, of shape `given`."""
    tensors = [("x", given, "float32", None), ("y", given, "float32", None)]
    if op == "WHILE":
        options = option_table("WhileOptions", condSubgraphIndex=first, bodySubgraphIndex=second)
        return (tensors, [("WHILE", [0], [1], options)], [0], [1])
    options = option_table("IfOptions", thenSubgraphIndex=first, elseSubgraphIndex=second)
    tensors.append(("t", [1], "bool", np.array([True])))
    return (tensors, [("IF", [2, 0], [1], options)], [0], [1])


def _stop(declared):
    """A WHILE's condition: a constant False (the body never runs; LiteRT prepares it)."""
    return ([("v", declared, "float32", None), ("c", [1], "bool", np.array([False]))], [], [0], [1])


def _conv_body(channels=600):
    """A CONV_2D of its input (declared [1, 1, 1, 1]) with `channels` filters made by TILE
    (LiteRT's kernel runs it), its output declared [1, 1, 1, 1]; returns its input."""
    tensors = [("v", [1, 1, 1, 1], "float32", None), ("one", [1, 1, 1, 1], "float32", [1])]
    tensors += [
        ("m", [4], "int32", [channels, 1, 1, 1]),
        ("w", [channels, 1, 1, 1], "float32", None),
    ]
    tensors += [("b", [channels], "float32", np.zeros(channels)), ("y", [1] * 4, "float32", None)]
    return (tensors, [("TILE", [1, 2], [3]), ("CONV_2D", [0, 3, 4], [5], CONV)], [0], [0])


def _broadcast_body():
    """An ADD of its input (declared [1, 1]) and a constant [1, K + 1], its output declared
    [1, 1]: given [K, 1], 1 GiB and 64 KiB; returns its input."""
    tensors = [("v", [1, 1], "float32", None)]
    tensors += [("c", [1, K + 1], "float32", np.zeros((1, K + 1))), ("y", [1, 1], "float32", None)]
    return (tensors, [("ADD", [0, 1], [2])], [0], [0])


def _nested(given):
    """A WHILE whose body (subgraph 1) runs, through another WHILE, a CONV_2D's (3)."""
    middle = _caller("WHILE", [1, 1, 1, 1], 2, 3)
    middle = (*middle[:3], [1])  # the body returns what its WHILE made
    return _caller("WHILE", given, 2, 1), middle, _stop([1, 1, 1, 1]), _conv_body()


LARGE = [1, 1024, 1024, 1]  # a [1024, 1024, 600] float32 output: 2.5 GB
SMALL = [1, 1, 1, 1]
# Each: the file, given the caller's input shape; its shape for one refused; the error.
REFUSED = {
    "while_conv": (
        lambda given: (_caller("WHILE", given, 2, 1), _conv_body(), _stop(SMALL)),
        LARGE,
        r"op 1 \(CONV_2D\) of subgraph 1 \(as op 0 \(WHILE\) of subgraph 0 runs it\) makes "
        r"tensor 5 \('y'\) of shape \[1, 1024, 1024, 600\] of float32: 2516582400 bytes",
    ),
    "while_broadcast": (
        lambda given: (_caller("WHILE", given[:2], 2, 1), _broadcast_body(), _stop([1, 1])),
        [K, 1],
        rf"op 0 \(ADD\) of subgraph 1 \(as op 0 \(WHILE\) of subgraph 0 runs it\) makes "
        rf"tensor 2 \('y'\) of shape \[{K}, {K + 1}\] of float32: {4 * K * (K + 1)} bytes",
    ),
    "if_conv": (
        lambda given: (_caller("IF", given, 1, 2), _conv_body(), _stop(SMALL)),
        LARGE,
        r"op 1 \(CONV_2D\) of subgraph 1 \(as op 0 \(IF\) of subgraph 0 runs it\) makes "
        r"tensor 5 \('y'\) of shape \[1, 1024, 1024, 600\]",
    ),
    "nested_while_conv": (
        _nested,
        LARGE,
        r"op 1 \(CONV_2D\) of subgraph 3 \(as op 0 \(WHILE\) of subgraph 1 runs it\) makes "
        r"tensor 5 \('y'\) of shape \[1, 1024, 1024, 600\]",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_subgraph_is_followed_from_the_sizes_its_caller_gives(tmp_path, case):
    graphs, given, message = REFUSED[case]
    with pytest.raises(ValueError, match=message):
        check_file(build_file(tmp_path / f"{case}.tflite", *graphs(given)))
    check_file(build_file(tmp_path / "small.tflite", *graphs(SMALL)))  # as declared: passes


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_a_while_body_litert_would_size_large_is_refused_unallocated(tmp_path):
    # Unchecked, LiteRT reserved 2,408 MiB at load (VmPeak) for this 3,468-byte file
    # (benchmarks/tflite_hostile_memory.py).
    graphs = REFUSED["while_conv"][0]
    paths = [
        build_file(tmp_path / f"{name}.tflite", *graphs(given))
        for name, given in (("small", SMALL), ("while_conv", LARGE))
    ]
    lines, result = load_in_child(paths)
    assert set(lines) == {"while_conv.tflite"}, result.stderr[-1500:]
    growth, outcome = lines["while_conv.tflite"].split("\t")
    assert "op 1 (CONV_2D) of subgraph 1 (as op 0 (WHILE) of subgraph 0 runs it)" in outcome
    assert int(growth) < 200, f"peak RSS grew {growth} MiB"


def test_subgraphs_run_with_ever_other_sizes_are_refused_past_a_bound(tmp_path):
    """200 WHILEs, each giving a body of 200 ADDs other sizes: 40,000 ops to follow, for a
    file of 403 tensors and 400 ops, is refused rather than followed."""
    tensors = [(f"x{i}", [i + 1], "float32", None) for i in range(200)]
    tensors += [(f"y{i}", [i + 1], "float32", None) for i in range(200)]
    options = option_table("WhileOptions", condSubgraphIndex=2, bodySubgraphIndex=1)
    ops = [("WHILE", [i], [200 + i], options) for i in range(200)]
    body = ([("v", [1], "float32", None)], [("ADD", [0, 0], [0])] * 200, [0], [0])
    graphs = ((tensors, ops, list(range(200)), list(range(200, 400))), body, _stop([1]))
    with pytest.raises(
        ValueError, match=r"more different sizes than tfkd follows.*803 tensors and ops"
    ):
        check_file(build_file(tmp_path / "sizes.tflite", *graphs))


class _Loop(keras.layers.Layer):
    """Three steps of a convolution, a scale and a shift, in `keras.ops.fori_loop`: a
    WHILE whose body is a CONV_2D, MUL and ADD."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(3, 3, shape[-1], shape[-1]))
        self.scale = self.add_weight(shape=(shape[-1],))

    def call(self, x):
        def step(i, v):
            return keras.ops.relu(keras.ops.conv(v, self.kernel, padding="same")) * self.scale + 1.0

        return keras.ops.fori_loop(0, 3, step, x)


def test_a_keras_loop_export_is_sized_as_declared_and_agrees(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 10, 4))
    x = _Loop()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    path = tfkd.export_tflite(model, tmp_path / "loop.tflite") and tmp_path / "loop.tflite"
    found = _computed(path.read_bytes(), monkeypatch)
    assert {"WHILE", "CONV_2D", "MUL", "ADD"} <= {op for op, _, _ in found}, found
    wrong = [(op, computed, declared) for op, computed, declared in found if computed != declared]
    assert not wrong
    x = np.random.default_rng(0).normal(size=(4, 12, 10, 4)).astype("float32")
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(tfkd.TFLiteModel(path).predict(x), expected, rtol=1e-4, atol=1e-4)
