"""The sizes `tfkd/export/_tflite_rules.py` gives DEPTH_TO_SPACE, SPACE_TO_DEPTH (their
input's blocks moved to its channels or back), REVERSE_SEQUENCE (its input's shape) and
CONV_3D_TRANSPOSE (its constant output shape): LiteRT makes the shapes computed, and an
output declared [1, 1, 1, 1] no longer hides what it, or the ADD after it, makes; and the
scratch TRANSPOSE_CONV and CONV_3D_TRANSPOSE prepare (LiteRT's col2im, XNNPACK's
indirection buffer), held to a tensor's limit."""

import json
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfkd
from tests.export.test_tflite_slice_litert import _CHILD, REPO
from tests.export.test_tflite_window_sizes import _MEASURE, _computed, _scratch_counted
from tests.export.tflite_builder import assert_refused, build_file, check_file, option_table
from tests.helpers import assert_tflite_agrees
from tfkd.export import _tflite_file
from tfkd.export._interpreter import OPEN_SIZE

K = 2**14
_VALID = 1  # schema.fbs's Padding


def _blocks(name, x, block):
    """DEPTH_TO_SPACE or SPACE_TO_DEPTH of `x`, its output declared [1, 1, 1, 1]; no
    options where `block` is None (LiteRT reads a block_size of 0)."""
    kind = "DepthToSpaceOptions" if name == "DEPTH_TO_SPACE" else "SpaceToDepthOptions"
    options = () if block is None else (option_table(kind, blockSize=block),)
    tensors = [("x", list(x), "float32", None), ("y", [1, 1, 1, 1], "float32", None)]
    return (tensors, [(name, [0], [1], *options)], [0], [1])


def _reverse_sequence(x, lengths, seq, batch):
    tensors = [("x", list(x), "float32", None), ("l", [len(lengths)], "int32", lengths)]
    tensors.append(("y", [1, 1, 1, 1], "float32", None))
    options = option_table("ReverseSequenceOptions", seqDim=seq, batchDim=batch)
    return (tensors, [("REVERSE_SEQUENCE", [0, 1], [2], options)], [0], [2])


def _conv_3d_transpose(shape, x, weights, strides=(1, 1, 1), constant=True):
    """CONV_3D_TRANSPOSE of `x` and zeros of `weights` ([depth, height, width, out, in]) to
    `shape` (a graph input where not `constant`), VALID, its output declared [1] * 5."""
    tensors = [("shape", [len(shape)], "int32", shape if constant else None)]
    tensors += [("w", list(weights), "float32", np.zeros(weights))]
    tensors += [("x", list(x), "float32", None), ("y", [1] * 5, "float32", None)]
    options = option_table(
        "Conv3DOptions",
        padding=_VALID,
        **dict(zip(("strideD", "strideH", "strideW"), strides, strict=True)),
        dilationDFactor=1,
        dilationHFactor=1,
        dilationWFactor=1,
    )
    inputs = [2] if constant else [2, 0]
    return (tensors, [("CONV_3D_TRANSPOSE", [0, 1, 2], [3], options)], inputs, [3])


