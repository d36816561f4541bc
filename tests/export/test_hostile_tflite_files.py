"""`.tflite` files tfkd reads may be hostile: none crashes the process or fills its memory,
and each bad file is a `ValueError` that names it, raised before LiteRT sees its bytes
(`tfkd/export/_tflite_file.py`); a real file loads as before, at any batch size.

The mutants are real exports with their flatbuffer edited, as a hostile file would be."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfkd
from tests.export.tflite_builder import build_file, check_file, option_table
from tfkd.export import _tflite_file
from tfkd.export._interpreter import OPEN_SIZE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB = 2**30


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A float32 and an int8 export of a small dense model, with the model and its data."""
    folder = tmp_path_factory.mktemp("tflite")
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    tfkd.export_tflite(model, folder / "float.tflite")
    tfkd.export_tflite(model, folder / "int8.tflite", quantization="int8", representative_data=x)
    return folder, model, x


def _mutant(source, path, edit):
    """`source` with `edit(model, subgraph)` applied to its flatbuffer (LiteRT's schema)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(source.read_bytes(), 0))
    edit(model, model.subgraphs[0])
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def _shape(shape, signature=None):
    """An edit giving the first op's output (a hidden tensor) `shape`."""

    def edit(model, subgraph):
        tensor = subgraph.tensors[subgraph.operators[0].outputs[0]]
        tensor.shape = np.array(shape, np.int32)
        tensor.shapeSignature = np.array(shape if signature is None else signature, np.int32)

    return edit


def _input_shape(shape, signature=None):
    def edit(model, subgraph):
        tensor = subgraph.tensors[subgraph.inputs[0]]
        tensor.shape = np.array(shape, np.int32)
        tensor.shapeSignature = np.array(shape if signature is None else signature, np.int32)

    return edit


def _op_input(index):
    def edit(model, subgraph):
        operator = subgraph.operators[0]
        operator.inputs = np.array([index, *operator.inputs[1:]], np.int32)

    return edit


# A child that loads each file under an address-space limit of what it holds plus 3 GiB
# (so that an allocation the check missed fails, instead of waking the OOM killer), and
# prints how much its peak resident memory grew while it did.
_CHILD = """
import os, resource, sys
from tfkd.export.model import TFLiteModel

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

TFLiteModel(sys.argv[1])  # a real file first: LiteRT's own memory is not counted
with open("/proc/self/status") as status:
    held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
limit = held + 3 * 2**30 if hard == resource.RLIM_INFINITY else min(held + 3 * 2**30, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
for path in sys.argv[2:]:
    before = peak_mib()
    try:
        TFLiteModel(path)
        outcome = "loaded"
    except Exception as error:
        outcome = type(error).__name__ + ": " + " ".join(str(error).split())
    print(os.path.basename(path), peak_mib() - before, outcome, sep="\\t", flush=True)
"""


