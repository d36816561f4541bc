"""The sizes `tfkd/export/_tflite_slices.py` gives the ops that take part of their input
(SLICE, STRIDED_SLICE, SPLIT, SPLIT_V, UNPACK, ARG_MAX, ARG_MIN, TOPK_V2, SHAPE), and
REVERSE_V2 and CUMSUM (their input's shape): on real exports each computed shape is the
one the file declares, and an output declared smaller than LiteRT makes no longer hides
what the ops after it make (that LiteRT makes the shapes computed:
`test_tflite_slice_litert.py`)."""

import keras
import numpy as np
import pytest

import tfkd
from tests.export.test_tflite_window_sizes import _computed
from tests.export.tflite_builder import build_file, check_file, option_table
from tests.helpers import assert_tflite_agrees

K = 2**14


def _parts_model():
    inputs = keras.Input((12, 10, 3))
    x = keras.layers.Cropping2D(((1, 2), (3, 1)))(inputs)
    x = x[:, 1:, ::2]  # a slice of a KerasTensor: no Lambda, so any backend exports it
    first, rest = keras.ops.split(x, [1], axis=-1)
    x = keras.ops.flip(first, axis=1) + keras.ops.sum(rest, axis=-1, keepdims=True)
    x = keras.ops.concatenate(keras.ops.unstack(x, axis=2), axis=-1)
    steps = keras.ops.cast(x * 4, "int32")  # a float argmax needs TF's BitwiseAnd
    extremes = keras.ops.argmax(steps, axis=-1) + keras.ops.argmin(steps, axis=1)[:, :1]
    values, _ = keras.ops.top_k(keras.layers.Flatten()(x), 3)
    return keras.Model(inputs, [keras.ops.cast(extremes, "float32"), values])


def _sequence_model():
    inputs = keras.Input((9, 4))
    x = keras.layers.Cropping1D((1, 2))(inputs)
    x = keras.ops.cumsum(keras.ops.split(x, 3, axis=1)[1], axis=1)
    gru = keras.layers.GRU(5, unroll=True, return_sequences=True)(x)
    lstm = keras.layers.LSTM(5, unroll=True)(x)
    attention = keras.layers.MultiHeadAttention(2, 4)(gru, gru)
    return keras.Model(inputs, [attention, lstm])


def _loop_model():  # recurrent layers not unrolled: WHILE loops, traced for one example
    inputs = keras.Input((6, 4))
    both = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True))(inputs)
    return keras.Model(inputs, [both, keras.layers.GRU(5)(inputs)])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slices")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    for name, model, shape in (
        ("parts", _parts_model(), (12, 10, 3)),
        ("sequence", _sequence_model(), (9, 4)),
        ("loop", _loop_model(), (6, 4)),
    ):
        tfkd.export_tflite(model, folder / f"{name}.tflite")
        x = rng.normal(size=(4, *shape)).astype("float32")
        assert_tflite_agrees(model, folder / f"{name}.tflite", x)
    return folder


def test_the_shapes_computed_for_real_exports_are_the_declared_ones(exports):
    for name, ops in {
        "parts": {"STRIDED_SLICE", "SPLIT_V", "REVERSE_V2", "UNPACK", "ARG_MAX", "ARG_MIN"},
        "sequence": {"STRIDED_SLICE", "SPLIT", "UNPACK", "SHAPE", "CUMSUM", "BATCH_MATMUL"},
    }.items():
        with pytest.MonkeyPatch.context() as monkeypatch:
            found = _computed((exports / f"{name}.tflite").read_bytes(), monkeypatch)
        assert ops <= {op for op, _, _ in found}, (name, found)
        wrong = [(op, made, declared) for op, made, declared in found if made != declared]
        assert not wrong, (name, wrong)
        if name == "parts":  # values and indices, of an open batch
            assert found[-2:] == [("TOPK_V2", [3], [3])] * 2, found
    # The WHILE loops of layers not unrolled pass the check (the fixture exported them)
    # with these ops in them, though the sizes their bodies are followed from are not
    # all the declared ones (a CONCATENATION of [13, 32, 32], declared [6, 1, 3]).
    with pytest.MonkeyPatch.context() as monkeypatch:
        found = _computed((exports / "loop.tflite").read_bytes(), monkeypatch)
    assert {"WHILE", "REVERSE_V2", "STRIDED_SLICE", "SPLIT"} <= {op for op, _, _ in found}


