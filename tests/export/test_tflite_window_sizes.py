"""The sizes `tfkd/export/_tflite_windows.py` gives the ops that slide a window (CONV_2D,
DEPTHWISE_CONV_2D, CONV_3D, the pools) and the scratch their kernels allocate: on real
exports each computed shape is the one the file declares, LiteRT makes the shapes computed
for crafted files, and what would pass the limits is refused."""

import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfkd
from tests.export.tflite_builder import build_file, check_file, option_table
from tfkd.export import _interpreter, _tflite_file, _tflite_ops
from tfkd.export._interpreter import OPEN_SIZE

K = 2**14
_SIZES = _tflite_ops.Sizes


def _computed(content, monkeypatch):
    """`[(op name, computed dims, declared dims)]` for each output of an op the check
    models (or, `made` given, each output it sizes: a WHILE's, an IF's), in every subgraph,
    as `_tflite_file.check` follows them; a size the file leaves open (-1 in its
    signature) is left out (LiteRT's SPACE_TO_BATCH_ND, for a dilated convolution, makes
    [4, ...] of an example, declared [1, ...]: Keras's exports declare each batch 1,
    signature -1; an RNN's TRANSPOSE puts the batch second)."""
    from ai_edge_litert import schema_py_generated as schema

    model, open_axes = schema.Model.GetRootAs(content, 0), {}
    for g in range(model.SubgraphsLength()):
        for t in range(model.Subgraphs(g).TensorsLength()):
            signature = np.atleast_1d(model.Subgraphs(g).Tensors(t).ShapeSignatureAsNumpy())
            open_axes[g, t] = {a for a, size in enumerate(signature) if size == -1}
    found = []

    class Recording(_SIZES):  # not a Recording an earlier call set
        def follow(self, index, code, operator, inputs, outputs, made=None):
            super().follow(index, code, operator, inputs, outputs, made)
            graph = int(self.where.split()[1])  # "subgraph 2 (as op 0 (WHILE) ...)"
            if code in _tflite_ops._RULES or made is not None:
                for t in self.outputs:
                    computed, declared = self.dims[t], self.tensors[t].dims
                    if computed is not None and len(computed) == len(declared):
                        axes = open_axes[graph, t]
                        computed = [d for a, d in enumerate(computed) if a not in axes]
                        declared = [d for a, d in enumerate(declared) if a not in axes]
                    found.append((_tflite_ops.op_name(code), computed, declared))

    monkeypatch.setattr(_tflite_ops, "Sizes", Recording)
    _tflite_file.check(content, OPEN_SIZE)
    return found