def load_in_child(paths, child=_CHILD):
    """`{file name: "peak RSS growth in MiB\\toutcome"}` for `paths[1:]`, each loaded in a
    child (`child`: `_CHILD`, after `paths[0]`), and the child's `subprocess` result."""
    result = subprocess.run(
        [sys.executable, "-c", child, *map(str, paths)],
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    return lines, result


def assert_refused_in_child(tmp_path, real, crashed):
    """Builds the graphs of `real` (a file LiteRT loads) and `crashed` (`{case: (graphs,
    message)}`), loads them in a child, and asserts it lived and refused each case, with
    its message."""
    paths = [build_file(tmp_path / "real.tflite", *real)]
    paths += [build_file(tmp_path / f"{case}.tflite", *crashed[case][0]) for case in crashed]
    lines, result = load_in_child(paths)
    assert set(lines) == {path.name for path in paths[1:]}, (
        f"the child ended with {result.returncode} after {lines}: {result.stderr[-1500:]}"
    )
    for case, (_, message) in crashed.items():
        outcome = lines[f"{case}.tflite"].split("\t")[1]
        assert outcome.startswith("UnsafeFileError") and message in outcome, outcome


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_that_crashed_or_filled_the_process_are_refused_unallocated(files, tmp_path):
    folder = files[0]
    # The int8 file with its input given rank 64: LiteRT died of SIGSEGV loading it.
    rank = _mutant(folder / "int8.tflite", tmp_path / "rank64.tflite", _input_shape([1] * 64))
    # 1 GiB and 128 KiB of float32 that a 1,848-byte file declares for a hidden tensor: XNNPACK
    # allocated and touched all of it at load (16 GiB killed the process).
    huge = _mutant(folder / "float.tflite", tmp_path / "huge.tflite", _shape([8193, 32768]))
    # What LiteRT sizes as it prepares ops (files built op by op, below):
    prepared = [
        # 2 GiB: a TILE's constant multiples.
        build_file(tmp_path / "tile.tflite", _one_op("TILE", [([2**15, 2**14], "int32")])),
        # Each TILE small as declared, 16 GiB through ADD.
        build_file(tmp_path / "chain.tflite", _chain("ADD")(0)),
        # SIGSEGV in XNNPACK: a float32 RESHAPE to rank 61.
        build_file(
            tmp_path / "rank61.tflite", _one_op("RESHAPE", [([1] * 60 + [4], "int32")], x=(1, 4))
        ),
        # SIGSEGV: a WHILE whose body is the subgraph holding it.
        build_file(tmp_path / "recursion.tflite", *_while(1, 0)),
        # 2.5 GB allocated (touched when run): a CONV_2D whose filter has 600 channels.
        build_file(tmp_path / "conv.tflite", _conv([1, 1024, 1024, 1], [600, 1, 1, 1], padding=0)),
        # 1.5 GB of im2col for a 10x10 window over 64 channels, its output 240 KB.
        build_file(
            tmp_path / "im2col.tflite", _conv([1, 256, 256, 64], [1, 10, 10, 64], padding=1)
        ),
    ]
    paths = [folder / "float.tflite", huge, rank, *prepared]
    lines, result = load_in_child(paths)
    assert set(lines) == {path.name for path in paths[1:]}, (
        f"the child ended with {result.returncode} after {lines}: {result.stderr[-1500:]}"
    )
    for name, expected in (
        ("rank64.tflite", "has a shape of rank 64; LiteRT's kernels take at most 8"),
        ("huge.tflite", "declares shape [8193, 32768] of float32: 1073872896 bytes"),
        ("tile.tflite", "op 0 (TILE) of subgraph 0 makes tensor 2 ('y') of shape [32768, 16384]"),
        ("chain.tflite", "op 2 (TILE) of subgraph 0 makes tensor 5 ('y') of shape [2097152, 2048]"),
        ("rank61.tflite", "holds 61 values; LiteRT's kernels take at most 8 dimensions"),
        ("recursion.tflite", "its subgraphs run themselves: subgraph 0 (op 0, WHILE's"),
        ("conv.tflite", "op 1 (CONV_2D) of subgraph 0 makes tensor 5 ('y') of shape [1, 1024"),
        ("im2col.tflite", "op 1 (CONV_2D) of subgraph 0 needs scratch for its 10x10 window"),
    ):
        growth, outcome = lines[name].split("\t")
        assert outcome.startswith("UnsafeFileError: The .tflite file is not a model"), outcome
        assert expected in outcome and f"path='{tmp_path / name}'" in outcome, outcome
        assert int(growth) < 200, f"{name}: peak RSS grew {growth} MiB"


def test_a_real_file_loads_as_before_at_any_batch(files):
    folder, model, x = files
    many = np.tile(x, (64, 1))  # 4,096 examples in one batch: 64 times the activations
    expected = model.predict(many, verbose=0)
    lite = tfkd.TFLiteModel(folder / "float.tflite")
    np.testing.assert_allclose(lite.predict(many, batch_size=len(many)), expected, atol=1e-5)
    int8 = tfkd.TFLiteModel(folder / "int8.tflite").predict(many, batch_size=len(many))
    assert np.mean(int8.argmax(-1) == expected.argmax(-1)) > 0.9


def test_an_op_reading_a_tensor_the_file_lacks_is_refused(files, tmp_path):
    path = _mutant(files[0] / "float.tflite", tmp_path / "op9999.tflite", _op_input(9999))
    message = r"op 0 of subgraph 0's inputs name tensor 9999; the subgraph has tensors 0 to \d+"
    with pytest.raises(ValueError, match=f"{message}.*op9999.tflite"):
        tfkd.TFLiteModel(path)  # was LiteRT's RuntimeError: "called on inconsistent model"
    with pytest.raises(ValueError, match=f"{message}.*op9999.tflite"):
        tfkd.export.ExportReport.from_file(str(path))  # listed its ops without a word


def test_a_truncated_file_names_itself(files, tmp_path):
    content = (files[0] / "float.tflite").read_bytes()
    half = tmp_path / "half.tflite"
    half.write_bytes(content[: len(content) // 2])
    with pytest.raises(
        ValueError, match=r"cut or points outside the file.*Received: path='.*half\.tflite'"
    ):
        tfkd.TFLiteModel(half)
    # What the check does not read (the model's description) is left to LiteRT's
    # verifier, whose refusal names the file too (it did not, for the readers besides
    # TFLiteModel): a description of 1 MiB, past the file's end.
    described = _mutant(
        files[0] / "float.tflite",
        tmp_path / "described.tflite",
        lambda model, subgraph: setattr(model, "description", "tfkd's description"),
    )
    content = bytearray(described.read_bytes())
    at = content.index(b"tfkd's description") - 4
    content[at : at + 4] = (2**20).to_bytes(4, "little")
    described.write_bytes(content)
    with pytest.raises(ValueError, match=r"LiteRT cannot read.*Flatbuffer.*described\.tflite"):
        tfkd.export.ExportReport.from_file(str(described))


def _signature(tensor_index):
    def edit(model, subgraph):
        from ai_edge_litert import schema_py_generated as schema

        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = "x", tensor_index
        signature = schema.SignatureDefT()
        signature.inputs, signature.outputs, signature.signatureKey = [entry], [], "serve"
        model.signatureDefs = [signature]

    return edit


def _tensors(count, shape):
    """An edit adding `count` tensors of `shape` (float32) that no op uses."""

    def edit(model, subgraph):
        from ai_edge_litert import schema_py_generated as schema

        for _ in range(count):
            tensor = schema.TensorT()
            tensor.shape, tensor.name = np.array(shape, np.int32), "extra"
            subgraph.tensors.append(tensor)

    return edit


def _set(attribute, value, where="operator"):
    def edit(model, subgraph):
        target = {"operator": subgraph.operators[0], "subgraph": subgraph, "tensor": None}
        target = target[where] or subgraph.tensors[subgraph.inputs[0]]
        setattr(target, attribute, value)

    return edit


REFUSED = {
    "rank9": (_input_shape([1] * 9), "has a shape of rank 9"),
    "negative_size": (_input_shape([1, -7]), r"has shape \[1, -7\]; accepted: sizes >= 0"),
    "signature": (_shape([1, 16], [-5, 16]), r"has shape_signature \[-5, 16\]"),
    "one_byte_over": (_shape([GIB // 4 + 1]), f"float32: {GIB + 4} bytes for one example"),
    "batch_of_0": (_shape([0, 65536, 65536]), r"\[0, 65536, 65536\] of float32: 17179869184"),
    "open_size": (
        _shape([1, 1, 2**23 + 1], [-1, -1, 2**23 + 1]),
        f"float32: {OPEN_SIZE * (2**23 + 1) * 4} bytes",
    ),
    # 4 GiB and the file's own few hundred bytes.
    # TFLiteModel resizes an input to its signature when it leaves sizes open.
    "signature_sizes": (
        _input_shape([1, 1, 1], [-1, -1, 2**26]),
        r"shape \[1, 1, 1\] \(signature \[-1, -1, 67108864\]\) of float32: 8589934592 bytes",
    ),
    "signature_rank": (_input_shape([1, 8], [-1, 8, 1]), "shape_signature .* of another rank"),
    "total": (_tensors(4, [GIB // 4]), r"more than 4294967296 bytes \(4 GiB\) together"),
    "buffer": (_set("buffer", 10**6, "tensor"), "reads buffer 1000000; the file has"),
    "opcode": (_set("opcodeIndex", 999), "uses operator code 999; the file has"),
    "op_output": (_set("outputs", np.array([12345], np.int32)), "outputs name tensor 12345"),
    "op_input_-5": (_op_input(-5), "inputs name tensor -5"),
    "graph_input": (_set("inputs", np.array([777], np.int32), "subgraph"), "tensor 777"),
    "name": (_set("name", b"dense\xff", "tensor"), r"is not UTF-8 text: b'dense\\xff'"),
    "signature_tensor": (_signature(99), "signature 0's inputs name tensor 99"),
    "no_subgraph": (lambda model, subgraph: model.subgraphs.clear(), "has no subgraph"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_declaration_is_checked_before_litert_reads_it(files, tmp_path, case):
    edit, message = REFUSED[case]
    path = _mutant(files[0] / "float.tflite", tmp_path / f"{case}.tflite", edit)
    with pytest.raises(ValueError, match=message):
        check_file(path)


def test_the_limits_admit_what_they_state(files, tmp_path):
    source = files[0] / "float.tflite"
    for name, edit in {
        "one_gib": _shape([GIB // 4]),
        "three_gib_more": _tensors(3, [GIB // 4]),
        "open_sizes_of_1_gib": _shape([1, 1, 2**23], [-1, -1, 2**23]),
        "rank8": _input_shape([1] * 8),
    }.items():
        check_file(_mutant(source, tmp_path / f"{name}.tflite", edit))


def test_no_changed_byte_or_cut_escapes_as_another_error(files):
    """The check itself never crashes: every byte of the file set to 0xFF, 0x80 or 0x7F,
    and the file cut at every length, passes it or is a ValueError."""
    content = (files[0] / "int8.tflite").read_bytes()
    outcomes = {"passed": 0, "refused": 0}
    variants = [content[:cut] for cut in range(len(content))]
    for position in range(len(content)):
        for value in (0xFF, 0x80, 0x7F):
            changed = bytearray(content)
            changed[position] = value
            variants.append(bytes(changed))
    for variant in variants:
        try:
            _tflite_file.check(variant, OPEN_SIZE)
            outcomes["passed"] += 1
        except ValueError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > len(content)  # every cut, and many changed bytes


# Files built op by op (LiteRT's schema), for what LiteRT does when it prepares an op: it
# sizes the op's outputs itself, from constant data or its inputs' shapes, whatever the
# file declares for them (`tfkd/export/_tflite_ops.py`).


def _one_op(name, constants, x=(1, 1), declared=(1, 1), options=(), x_dtype="float32", x_at=0):
    """One op: the input `x` (declared `x`) and `constants` (`(values, dtype)`) in, `y`
    (declared `declared`) out; `x_at`: where `x` stands among the op's inputs (None: not
    an input of the op, only of the graph)."""
    tensors = [("x", list(x), x_dtype, None)]
    tensors += [(f"c{i}", list(np.shape(v)), t, v) for i, (v, t) in enumerate(constants)]
    inputs = list(range(1, len(tensors)))
    if x_at is not None:
        inputs.insert(x_at, 0)
    tensors.append(("y", list(declared), "int32" if name == "RANGE" else "float32", None))
    out = len(tensors) - 1
    return (tensors, [(name, inputs, [out], *options)], [0], [out])


# Each op made to output n * 2**14 float32s (int32 for RANGE), declared as [1, 1]: 1 GiB
# with n = 2**14, the most a tensor may take; one example over with n = 2**14 + 1.
K = 2**14
SIZED_BY_OPS = {
    "tile": lambda n: _one_op("TILE", [([K, n], "int32")]),
    "tile_int64": lambda n: _one_op("TILE", [([K, n], "int64")]),
    "broadcast_to": lambda n: _one_op("BROADCAST_TO", [([K, n], "int32")]),
    "fill": lambda n: _one_op("FILL", [([K, n], "int32")], x=(), x_at=1),
    "pad": lambda n: _one_op("PAD", [([[0, K - 1], [0, n - 1]], "int32")]),
    "padv2": lambda n: _one_op("PADV2", [([[0, K - 1], [0, n - 1]], "int32"), (0, "float32")]),
    "mirror_pad": lambda n: _one_op(
        "MIRROR_PAD",
        [([[K // 4, K // 4], [0, 0]], "int32")],
        x=(K // 2, n),
        options=[option_table("MirrorPadOptions", mode=1)],
    ),
    "resize_bilinear": lambda n: _one_op(
        "RESIZE_BILINEAR", [([K, n], "int32")], x=(1, 1, 1, 1), declared=(1, 1, 1, 1)
    ),
    "resize_nearest_neighbor": lambda n: _one_op(
        "RESIZE_NEAREST_NEIGHBOR", [([K, n], "int32")], x=(1, 1, 1, 1), declared=(1, 1, 1, 1)
    ),
    "space_to_batch_nd": lambda n: _one_op(
        "SPACE_TO_BATCH_ND",
        [([1, 1], "int32"), ([[0, K - 1], [0, n - 1]], "int32")],
        x=(1, 1, 1, 1),
        declared=(1, 1, 1, 1),
    ),
    "dilate": lambda n: _one_op("DILATE", [([K - 1, n - 1], "int32"), (0, "float32")], x=(2, 2)),
    "one_hot": lambda n: _one_op(
        "ONE_HOT", [(n, "int32"), (1, "float32"), (0, "float32")], x=(K,), x_dtype="int32"
    ),
    "range": lambda n: _one_op("RANGE", [(0, "int32"), (K * n, "int32"), (1, "int32")], x_at=None),
    "transpose_conv": lambda n: _one_op(
        "TRANSPOSE_CONV",
        [([1, K, n, 1], "int32"), (np.ones((1, 1, 1, 1)), "float32")],
        x=(1, 1, 1, 1),
        declared=(1, 1, 1, 1),
        x_at=2,
    ),
    "random_uniform": lambda n: _one_op("RANDOM_UNIFORM", [([K, n], "int32")], x_at=None),
    # Sized by their inputs' shapes, which they multiply.
    "add_broadcast": lambda n: _one_op("ADD", [(np.zeros((1, n)), "float32")], x=(K, 1)),
    "fully_connected": lambda n: _one_op(
        "FULLY_CONNECTED", [(np.zeros((n, 1)), "float32")], x=(K, 1)
    ),
    "batch_matmul": lambda n: _one_op("BATCH_MATMUL", [(np.zeros((1, n)), "float32")], x=(K, 1)),
    "gather": lambda n: _one_op(
        "GATHER",
        [(np.zeros(K), "int32")],
        x=(1, n),
        options=[option_table("GatherOptions", axis=0)],
    ),
}


def _conv(x, weights, padding):
    """A CONV_2D of the graph's input `x`, its weights of shape `weights` a TILE of
    ones (computed: LiteRT's kernel, not XNNPACK's, runs it), bias zeros, its output
    declared [1, 1, 1, 1], strides and dilations 1."""
    tensors = [("x", x, "float32", None), ("one", [1, 1, 1, x[3]], "float32", np.ones(x[3]))]
    tensors += [("m", [4], "int32", np.array([*weights[:3], 1])), ("w", weights, "float32", None)]
    tensors += [
        ("b", weights[:1], "float32", np.zeros(weights[0])),
        ("y", [1] * 4, "float32", None),
    ]
    options = option_table(
        "Conv2DOptions", padding=padding, strideW=1, strideH=1, dilationWFactor=1, dilationHFactor=1
    )
    return (tensors, [("TILE", [1, 2], [3]), ("CONV_2D", [0, 3, 4], [5], options)], [0], [5])


def _chain(middle):
    """TILE, `middle` (an op keeping its input's shape) and TILE, each output declared
    [1, 4]: the first TILE makes [4096, 4], the second [2**21, 2**11], 16 GiB."""

    def build(n):
        tensors = [("x", [1, 4], "float32", None), ("m1", [2], "int32", np.array([2**12, 1]))]
        tensors += [("t1", [1, 4], "float32", None), ("a", [1, 4], "float32", None)]
        tensors += [("m2", [2], "int32", np.array([2**9, 2**9])), ("y", [1, 4], "float32", None)]
        ops = [("TILE", [0, 1], [2]), (middle, [2, 2][: 1 if middle == "RELU" else 2], [3])]
        return (tensors, [*ops, ("TILE", [3, 4], [5])], [0], [5])

    return build


@pytest.mark.parametrize("case", sorted(SIZED_BY_OPS))
def test_what_an_op_sizes_past_the_limits_is_refused(tmp_path, case):
    source = SIZED_BY_OPS[case]
    check_file(build_file(tmp_path / f"{case}_1gib.tflite", source(K)))  # 1 GiB: admitted
    path = build_file(tmp_path / f"{case}.tflite", source(K + 1))
    name = case.upper() if case != "tile_int64" else "TILE"
    name = {"ADD_BROADCAST": "ADD"}.get(name, name)
    kind = "int32" if case == "range" else "float32"
    with pytest.raises(
        ValueError,
        match=rf"op 0 \({name}\) of subgraph 0 makes tensor \d+ \('y'\) "
        rf"of shape \[[\d, ]+\] of {kind}: {4 * K * (K + 1)} bytes for one example.*"
        r"at most 1073741824 bytes \(1 GiB\)",
    ):
        check_file(path)


@pytest.mark.parametrize(
    "middle, message",
    [
        (
            "ADD",
            r"op 2 \(TILE\) .* makes tensor 5 \('y'\) of shape \[2097152, 2048\] "
            r".*: 17179869184 bytes",
        ),
        # An op the check does not size keeps its declared shape, times its input's growth.
        (
            "CUSTOM",
            r"op 2 \(TILE\) .* makes tensor 5 \('y'\) of up to 4294967296 elements",
        ),
    ],
)
def test_sizes_are_followed_through_the_ops(tmp_path, middle, message):
    with pytest.raises(ValueError, match=message):
        check_file(build_file(tmp_path / "chain.tflite", _chain(middle)(0)))


def test_what_ops_make_counts_to_the_total(tmp_path):
    """Six TILEs of 768 MiB each: each under 1 GiB, 4.5 GiB together."""
    tensors, ops = (
        [("x", [1, 1], "float32", None), ("m", [2], "int32", np.array([3 * 2**12, K]))],
        [],
    )
    for index in range(6):
        tensors.append((f"y{index}", [1, 1], "float32", None))
        ops.append(("TILE", [0, 1], [index + 2]))
    with pytest.raises(
        ValueError, match=r"take more than 4294967296 bytes \(4 GiB\) together.*op 5 \(TILE\)"
    ):
        check_file(build_file(tmp_path / "total.tflite", (tensors, ops, [0], list(range(2, 8)))))


@pytest.mark.parametrize(
    "shape, message",
    [
        (
            [1] * 8 + [4],
            r"op 0 \(RESHAPE\) .* makes tensor 2 \('y'\) of shape \[1, .*4\], of rank 9",
        ),
        ([1] * 60 + [4], r"tensor 1 \('c0'\), which an op reads as sizes, holds 61 values"),
    ],
)
def test_an_op_making_a_rank_over_8_is_refused(tmp_path, shape, message):
    # Rank 61 (float32): LiteRT's XNNPACK delegate crashed the process (SIGSEGV).
    with pytest.raises(ValueError, match=message):
        check_file(
            build_file(tmp_path / "rank.tflite", _one_op("RESHAPE", [(shape, "int32")], x=(1, 4)))
        )


def _while(cond, body, options=True):
    """A WHILE counting its input up to 3, with cond and body the subgraphs named."""
    main = (
        [("x", [1], "float32", None), ("y", [1], "float32", None)],
        [
            (
                "WHILE",
                [0],
                [1],
                *(
                    [option_table("WhileOptions", condSubgraphIndex=cond, bodySubgraphIndex=body)]
                    if options
                    else []
                ),
            )
        ],
        [0],
        [1],
    )
    test = (
        [
            ("v", [1], "float32", None),
            ("three", [1], "float32", np.array([3])),
            ("c", [1], "bool", None),
        ],
        [("LESS", [0, 1], [2])],
        [0],
        [2],
    )
    step = (
        [
            ("v", [1], "float32", None),
            ("one", [1], "float32", np.array([1])),
            ("w", [1], "float32", None),
        ],
        [("ADD", [0, 1], [2])],
        [0],
        [2],
    )
    return main, test, step


CALLS_REFUSED = {
    "cond_out_of_range": (
        _while(7, 2),
        r"op 0 of subgraph 0 \(WHILE\) runs subgraph 7 \(its cond_subgraph_index\); the file "
        r"has subgraphs 0 to 2",
    ),
    "body_negative": (_while(1, -1), r"runs subgraph -1 \(its body_subgraph_index\)"),
    # LiteRT recursed into these until the process crashed (SIGSEGV).
    "body_itself": (
        _while(1, 0),
        r"subgraph 0 \(op 0, WHILE's body_subgraph_index\) -> subgraph 0",
    ),
    "no_options": (
        _while(1, 2, options=False),
        r"subgraph 0 \(op 0, WHILE's cond_subgraph_index\) -> subgraph 0",
    ),
}


@pytest.mark.parametrize("case", sorted(CALLS_REFUSED))
def test_subgraphs_an_op_runs_are_checked(tmp_path, case):
    graphs, message = CALLS_REFUSED[case]
    with pytest.raises(ValueError, match=message):
        check_file(build_file(tmp_path / f"{case}.tflite", *graphs))


def test_a_cycle_through_other_subgraphs_and_other_ops_is_refused(tmp_path):
    main, test, step = _while(1, 2)
    # The body runs, through IF, a subgraph whose CALL_ONCE runs the body again.
    body = (
        [
            ("v", [1], "float32", None),
            ("b", [1], "bool", np.array([True])),
            ("w", [1], "float32", None),
        ],
        [("IF", [1, 0], [2], option_table("IfOptions", thenSubgraphIndex=3, elseSubgraphIndex=3))],
        [0],
        [2],
    )
    again = (
        step[0],
        [("CALL_ONCE", [], [], option_table("CallOnceOptions", initSubgraphIndex=2)), *step[1]],
        [0],
        [2],
    )
    with pytest.raises(
        ValueError,
        match=r"subgraph 2 \(op 0, IF's then_subgraph_index\) -> subgraph 3 "
        r"\(op 0, CALL_ONCE's init_subgraph_index\) -> subgraph 2",
    ):
        check_file(build_file(tmp_path / "cycle.tflite", main, test, body, again))
    composite = option_table("StableHLOCompositeOptions", name="c", decompositionSubgraphIndex=5)
    calling = (
        [("x", [1], "float32", None), ("y", [1], "float32", None)],
        [("STABLEHLO_COMPOSITE", [0], [1], composite)],
        [0],
        [1],
    )
    with pytest.raises(
        ValueError,
        match=r"\(STABLEHLO_COMPOSITE\) runs subgraph 5 \(its decomposition_subgraph_index\)",
    ):
        check_file(build_file(tmp_path / "composite.tflite", calling))


def test_a_while_loop_still_runs(tmp_path):
    path = build_file(tmp_path / "while.tflite", *_while(1, 2))
    lite = tfkd.TFLiteModel(path)
    x = np.array([0.5, 5.0], np.float32)  # one at a time: the loop's test is one bool
    np.testing.assert_allclose(lite.predict(x, batch_size=1), [3.5, 5.0])


# Files LiteRT reads, but cannot prepare or run: each public reader names the file in a
# ValueError (LiteRT's bare RuntimeError before).
def _reshape_to(shape):
    return _one_op("RESHAPE", [(shape, "int32")], x=(1, 4), declared=shape)


def test_a_file_litert_cannot_prepare_or_run_is_a_value_error_naming_it(tmp_path):
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    unprepared = build_file(tmp_path / "unprepared.tflite", _reshape_to([1, 5]), signature=True)
    message = (
        r"LiteRT failed to prepare the ops of the .tflite file: .*num_input_elements != "
        r"num_output_elements \(4 != 5\); Node number 0 \(RESHAPE\) failed to prepare. "
        r"Received: path='.*unprepared.tflite'"
    )
    with pytest.raises(ValueError, match=message):
        tfkd.TFLiteModel(unprepared)
    with pytest.raises(ValueError, match=message):
        tfkd.export.litert_quantize(unprepared, tmp_path / "q.tflite", "dynamic_int8", x)
    # Runs one example at a time only (its RESHAPE's shape is a constant [1, 4]), as its
    # input's batch of 1 says: tfkd runs it so (LiteRT refused a batch of 8: 32 != 4).
    fixed = build_file(tmp_path / "fixed_batch.tflite", _reshape_to([1, 4]), signature=True)
    lite = tfkd.TFLiteModel(fixed)
    np.testing.assert_array_equal(lite.predict(x), x)
    assert lite.evaluate(x, np.argmax(x, axis=1))["accuracy"] == 1.0
    assert lite.benchmark(num_runs=2, warmup_runs=0)["num_runs"] == 2
    # The LiteRT quantizer calibrates on the whole batch itself.
    with pytest.raises(ValueError, match=r"LiteRT failed to run .*fixed_batch.tflite"):
        tfkd.export.litert_quantize(fixed, tmp_path / "q.tflite", "static_int8", x)
    # Fails each time it runs: its GATHER reads index 7 of 4.
    gather = _one_op(
        "GATHER", [([7], "int32")], x=(1, 4), options=[option_table("GatherOptions", axis=1)]
    )
    failing = build_file(tmp_path / "failing.tflite", gather, signature=True)
    lite = tfkd.TFLiteModel(failing)
    message = (
        r"LiteRT failed to run the .tflite file on a batch of shape \(1, 4\): gather index out "
        r"of bounds; Node number 0 \(GATHER\) failed to invoke. Received: path='.*failing.tflite'"
    )
    for call in (lambda: lite.predict(x[:1]), lambda: lite.benchmark(num_runs=2)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=r"LiteRT failed to run .*failing.tflite"):
        tfkd.export.litert_quantize(failing, tmp_path / "q.tflite", "dynamic_int8", x)


def _pack(count):
    """A PACK naming the graph's [1024, 256] float32 input `count` times, on axis -2 (of
    [count, 1024, 256]: the middle one), its output declared [1, 1]."""
    options = option_table("PackOptions", valuesCount=count, axis=-2)
    tensors = [("x", [1024, 256], "float32", None), ("y", [1, 1], "float32", None)]
    return (tensors, [("PACK", [0] * count, [1], options)], [0], [1])


def test_a_pack_is_sized_by_the_inputs_it_names(tmp_path):
    # With 1,040 copies (a 4,604-byte file) it passed, and LiteRT allocated [1040, 1024,
    # 256] float32 at load (1,090,519,040 bytes): the check had taken it as declared.
    check_file(build_file(tmp_path / "pack_1gib.tflite", _pack(1024)))  # 1 GiB: admitted
    with pytest.raises(
        ValueError,
        match=r"op 0 \(PACK\) of subgraph 0 makes tensor 1 \('y'\) of shape \[1024, 1025, 256\] "
        r"of float32: 1074790400 bytes for one example.*at most 1073741824",
    ):
        check_file(build_file(tmp_path / "pack.tflite", _pack(1025)))


class _Unreadable:
    """A file whose `read` runs out of memory, as 7 GB would on a smaller machine."""

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False

    def read(self):
        raise MemoryError


def test_a_file_without_inputs_or_past_memory_is_refused_with_its_path(tmp_path, monkeypatch):
    # No inputs: an IndexError. 7 GB that memory cannot hold: the bare MemoryError.
    constant = ("c", [1, 2], "float32", np.ones((1, 2), "float32"))
    graph = ([constant, ("o", [1, 2], "float32", None)], [("ADD", [0, 0], [1])], [], [1])
    path = build_file(tmp_path / "no_inputs.tflite", graph)
    with pytest.raises(ValueError, match=r"with 0 inputs and 1 outputs.*no_inputs.tflite"):
        tfkd.TFLiteModel(path)
    # Files past 2 GiB are real (the converter stores large buffers after the flatbuffer):
    # one that does not fit in memory is named.
    large = tmp_path / "large.tflite"
    with open(large, "wb") as file:
        file.write(b"\x1c\x00\x00\x00TFL3")
        file.truncate(7 * 10**9)
    real_open = open
    monkeypatch.setattr(
        "builtins.open",
        lambda path, *a, **k: (
            _Unreadable() if str(path) == str(large) else real_open(path, *a, **k)
        ),
    )
    with pytest.raises(ValueError, match=r"its 7000000000 bytes do not fit in .*memory.*large"):
        tfkd.TFLiteModel(large)