# A crafted op whose output, declared [1, 1], LiteRT makes [2**14, 1] from its input:
# an ADD of it and zeros of [1, n] makes [2**14, n] (1 GiB of float32 with n = 2**14),
# which the check took as [1, n] when it took the op's output as declared. LiteRT 2.3
# made that ADD [16384, 16384] at load for each of them but SLICE, whose kernel now
# refuses an output declared otherwise than it makes it (older kernels did not).
def _slice_input(shape=(K, 2), dtype="float32"):
    return [("x", list(shape), dtype, None)]


def _strided(**fields):
    return option_table("StridedSliceOptions", **fields)


PARTS = {
    "REVERSE_V2": (_slice_input((K, 1)) + [("axis", [1], "int32", [0])], [0, 1], 1, None),
    "CUMSUM": (_slice_input((K, 1)) + [("axis", [], "int32", 0)], [0, 1], 1, None),
    "SLICE": (
        _slice_input() + [("b", [2], "int32", [0, 0]), ("s", [2], "int32", [-1, 1])],
        [0, 1, 2],
        1,
        None,
    ),
    "STRIDED_SLICE": (
        _slice_input()
        + [("b", [2], "int32", [0, 0]), ("e", [2], "int32", [0, 1]), ("s", [2], "int32", [1, 1])],
        [0, 1, 2, 3],
        1,
        _strided(beginMask=1, endMask=1),
    ),
    "SPLIT": (
        [("axis", [1], "int32", [1])] + _slice_input(),
        [0, 1],
        2,
        option_table("SplitOptions", numSplits=2),
    ),
    "SPLIT_V": (
        _slice_input() + [("v", [2], "int32", [1, 1]), ("axis", [1], "int32", [-1])],
        [0, 1, 2],
        2,
        option_table("SplitVOptions", numSplits=2),
    ),
    "UNPACK": (_slice_input((K, 1, 2)), [0], 2, option_table("UnpackOptions", num=2, axis=2)),
    "ARG_MAX": (_slice_input((K, 1, 2)) + [("axis", [1], "int32", [2])], [0, 1], 1, None),
    "ARG_MIN": (_slice_input((K, 1, 2)) + [("axis", [1], "int32", [-1])], [0, 1], 1, None),
    "TOPK_V2": (_slice_input() + [("k", [], "int32", 1)], [0, 1], 2, None),
}


def _hidden(name, n):
    tensors, inputs, count, options = PARTS[name]
    kind = "int32" if name.startswith("ARG") else "float32"
    tensors = [*tensors, *[(f"y{i}", [1, 1], kind, None) for i in range(count)]]
    tensors += [("zeros", [1, n], kind, np.zeros((1, n))), ("z", [1, 1], kind, None)]
    outputs = list(range(len(tensors) - 2 - count, len(tensors) - 2))
    ops = [(name, inputs, outputs, *([options] if options is not None else []))]
    ops.append(("ADD", [outputs[0], len(tensors) - 2], [len(tensors) - 1]))
    return (tensors, ops, [0], [len(tensors) - 1])


@pytest.mark.parametrize("name", sorted(PARTS))
def test_an_output_declared_smaller_no_longer_hides_what_follows(tmp_path, name):
    check_file(build_file(tmp_path / "1gib.tflite", _hidden(name, K)))  # 1 GiB: admitted
    with pytest.raises(
        ValueError,
        match=r"op 1 \(ADD\) of subgraph 0 makes tensor \d+ \('z'\) of shape \[16384, 16385\] "
        r"of (float32|int32): 1073807360 bytes for one example",
    ):
        check_file(build_file(tmp_path / f"{name}.tflite", _hidden(name, K + 1)))