# Small files, and the output LiteRT makes of each (None: it refuses to prepare the op).
AGREEING = {
    "depth_to_space": (_blocks("DEPTH_TO_SPACE", (1, 2, 3, 8), 2), [1, 4, 6, 2]),
    "depth_to_space_3": (_blocks("DEPTH_TO_SPACE", (2, 1, 1, 9), 3), [2, 3, 3, 1]),
    "depth_to_space_not_dividing": (_blocks("DEPTH_TO_SPACE", (1, 2, 3, 8), 3), None),
    "depth_to_space_0": (_blocks("DEPTH_TO_SPACE", (1, 2, 3, 8), 0), None),
    "depth_to_space_negative": (_blocks("DEPTH_TO_SPACE", (1, 1, 1, 4), -2), None),
    "depth_to_space_no_options": (_blocks("DEPTH_TO_SPACE", (1, 2, 3, 8), None), None),
    "depth_to_space_past_int32": (_blocks("DEPTH_TO_SPACE", (1, 2, 3, 8), 2**16), None),
    "depth_to_space_rank_3": (_blocks("DEPTH_TO_SPACE", (2, 3, 8), 2), None),
    "space_to_depth": (_blocks("SPACE_TO_DEPTH", (1, 4, 6, 2), 2), [1, 2, 3, 8]),
    "space_to_depth_3": (_blocks("SPACE_TO_DEPTH", (2, 3, 3, 1), 3), [2, 1, 1, 9]),
    "space_to_depth_not_dividing": (_blocks("SPACE_TO_DEPTH", (1, 4, 6, 2), 3), None),
    "space_to_depth_0": (_blocks("SPACE_TO_DEPTH", (1, 4, 6, 2), 0), None),
    "space_to_depth_negative": (_blocks("SPACE_TO_DEPTH", (1, 2, 2, 1), -2), None),
    "space_to_depth_rank_5": (_blocks("SPACE_TO_DEPTH", (1, 4, 6, 2, 1), 2), None),
    "reverse_sequence": (_reverse_sequence((2, 3, 4), [1, 2], 1, 0), [2, 3, 4]),
    "reverse_sequence_batch_1": (_reverse_sequence((3, 2), [1, 3], 0, 1), [3, 2]),
    "conv_3d_transpose": (
        _conv_3d_transpose([1, 4, 4, 4, 2], (1, 2, 2, 2, 3), (2, 2, 2, 2, 3), (2, 2, 2)),
        [1, 4, 4, 4, 2],
    ),
    "conv_3d_transpose_1": (
        _conv_3d_transpose([1, 3, 3, 3, 2], (1, 2, 2, 2, 3), (2, 2, 2, 2, 3)),
        [1, 3, 3, 3, 2],
    ),
    # Its output shape a graph input: LiteRT sizes it when it runs, as declared at load.
    "conv_3d_transpose_computed": (
        _conv_3d_transpose([1, 3, 3, 3, 2], (1, 2, 2, 2, 3), (2, 2, 2, 2, 3), constant=False),
        [1, 1, 1, 1, 1],
    ),
}


@pytest.mark.parametrize("case", sorted(AGREEING))
def test_litert_makes_the_shapes_computed(tmp_path, monkeypatch, case):
    from ai_edge_litert import interpreter as litert

    graph, expected = AGREEING[case]
    path = build_file(tmp_path / f"{case}.tflite", graph)
    ((op, computed, declared),) = _computed(path.read_bytes(), monkeypatch)
    interpreter = litert.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    if expected is None:  # LiteRT refuses the op: taken as declared, never loaded
        with pytest.raises(RuntimeError, match=rf"\({op}\) failed to prepare"):
            interpreter.allocate_tensors()
        assert computed == declared == [1] * len(declared)
        return
    interpreter.allocate_tensors()
    made = interpreter.get_output_details()[0]["shape"].tolist()
    assert (op, computed) == (graph[1][0][0], made) == (op, expected)


def _hidden(graph, zeros):
    """`graph` (one op, its output declared [1, 1, 1, 1]), then an ADD of its output and
    constant zeros of shape `zeros`."""
    tensors, ops, inputs, (output,) = graph
    tensors = [*tensors, ("zeros", zeros, "float32", np.zeros(zeros))]
    tensors.append(("z", [1, 1, 1, 1], "float32", None))
    ops = [*ops, ("ADD", [output, len(tensors) - 2], [len(tensors) - 1])]
    return (tensors, ops, inputs, [len(tensors) - 1])


# Each op's output holds 2**16 float32s, of a shape that broadcasts with zeros of n along
# an axis of size 1: 1 GiB with n = 2**12, one example over with n + 1. With the op's
# output taken as declared ([1, 1, 1, 1]), the ADD counted [1, 1, 1, n] (16 KiB).
HIDDEN = {
    "DEPTH_TO_SPACE": (
        lambda n: _hidden(_blocks("DEPTH_TO_SPACE", (K, 1, 1, 4), 2), [1, 1, 1, n]),
        lambda n: [K, 2, 2, n],
    ),
    "SPACE_TO_DEPTH": (
        lambda n: _hidden(_blocks("SPACE_TO_DEPTH", (K, 2, 2, 1), 2), [1, n, 1, 1]),
        lambda n: [K, n, 1, 4],
    ),
    "REVERSE_SEQUENCE": (
        lambda n: _hidden(_reverse_sequence((4, K, 1, 1), [1, 2, 3, K], 1, 0), [1, 1, n, 1]),
        lambda n: [4, K, n, 1],
    ),
    # The op itself: 2**14 pixels of n channels (a stride of 128 makes a 1x1 input
    # 128x128; the col2im scratch LiteRT's kernel adds, one pixel's n channels, is small).
    "CONV_3D_TRANSPOSE": (
        lambda n: _conv_3d_transpose(
            [1, 1, 128, 128, n], (1, 1, 1, 1, 1), (1, 1, 1, n, 1), (1, 128, 128)
        ),
        lambda n: [1, 1, 128, 128, n],
    ),
}
# n at which each makes 1 GiB: 2**28 float32s.
_N = {"CONV_3D_TRANSPOSE": K}


