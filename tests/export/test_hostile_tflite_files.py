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


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc are Linux's")
def test_files_that_crashed_or_filled_the_process_are_refused_unallocated(files, tmp_path):
    folder = files[0]
    # The int8 file with its input given rank 64: LiteRT died of SIGSEGV loading it.
    rank = _mutant(folder / "int8.tflite", tmp_path / "rank64.tflite", _input_shape([1] * 64))
    # 1 GiB and 64 KiB of float32 that a 2 KB file declares for a hidden tensor: XNNPACK
    # allocated and touched all of it at load (16 GiB killed the process).
    huge = _mutant(folder / "float.tflite", tmp_path / "huge.tflite", _shape([8193, 32768]))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder / "float.tflite"), str(huge), str(rank)],
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    assert set(lines) == {"rank64.tflite", "huge.tflite"}, (
        f"the child ended with {result.returncode} after {lines}: {result.stderr[-1500:]}"
    )
    for name, expected in (
        ("rank64.tflite", "has a shape of rank 64; LiteRT's kernels take at most 8"),
        ("huge.tflite", "declares shape [8193, 32768] of float32: 1073872896 bytes"),
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
    # One byte short: what the check does not read is left to LiteRT's verifier, whose
    # refusal names the file too (it did not, for the readers besides TFLiteModel).
    short = tmp_path / "short.tflite"
    short.write_bytes(content[:-1])
    with pytest.raises(ValueError, match=r"LiteRT cannot read.*Flatbuffer.*short\.tflite"):
        tfkd.export.ExportReport.from_file(str(short))


def _check(path):
    _tflite_file.check(path.read_bytes(), OPEN_SIZE)


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
        _check(path)


def test_the_limits_admit_what_they_state(files, tmp_path):
    source = files[0] / "float.tflite"
    for name, edit in {
        "one_gib": _shape([GIB // 4]),
        "three_gib_more": _tensors(3, [GIB // 4]),
        "open_sizes_of_1_gib": _shape([1, 1, 2**23], [-1, -1, 2**23]),
        "rank8": _input_shape([1] * 8),
    }.items():
        _check(_mutant(source, tmp_path / f"{name}.tflite", edit))


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