def _image_model():
    inputs = keras.Input((33, 29, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="valid")(x)
    x = keras.layers.Conv2D(4, (3, 2), dilation_rate=2, padding="same")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid")(x)
    x = keras.layers.DepthwiseConv2D(2, dilation_rate=2, padding="same")(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.AveragePooling2D(2, strides=1, padding="valid")(x)
    x = keras.layers.Conv2D(5, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _volume_model():
    inputs = keras.Input((5, 6, 7, 2))
    x = keras.layers.Conv3D(3, 2, strides=(1, 2, 2), padding="same")(inputs)
    x = keras.layers.Conv3D(4, (2, 3, 2), padding="valid")(x)
    return keras.Model(inputs, keras.ops.sum(x, axis=(1, 2), keepdims=True))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("windows")
    keras.utils.set_random_seed(0)
    image, volume = _image_model(), _volume_model()
    x = np.random.default_rng(0).normal(size=(16, 33, 29, 3)).astype("float32")
    tfkd.export_tflite(image, folder / "image.tflite")
    tfkd.export_tflite(image, folder / "int8.tflite", quantization="int8", representative_data=x)
    tfkd.export_tflite(volume, folder / "volume.tflite")
    return folder


def test_the_shapes_computed_for_real_exports_are_the_declared_ones(exports, monkeypatch):
    for name, ops in {
        "image.tflite": {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN"},
        "int8.tflite": {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN"},
        "volume.tflite": {"CONV_3D", "SUM"},
    }.items():
        found = _computed((exports / name).read_bytes(), monkeypatch)
        assert ops <= {op for op, _, _ in found}, (name, found)
        wrong = [
            (op, computed, declared) for op, computed, declared in found if computed != declared
        ]
        assert not wrong, (name, wrong)


_KINDS = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "CONV_3D": "Conv3DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
}


def _window_op(name, x, weights=None, declared=(1, 1, 1, 1), **fields):
    """One op of `name` on the graph input `x` (declared `x`), with the weights (of shape
    `weights`, a graph input too: a few bytes declared) and bias it takes, `y` declared
    `declared` out, its options `fields` (defaults: strides and dilations 1)."""
    tensors, inputs = [("x", list(x), "float32", None)], [0]
    if weights is not None:
        channels = weights[-1] if name != "CONV_2D" else weights[0]
        tensors += [("w", list(weights), "float32", None), ("b", [channels], "float32", None)]
        inputs += [1, 2]
    tensors.append(("y", list(declared), "float32", None))
    ones = ["strideW", "strideH"] + (["strideD"] if name == "CONV_3D" else [])
    if weights is not None:
        ones += ["dilationWFactor", "dilationHFactor"] + (["dilationDFactor"] * (name == "CONV_3D"))
    options = option_table(_KINDS[name], **{**dict.fromkeys(ones, 1), **fields})
    return (tensors, [(name, inputs, [len(tensors) - 1], options)], inputs, [len(tensors) - 1])


SAME, VALID = 0, 1
AGREEING = {
    "conv_same_stride_2": ("CONV_2D", (1, 9, 8, 2), (3, 3, 2, 2), dict(strideW=2, strideH=2)),
    "conv_valid_dilated": (
        "CONV_2D",
        (1, 11, 9, 2),
        (4, 3, 2, 2),
        dict(padding=VALID, strideH=3, dilationWFactor=2, dilationHFactor=3),
    ),
    "depthwise_multiplier_3": (
        "DEPTHWISE_CONV_2D",
        (1, 7, 6, 2),
        (1, 3, 3, 6),
        dict(padding=VALID, strideW=2, depthMultiplier=3),
    ),
    "conv_3d": (
        "CONV_3D",
        (1, 5, 9, 8, 2),
        (2, 3, 2, 2, 4),
        dict(padding=VALID, strideH=2, dilationDFactor=2),
    ),
    "l2_pool_valid": (
        "L2_POOL_2D",
        (1, 9, 7, 3),
        None,
        dict(padding=VALID, strideW=2, strideH=3, filterWidth=2, filterHeight=3),
    ),
    "average_pool_same": (
        "AVERAGE_POOL_2D",
        (1, 9, 7, 3),
        None,
        dict(strideW=3, strideH=2, filterWidth=3, filterHeight=2),
    ),
    "max_pool_valid": (
        "MAX_POOL_2D",
        (1, 8, 7, 3),
        None,
        dict(padding=VALID, strideW=2, strideH=2, filterWidth=3, filterHeight=3),
    ),
}


@pytest.mark.parametrize("case", sorted(AGREEING))
def test_litert_makes_the_shapes_computed(tmp_path, monkeypatch, case):
    from ai_edge_litert import interpreter as litert

    name, x, weights, fields = AGREEING[case]
    path = build_file(tmp_path / f"{case}.tflite", _window_op(name, x, weights, **fields))
    ((op, computed, declared),) = _computed(path.read_bytes(), monkeypatch)
    interpreter = litert.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    made = interpreter.get_output_details()[0]["shape"].tolist()
    assert (op, computed) == (name, made) and declared == [1, 1, 1, 1]


# Each op made to output n * 2**14 float32s, declared [1, 1, 1, 1], from weights declared
# as a graph input of a few bytes: 1 GiB with n = 2**14, one example over with n + 1.
SIZED = {
    "conv_2d": lambda n: _window_op("CONV_2D", (1, 128, 128, 1), (n, 1, 1, 1)),
    "depthwise_conv_2d": lambda n: _window_op(
        "DEPTHWISE_CONV_2D", (1, 128, 128, 1), (1, 1, 1, n), depthMultiplier=n
    ),
    "conv_3d": lambda n: _window_op("CONV_3D", (1, 1, 128, 128, 1), (1, 1, 1, 1, n)),
    # A negative window under VALID padding adds to the input's size (LiteRT's kernels
    # refuse it; XNNPACK refuses a pool's): the check counts it, not knowing which.
    "max_pool_2d": lambda n: _window_op(
        "MAX_POOL_2D", (1, 1, 1, 1), padding=VALID, filterHeight=2 - K, filterWidth=2 - n
    ),
}


@pytest.mark.parametrize("case", sorted(SIZED))
def test_what_a_window_op_sizes_past_the_limits_is_refused(tmp_path, case):
    check_file(build_file(tmp_path / f"{case}_1gib.tflite", SIZED[case](K)))  # 1 GiB: admitted
    with pytest.raises(
        ValueError,
        match=rf"op 0 \({case.upper()}\) of subgraph 0 makes tensor \d \('y'\) of shape "
        rf"\[[\d, ]+\] of float32: {4 * K * (K + 1)} bytes for one example.*at most 1073741824",
    ):
        check_file(build_file(tmp_path / f"{case}.tflite", SIZED[case](K + 1)))


# Scratch of 1 GiB and then over it (its output is small): LiteRT's im2col, a 4x4 window
# over 2**10 channels (4 bytes each) at 128x128 pixels, and XNNPACK's indirection, a
# pointer (8 bytes) for each position of a 64x32 window at 256x256 pixels.
SCRATCH = {
    "im2col": (
        lambda n: _window_op("CONV_2D", (1, 128 + 3, 128 + 3, n), (1, 4, 4, n), padding=VALID),
        2**10,
        "its 4x4 window at each of its 16384 output pixels \\(LiteRT's im2col: {} float32",
    ),
    "indirection": (
        lambda n: _window_op("DEPTHWISE_CONV_2D", (1, 256, 256, 1), (1, 64, n, 1)),
        32,
        "its 64x{} window at each of its 65536 output pixels .*XNNPACK's indirection",
    ),
}


@pytest.mark.parametrize("case", sorted(SCRATCH))
def test_the_scratch_a_kernel_allocates_is_held_to_a_tensors_limit(tmp_path, case):
    build, n, message = SCRATCH[case]
    check_file(build_file(tmp_path / f"{case}_1gib.tflite", build(n)))
    over = n + 1
    with pytest.raises(ValueError, match=message.format(16 * over if case == "im2col" else over)):
        check_file(build_file(tmp_path / f"{case}.tflite", build(over)))


def _filter_of_unknown_shape(name, channels):
    """`name` on a [1, 1024, 1024, 1] input (CONV_3D: [1, 1, 1024, 1024, 1]), its filter
    `channels` ones made by a TILE that an op the check does not size (a custom op) keeps:
    the check knows the filter's elements, not its shape, which sizes the output."""
    rank = 5 if name == "CONV_3D" else 4
    at = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "CONV_3D": 4}[name]
    multiples = [channels if axis == at else 1 for axis in range(rank)]
    ones = [1] * rank
    tensors = [("x", [*ones[3:], 1024, 1024, 1], "float32", None)]
    tensors += [("one", ones, "float32", np.ones(ones)), ("m", [rank], "int32", multiples)]
    tensors += [("t", ones, "float32", None), ("axis", [1], "int32", [at])]
    tensors += [("w", ones, "float32", None), ("b", [channels], "float32", np.zeros(channels))]
    tensors.append(("y", ones, "float32", None))
    options = _window_op(name, ones, ones, depthMultiplier=channels)[1][0][3]
    ops = [
        ("TILE", [1, 2], [3]),
        ("CUSTOM", [3, 4], [5]),
        (name, [0, 5, 6], [7], options),
    ]
    return (tensors, ops, [0], [7])


@pytest.mark.parametrize("name", ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D"])
def test_a_filter_whose_shape_is_not_followed_is_refused(tmp_path, name):
    # CONV_2D's passed the check, and LiteRT allocated its [1, 1024, 1024, 258] float32
    # output at load (1,082,130,432 bytes; touched when run): the check had taken the
    # output as declared ([1, 1, 1, 1]) times the filter's growth (258).
    path = build_file(tmp_path / "filter.tflite", _filter_of_unknown_shape(name, 258))
    with pytest.raises(
        ValueError,
        match=rf"op 2 \({name}\) of subgraph 0 makes tensor 7 \('y'\) of up to 2147483647 "
        r"elements of float32",
    ):
        check_file(path)


def _held_filter_conv(activation=0, filter_type="float32", dequantized=False):
    """A CONV_2D of a [1, 1024, 1024, 8] input whose [1, 6, 6, 8] filter and bias the file
    holds (or DEQUANTIZE makes from float16 it holds): 288 values of im2col an output
    pixel, 1.2 GB in all, which only LiteRT's kernel allocates."""
    weights = np.full((1, 6, 6, 8), 0.5, filter_type)
    tensors = [("x", [1, 1024, 1024, 8], "float32", None)]
    tensors += [("w", list(weights.shape), filter_type, weights), ("b", [1], "float32", [0.0])]
    tensors += [("y", [1, 1024, 1024, 1], "float32", None)]
    options = option_table(
        "Conv2DOptions",
        strideW=1,
        strideH=1,
        dilationWFactor=1,
        dilationHFactor=1,
        fusedActivationFunction=activation,
    )
    ops = [("CONV_2D", [0, 1, 2], [3], options)]
    if dequantized:
        tensors.append(("w32", list(weights.shape), "float32", None))
        ops = [("DEQUANTIZE", [1], [4]), ("CONV_2D", [0, 4, 2], [3], options)]
    return (tensors, ops, [0], [3])


@pytest.mark.parametrize("dequantized", [False, True])
def test_im2col_counts_where_litert_kernel_can_prepare_the_conv(tmp_path, dequantized):
    # Before, im2col counted for every CONV_2D refused tfkd's own export of a 5x5 Conv2D
    # over 512x512x64 (1.7 GB of im2col), which XNNPACK runs without one.
    filter_type = "float16" if dequantized else "float32"
    path = build_file(tmp_path / "held.tflite", _held_filter_conv(0, filter_type, dequantized))
    check_file(path)  # XNNPACK takes it: no im2col
    message = r"needs scratch for its 6x6 window .*LiteRT's im2col: 288 float32"
    with pytest.raises(ValueError, match=message):  # run without the delegate
        _tflite_file.check(path.read_bytes(), OPEN_SIZE, builtin_kernels=True)
    tanh = build_file(tmp_path / "tanh.tflite", _held_filter_conv(4, filter_type, dequantized))
    with pytest.raises(ValueError, match=message):  # XNNPACK does not fuse tanh
        check_file(tanh)


def test_a_file_litert_runs_without_xnnpack_is_checked_for_its_kernels_scratch(tmp_path):
    # The interpreter falls back to LiteRT's kernels when XNNPACK refuses a file: the
    # check is made again for them, before LiteRT prepares anything.
    path = build_file(tmp_path / "held.tflite", _held_filter_conv())
    with pytest.raises(_interpreter.UnsafeFileError, match="LiteRT's im2col: 288 float32"):
        _interpreter._builtin_interpreter(path.read_bytes(), path, num_threads=None)


def _pool(name, x, window, stride=1, padding=VALID):
    return _window_op(
        name,
        x,
        padding=padding,
        strideH=stride,
        strideW=stride,
        filterHeight=window[0],
        filterWidth=window[1],
    )


# XNNPACK's pools point at the input for each window: with LiteRT 2.3 a MAX_POOL_2D holds a
# row of pointers (8 bytes) for each output row, window height x (window width + output
# width - 1) for stride 1, and an AVERAGE_POOL_2D one row plus one for each output row that
# the padding reaches, and a float32 for each output pixel under SAME padding.
POOLS = {  # (op, input, window, stride, padding): XNNPACK's scratch, refused over 1 GiB
    "max_1_gib": (("MAX_POOL_2D", (1, 1087, 2048, 1), (64, 64), 1, VALID), 2**30),
    "max_over": (("MAX_POOL_2D", (1, 1087, 2049, 1), (64, 64), 1, VALID), 2**30 + 2**19),
    "max_320_at_1024": (("MAX_POOL_2D", (1, 1024, 1024, 1), (320, 320), 1, VALID), 1848115200),
    # The padding reaches each of the 320 rows above and below the output's 1024 (1.1 GB,
    # touched at load), and the 320 rows past an output of 8 (1.1 GB reserved).
    "average_320_same": (("AVERAGE_POOL_2D", (1, 1024, 1024, 1), (320, 320), 1, SAME), 1104379904),
    "average_320_over_8_rows": (
        ("AVERAGE_POOL_2D", (1, 8, 1024, 1), (320, 320), 1, SAME),
        1100218368,
    ),
    "average_320_valid": (("AVERAGE_POOL_2D", (1, 1024, 1024, 1), (320, 320), 1, VALID), 2621440),
    # XNNPACK refuses a stride past the window (LiteRT's kernel, which allocates none, runs
    # it) and a padding neither SAME nor VALID, runs a 1x1 window as a copy, and takes no
    # L2_POOL_2D.
    "stride_past_window": (("AVERAGE_POOL_2D", (1, 1024, 1024, 1), (320, 320), 321, SAME), 0),
    "one_by_one": (("MAX_POOL_2D", (1, 1024, 1024, 1), (1, 1), 1, SAME), 0),
    "l2": (("L2_POOL_2D", (1, 1024, 1024, 1), (320, 320), 1, VALID), 0),
    "padding_neither": (("AVERAGE_POOL_2D", (1, 1024, 1024, 1), (320, 320), 1, 2), 0),
}


def _scratch_counted(path, monkeypatch):
    """`[(bytes, what they hold)]` of the scratch `check_file` counts for `path`'s ops, and
    what it raised."""
    counted, scratch = [], _tflite_ops.Sizes.scratch
    monkeypatch.setattr(
        _tflite_ops.Sizes,
        "scratch",
        lambda s, n, what: counted.append((n, what)) or scratch(s, n, what),
    )
    try:
        check_file(path)
    except ValueError as error:
        return counted, error
    return counted, None


def test_the_scratch_counted_for_real_pools_is_xnnpacks(exports, monkeypatch):
    # MaxPooling2D(2, padding="same") over 7x6: 4 rows of 2 x (2 + 2 x 2) pointers;
    # AveragePooling2D(2, strides=1) over its 4x3: 1 row of 2 x (2 + 2 - 1).
    for name in ("image.tflite", "int8.tflite"):
        counted, error = _scratch_counted(exports / name, monkeypatch)
        pools = [n for n, what in counted if "window (XNNPACK" in what]
        assert error is None and pools == [384, 48], (name, error, pools)


@pytest.mark.parametrize("case", sorted(POOLS))
def test_xnnpack_pool_scratch_is_counted_and_held_to_a_tensors_limit(tmp_path, monkeypatch, case):
    # Before, no pool's scratch was counted: a 320x320 AVERAGE_POOL_2D over 1024x1024 made
    # XNNPACK allocate over 1 GiB at load.
    pool, expected = POOLS[case]
    path = build_file(tmp_path / f"{case}.tflite", _pool(*pool))
    counted, error = _scratch_counted(path, monkeypatch)
    assert sum(n for n, _ in counted) == expected
    window = "x".join(map(str, pool[2]))
    refusal = rf"op 0 \({pool[0]}\) of subgraph 0 needs scratch for its {window} window \(XNNPACK"
    if expected > 2**30:
        assert error is not None and re.search(refusal, str(error)), error
    else:
        assert error is None, error
    _tflite_file.check(path.read_bytes(), OPEN_SIZE, builtin_kernels=True)  # LiteRT's: none


# Loads each file with XNNPACK (LiteRT's default) under a 3 GiB address space and prints the
# bytes its process maps and touches as the interpreter allocates its tensors.
_MEASURE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from ai_edge_litert import interpreter as litert

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return [int(fields[key].split()[0]) * 1024 for key in ("VmSize", "VmRSS")]

# `--builtin` first: LiteRT's own kernels, without XNNPACK.
paths, options = sys.argv[1:], {}
if paths[:1] == ["--builtin"]:
    paths = paths[1:]
    options["experimental_op_resolver_type"] = (
        litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
for path in paths:
    interpreter = litert.Interpreter(model_path=path, **options)
    before = status()
    interpreter.allocate_tensors()
    print(*(after - was for after, was in zip(status(), before)), flush=True)
    del interpreter
"""


def test_litert_allocates_the_pool_scratch_counted(tmp_path, monkeypatch):
    # A max pool touches its pointers at load (1009 rows of 16 x 1024: 132 MB); an average
    # pool over 8 rows whose padding reaches 320 maps its 1.1 GB and touches 8 rows.
    pools = [("MAX_POOL_2D", (1, 1024, 1024, 1), (16, 16), 1, VALID)]
    pools.append(("AVERAGE_POOL_2D", (1, 8, 1024, 1), (320, 320), 1, SAME))
    paths = [build_file(tmp_path / f"{i}.tflite", _pool(*pool)) for i, pool in enumerate(pools)]
    counted = [sum(n for n, _ in _scratch_counted(path, monkeypatch)[0]) for path in paths]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    grown = [list(map(int, line.split())) for line in result.stdout.splitlines()]
    assert len(grown) == 2, result.stderr[-1500:]
    (max_mapped, max_touched), (average_mapped, _) = grown
    tensors = 4 * (1024 * 1024 + 1009 * 1009)  # the max pool's input and output, untouched
    assert counted[0] <= max_touched <= counted[0] + 2**21
    assert counted[0] + tensors <= max_mapped <= counted[0] + tensors + 2**21
    assert counted[1] <= average_mapped <= counted[1] + 2**21