def _reversed_filter_conv(channels=258):
    """A CONV_2D of a [1, 1024, 1024, 1] input whose filter, a REVERSE_V2 of constant
    [channels, 1, 1, 1] ones, is declared [1, 1, 1, 1], as is its output."""
    tensors = [("x", [1, 1024, 1024, 1], "float32", None)]
    tensors += [("w0", [channels, 1, 1, 1], "float32", np.ones((channels, 1, 1, 1)))]
    tensors += [("axis", [1], "int32", [0]), ("w", [1, 1, 1, 1], "float32", None)]
    tensors += [("b", [channels], "float32", np.zeros(channels))]
    tensors += [("y", [1, 1, 1, 1], "float32", None)]
    options = option_table("Conv2DOptions", strideW=1, strideH=1)
    ops = [("REVERSE_V2", [1, 2], [3]), ("CONV_2D", [0, 3, 4], [5], options)]
    return (tensors, ops, [0], [5])


def test_a_reversed_filter_declared_smaller_is_sized(tmp_path):
    # It passed, and LiteRT allocated the CONV_2D's [1, 1024, 1024, 258] float32 output
    # at load (1,082,130,432 bytes), the filter declared [1, 1, 1, 1] by a 2,720-byte file.
    with pytest.raises(ValueError, match=r"op 1 \(CONV_2D\) .* of shape \[1, 1024, 1024, 258\]"):
        check_file(build_file(tmp_path / "filter.tflite", _reversed_filter_conv()))


def test_each_output_counts_to_the_total(tmp_path):
    # Three REVERSE_V2 of a 256 MiB input were counted as 12 bytes; 16 make 4.25 GiB.
    tensors = [("x", [2**26], "float32", None), ("axis", [1], "int32", [0])]
    tensors += [(f"y{i}", [1], "float32", None) for i in range(16)]
    ops = [("REVERSE_V2", [0, 1], [2 + i]) for i in range(16)]
    with pytest.raises(ValueError, match=r"\(4 GiB\) together.*op 14 \(REVERSE_V2\)"):
        check_file(build_file(tmp_path / "total.tflite", (tensors, ops, [0], [2])))


# Values that make an output past its input: a STRIDED_SLICE whose end is an offset
# from its begin (as LiteRT makes it), a SLICE from a negative begin (as older kernels
# made it; LiteRT 2.x refuses it) and a SPLIT_V of a negative size (counted as its
# absolute value; refused). Each makes 2**14 * n elements of a [1, 1] input.
PAST = {
    "SLICE": lambda n: (
        [("b", [2], "int32", [1 - K, 1 - n]), ("s", [2], "int32", [K, n])],
        None,
    ),
    "STRIDED_SLICE": lambda n: (
        [("b", [2], "int32", [0, 0]), ("e", [2], "int32", [K, n]), ("s", [2], "int32", [1, 1])],
        _strided(offset=True),
    ),
    "SPLIT_V": lambda n: (
        [("v", [1], "int32", [-K * n]), ("axis", [1], "int32", [0])],
        option_table("SplitVOptions", numSplits=1),
    ),
}


@pytest.mark.parametrize("name", sorted(PAST))
def test_values_that_make_an_output_past_its_input_count(tmp_path, name):
    def build(n):
        constants, options = PAST[name](n)
        x = (1,) if name == "SPLIT_V" else (1, 1)
        tensors = [*_slice_input(x), *constants, ("y", list(x), "float32", None)]
        op = (name, list(range(len(tensors) - 1)), [len(tensors) - 1])
        return (tensors, [op + ((options,) if options else ())], [0], [len(tensors) - 1])

    check_file(build_file(tmp_path / "1gib.tflite", build(K)))
    with pytest.raises(ValueError, match=rf"op 0 \({name}\) .* 1073807360 bytes for one example"):
        check_file(build_file(tmp_path / f"{name}.tflite", build(K + 1)))