def _one_gib(name):
    return _N.get(name, 2**12)


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_an_output_declared_smaller_no_longer_hides_what_follows(tmp_path, name):
    build, shape = HIDDEN[name]
    n = _one_gib(name)
    check_file(build_file(tmp_path / "1gib.tflite", build(n)))  # 1 GiB: admitted
    op = rf"op 0 \({name}\)" if name == "CONV_3D_TRANSPOSE" else r"op 1 \(ADD\)"
    with pytest.raises(
        ValueError,
        match=rf"{op} of subgraph 0 makes tensor \d+ \('[yz]'\) of shape "
        rf"{re.escape(str(shape(n + 1)))} of float32: {4 * math.prod(shape(n + 1))} bytes "
        r"for one example.*at most 1073741824",
    ):
        check_file(build_file(tmp_path / f"{name}.tflite", build(n + 1)))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")
def test_litert_makes_the_shapes_the_check_refuses(tmp_path):
    # Loaded under 3 GiB of address space in a child, each file refused above makes the
    # shape the check refuses: the ADD's (or CONV_3D_TRANSPOSE's) 1 GiB and 256 KiB (1 GiB
    # and 64 KiB), its op's output declared [1, 1, 1, 1] (CONV_3D_TRANSPOSE: [1] * 5).
    names = sorted(HIDDEN)
    paths = [
        build_file(tmp_path / f"{name}.tflite", HIDDEN[name][0](_one_gib(name) + 1))
        for name in names
    ]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    made = [json.loads(line) for line in result.stdout.splitlines()]
    assert made == [[HIDDEN[name][1](_one_gib(name) + 1)] for name in names]
    for path, (shape,) in zip(paths, made, strict=True):
        with pytest.raises(ValueError, match=re.escape(f"of shape {shape} of float32")):
            check_file(path)


def test_a_keras_conv_3d_transpose_export_passes_as_declared(tmp_path, monkeypatch):
    # Keras's Conv3DTranspose exports CONV_3D_TRANSPOSE, its output shape made by SHAPE
    # and PACK (the batch is open): sized when it runs, as declared at load. (No Keras
    # layer or op exports DEPTH_TO_SPACE, SPACE_TO_DEPTH or REVERSE_SEQUENCE.)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6, 6, 3))
    x = keras.layers.Conv3DTranspose(5, 3, strides=2, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Conv3DTranspose(2, 2)(x))
    path = tmp_path / "conv_3d_transpose.tflite"
    tfkd.export_tflite(model, path)
    x = np.random.default_rng(0).normal(size=(2, 4, 6, 6, 3)).astype("float32")
    assert_tflite_agrees(model, path, x)
    found = _computed(path.read_bytes(), monkeypatch)
    transposes = [item for item in found if item[0] == "CONV_3D_TRANSPOSE"]
    assert transposes == [
        ("CONV_3D_TRANSPOSE", [8, 12, 12, 5], [8, 12, 12, 5]),
        ("CONV_3D_TRANSPOSE", [9, 13, 13, 2], [9, 13, 13, 2]),
    ]


def _col2im(pixels):
    """CONV_3D_TRANSPOSE of `pixels` (a [1, depth, height, width, 1] input) by a
    [16, 32, 32, 1, 1] filter: LiteRT's col2im holds 16 x 32 x 32 float32s for each input
    pixel (2**16 bytes), its output a few MB."""
    x = {2**14: (1, 4, 32, 128, 1), 2**14 + 1: (1, 5, 29, 113, 1)}[pixels]
    shape = [1, x[1] + 15, x[2] + 31, x[3] + 31, 1]
    return _conv_3d_transpose(shape, x, (16, 32, 32, 1, 1))


def test_the_col2im_litert_allocates_is_held_to_a_tensors_limit(tmp_path):
    check_file(build_file(tmp_path / "1gib.tflite", _col2im(2**14)))  # 1 GiB: admitted
    with pytest.raises(
        ValueError,
        match=r"op 0 \(CONV_3D_TRANSPOSE\) of subgraph 0 needs scratch for its col2im: 16384 "
        r"float32 values for each of its 16385 input pixels.*1073807360 bytes",
    ):
        check_file(build_file(tmp_path / "over.tflite", _col2im(2**14 + 1)))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")