def _computed_begin(n):
    """A STRIDED_SLICE of the graph's [2**14, 2] input, its begin a graph input (computed:
    LiteRT sizes it when it runs), declared [1, 1]; then an ADD of it and zeros of [1, n]."""
    tensors = _slice_input() + [("b", [2], "int32", None)]
    tensors += [("e", [2], "int32", [0, 0]), ("s", [2], "int32", [1, 1])]
    tensors += [("y", [1, 1], "float32", None), ("zeros", [1, n], "float32", np.zeros((1, n)))]
    tensors.append(("z", [1, 1], "float32", None))
    options = _strided(endMask=3)
    ops = [("STRIDED_SLICE", [0, 1, 2, 3], [4], options), ("ADD", [4, 5], [6])]
    return (tensors, ops, [0, 1], [6])


def test_an_output_sized_from_computed_values_is_taken_as_declared(tmp_path, monkeypatch):
    # LiteRT prepares the ops after it from its declared shape at load, and sizes it when
    # it runs (not counted, as every size computed then). Counted as its input's sizes, a
    # BERT backbone's position embeddings (a SLICE to the sequence's length) went on as
    # 2**33 elements, and tfkd refused its own int8 export of the model.
    graph = _computed_begin(K + 1)
    found = _computed(build_file(tmp_path / "computed.tflite", graph).read_bytes(), monkeypatch)
    assert found == [("STRIDED_SLICE", [1, 1], [1, 1]), ("ADD", [1, K + 1], [1, 1])]


def test_a_split_v_into_more_parts_than_a_shape_has_sizes_is_followed(tmp_path, monkeypatch):
    # keras.ops.split(x, 40) of a [40, 2] input: 40 size_splits, more values than the
    # check reads as a shape (4 a dimension), each a [1, 2] part.
    tensors = _slice_input((40, 2)) + [("v", [40], "int32", [1] * 40), ("axis", [], "int32", 0)]
    tensors += [(f"y{i}", [1, 1], "float32", None) for i in range(40)]
    options = option_table("SplitVOptions", numSplits=40)
    graph = (tensors, [("SPLIT_V", [0, 1, 2], list(range(3, 43)), options)], [0], [3])
    found = _computed(build_file(tmp_path / "split.tflite", graph).read_bytes(), monkeypatch)
    assert found == [("SPLIT_V", [1, 2], [1, 1])] * 40


def _split_unknown(n):
    """A SPLIT in two of a tensor whose shape the check does not know: 2 * 2**14 elements
    (a TILE of the [1, 2] input that a custom op, not modelled, keeps), then an ADD
    of a part and zeros of [1, n]."""
    tensors = _slice_input((1, 2)) + [("m", [2], "int32", [K, 1]), ("t", [1, 2], "float32", None)]
    tensors += [("r", [1, 2], "float32", None), ("axis", [], "int32", 1)]
    tensors += [("y0", [1, 1], "float32", None), ("y1", [1, 1], "float32", None)]
    tensors += [("zeros", [1, n], "float32", np.zeros((1, n))), ("z", [1, 1], "float32", None)]
    ops = [("TILE", [0, 1], [2]), ("CUSTOM", [2, 1], [3])]
    ops += [("SPLIT", [4, 3], [5, 6], option_table("SplitOptions", numSplits=2))]
    return (tensors, [*ops, ("ADD", [5, 7], [8])], [0], [8])


def test_the_parts_of_a_tensor_of_unknown_shape_share_its_elements(tmp_path):
    # Each part of a SPLIT in two holds half its input: counted whole, the ADD made of
    # one and [1, 2**14] counted 2 GiB, where it makes at most 1 GiB.
    check_file(build_file(tmp_path / "1gib.tflite", _split_unknown(K)))
    with pytest.raises(ValueError, match=r"op 3 \(ADD\) .* of up to 268451840 elements"):
        check_file(build_file(tmp_path / "over.tflite", _split_unknown(K + 1)))