def test_litert_reserves_the_col2im_counted(tmp_path):
    # The file refused above: LiteRT maps its col2im as it prepares the op (untouched).
    path = build_file(tmp_path / "over.tflite", _col2im(2**14 + 1))
    with pytest.raises(ValueError) as refused:
        check_file(path)
    counted = int(re.search(r"(\d+) bytes", str(refused.value)).group(1))
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=120
    )
    mapped, _ = map(int, result.stdout.split())
    assert counted == 2**14 * (2**14 + 1) * 4 <= mapped <= counted + 2**22, result.stderr[-1500:]


def _transpose_conv(x, weights, dtype="float32", shape=None, stride=1):
    """TRANSPOSE_CONV of `x` by zeros of `weights` ([out, height, width, in]), VALID at
    `stride`, to the constant `shape` (default: the one LiteRT's kernel takes)."""
    out, height, width, _ = weights
    if shape is None:
        shape = [x[0], (x[1] - 1) * stride + height, (x[2] - 1) * stride + width, out]
    scales = ([[0.5] * out, [0] * out], [[0.5]]) if dtype == "int8" else ([], [])
    tensors = [("shape", [4], "int32", shape)]
    tensors += [("w", list(weights), dtype, np.zeros(weights), *scales[0])]
    tensors += [("x", list(x), dtype, None, *scales[1]), ("y", shape, dtype, None, *scales[1])]
    options = option_table("TransposeConvOptions", padding=_VALID, strideH=stride, strideW=stride)
    return (tensors, [("TRANSPOSE_CONV", [0, 1, 2], [3], options)], [2], [3])


# Files admitted, then refused (`(x, weights, dtype)`), and the bytes counted for the
# second: LiteRT's col2im, 16 x 32 x 32 values (4 bytes) for each of 2**14 input pixels,
# then 2**14 + 1 (int8: and an int32 for each output value); XNNPACK's indirection, a
# pointer for each position of a 64x64 window at 128x256 output pixels, then 99x331.
TRANSPOSE_CONV_SCRATCH = {
    "float32": (
        ((1, 128, 128, 1), (16, 32, 32, 1), "float32"),
        ((1, 145, 113, 1), (16, 32, 32, 1), "float32"),
        2**14 * (2**14 + 1) * 4,
    ),
    "int8": (
        ((1, 128, 127, 1), (16, 32, 32, 1), "int8"),
        ((1, 145, 113, 1), (16, 32, 32, 1), "int8"),
        2**14 * (2**14 + 1) * 4 + 176 * 144 * 16 * 4,
    ),
    "xnnpack": (
        ((1, 65, 193, 1), (1, 64, 64, 1), "float32"),
        ((1, 36, 268, 1), (1, 64, 64, 1), "float32"),
        99 * 331 * 64 * 64 * 8,
    ),
}


@pytest.mark.parametrize("case", sorted(TRANSPOSE_CONV_SCRATCH))
def test_the_scratch_a_transpose_conv_prepares_is_held_to_a_tensors_limit(tmp_path, case):
    admitted, refused, counted = TRANSPOSE_CONV_SCRATCH[case]
    check_file(build_file(tmp_path / "admitted.tflite", _transpose_conv(*admitted)))
    path = build_file(tmp_path / "refused.tflite", _transpose_conv(*refused))
    with pytest.raises(
        ValueError,
        match=rf"op 0 \(TRANSPOSE_CONV\) of subgraph 0 needs scratch for its col2im: .*"
        rf": {counted} bytes for one example",
    ):
        check_file(path)
    if case == "xnnpack":  # without XNNPACK, LiteRT's col2im alone: 158 MB
        _tflite_file.check(path.read_bytes(), OPEN_SIZE, builtin_kernels=True)


def _measure(paths, *options):
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *options, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    grown = [list(map(int, line.split())) for line in result.stdout.splitlines()]
    assert len(grown) == len(paths), result.stderr[-1500:]
    return grown


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")
def test_litert_reserves_the_transpose_conv_scratch_counted(tmp_path):
    # The files refused above, run by LiteRT's kernels: their col2im (and int8's int32s)
    # mapped as the op is prepared, untouched; with its output, within 2 MiB.
    cases = ("float32", "int8")
    paths = [
        build_file(tmp_path / f"{case}.tflite", _transpose_conv(*TRANSPOSE_CONV_SCRATCH[case][1]))
        for case in cases
    ]
    for (mapped, _), path in zip(_measure(paths, "--builtin"), paths, strict=True):
        with pytest.raises(ValueError) as refused:
            check_file(path)
        counted = int(re.search(r"(\d+) bytes", str(refused.value)).group(1))
        assert counted <= mapped <= counted + 2**21, path.name


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")
def test_xnnpack_touches_the_indirection_counted(tmp_path, monkeypatch):
    # A 64x64 window over 1x1 pixel: 64x64 output pixels of 4,096 pointers, 128 MiB,
    # touched as XNNPACK prepares the op.
    path = build_file(tmp_path / "xnnpack.tflite", _transpose_conv((1, 1, 1, 1), (1, 64, 64, 1)))
    ((counted, _),), error = _scratch_counted(path, monkeypatch)
    ((mapped, touched),) = _measure([path])
    assert error is None and counted == 64 * 64 * 64 * 64 * 8
    assert counted <= min(mapped, touched) <= max(mapped, touched) <= counted + 2**21


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_a_keras_conv_2d_transpose_export_passes_as_declared(tmp_path, monkeypatch, quantization):
    # Keras's Conv2DTranspose exports TRANSPOSE_CONV, its output shape made by SHAPE and
    # PACK even for a fixed batch: sized, with its col2im, when it runs; nothing at load.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2DTranspose(2, 2)(x))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    path = tmp_path / "conv_2d_transpose.tflite"
    tfkd.export_tflite(model, path, quantization=quantization, representative_data=x)
    if quantization is None:
        assert_tflite_agrees(model, path, x)
    counted, error = _scratch_counted(path, monkeypatch)
    found = _computed(path.read_bytes(), monkeypatch)
    assert error is None and counted == []
    assert [item for item in found if item[0] == "TRANSPOSE_CONV"] == [
        ("TRANSPOSE_CONV", [16, 16, 5], [16, 16, 5]),
        ("TRANSPOSE_CONV", [17, 17, 2], [17, 17, 2]),
    ]


def _strided_by_xnnpack(x, stride):
    """TRANSPOSE_CONV of `x` by a 1x1 window at `stride`, VALID, its constant shape
    [1, 1, 1, 1]: XNNPACK makes (x - 1) * stride + 1 pixels a side whatever it says."""
    return _transpose_conv(x, (1, 1, 1, 1), shape=[1, 1, 1, 1], stride=stride)


def test_the_output_xnnpack_makes_of_a_transpose_conv_is_counted(tmp_path, monkeypatch):
    path = build_file(tmp_path / "64.tflite", _strided_by_xnnpack((1, 64, 64, 1), 64))
    assert _computed(path.read_bytes(), monkeypatch) == [
        ("TRANSPOSE_CONV", [1, 4033, 4033, 1], [1, 1, 1, 1])
    ]
    over = build_file(tmp_path / "128.tflite", _strided_by_xnnpack((1, 129, 129, 1), 128))
    with pytest.raises(
        ValueError,
        match=r"op 0 \(TRANSPOSE_CONV\) of subgraph 0 makes tensor 3 \('y'\) of shape "
        r"\[1, 16385, 16385, 1\] of float32: 1073872900 bytes",
    ):
        check_file(over)
    # LiteRT's kernel refuses the shape (its input would be 1x1), and counts it as said.
    _tflite_file.check(over.read_bytes(), OPEN_SIZE, builtin_kernels=True)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is Linux's")
def test_xnnpack_makes_the_transpose_conv_output_counted(tmp_path, monkeypatch):
    # 4033x4033 float32s and a pointer for each (65 MB and 130 MB), from 524 bytes.
    path = build_file(tmp_path / "64.tflite", _strided_by_xnnpack((1, 64, 64, 1), 64))
    ((scratch, _),), error = _scratch_counted(path, monkeypatch)
    ((mapped, _),) = _measure([path])
    counted = scratch + 4033 * 4033 * 4
    assert error is None and counted <= mapped <= counted + 2**21


def test_a_transposed_convolution_making_a_string_is_refused(tmp_path):
    # Its sizes moved from `_tflite_rules.RULES`, the ops `check_strings` read, and a float32
    # TRANSPOSE_CONV declared to make a string passed.
    tensors, ops, inputs, outputs = _transpose_conv([1, 4, 4, 1], [1, 2, 2, 1])
    tensors[3] = (*tensors[3][:2], "string", None)
    graphs = ((tensors, ops, inputs, outputs),)
    assert_refused(tmp_path / "string.tflite", graphs, "(TRANSPOSE_CONV) makes the string tensor 3")
