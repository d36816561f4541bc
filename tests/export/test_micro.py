"""`tfkd.export.micro_bundle` and `tfkd micro`: an int8 Fashion-MNIST CNN checked and
measured in the TFLM interpreter, its C files compiled and run with the system compiler."""

import io
import json
import re
import shutil
import subprocess

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import small_cnn
from tfkd import cli
from tfkd.export import micro

# What the test's stand-in for TFLM's header declares: only the methods of this model's
# ops, spelled as tflite-micro spells them, so a wrong name fails to compile.
RESOLVER_STUB = """
#pragma once
typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
namespace tflite {
template <unsigned int tOpCount>
class MicroMutableOpResolver {
 public:
  unsigned int added = 0;
  TfLiteStatus AddConv2D() { return Add(); }
  TfLiteStatus AddDequantize() { return Add(); }
  TfLiteStatus AddFullyConnected() { return Add(); }
  TfLiteStatus AddMean() { return Add(); }
  TfLiteStatus AddQuantize() { return Add(); }
 private:
  TfLiteStatus Add() { return ++added <= tOpCount ? kTfLiteOk : kTfLiteError; }
};
}  // namespace tflite
"""

MAIN = """
#include <cstdio>
#include "fashion_data.h"
#include "fashion_ops.h"
int main() {
  unsigned long sum = 0;
  for (unsigned int i = 0; i < fashion_data_len; ++i) {
    sum = (sum * 31 + fashion_data[i]) % 1000000007UL;
  }
  fashion_op_resolver resolver;
  TfLiteStatus status = fashion_register_ops(resolver);
  std::printf("%u %lu %u %d %u %d\\n", fashion_data_len, sum, resolver.added, status,
              fashion_arena_bytes, (int)(reinterpret_cast<unsigned long>(fashion_data) % 16));
  return 0;
}
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An int8 CNN trained briefly on Fashion-MNIST, its float twin, and test images."""
    folder = tmp_path_factory.mktemp("micro")
    (x, y), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x = x[:3000, :, :, None].astype("float32") / 255
    x_test = x_test[:300, :, :, None].astype("float32") / 255
    keras.utils.set_random_seed(0)
    model = small_cnn(8, "fashion", num_classes=10, input_shape=(28, 28, 1))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y[:3000], epochs=2, batch_size=64, verbose=0)
    int8, float32 = folder / "int8.tflite", folder / "float.tflite"
    tfkd.export_tflite(model, int8, quantization="int8", representative_data=x[:200])
    tfkd.export_tflite(model, float32)
    return int8, float32, x_test, y_test[:300]


def test_bundle_measures_the_smallest_arena_and_agrees_with_litert(exported, tmp_path):
    int8, _, x_test, _ = exported
    # Images without the channel axis, as tfkd.datasets gives them and TFLiteModel takes
    # them (before: TFLM's "Dimension mismatch", after the arena was measured).
    images = x_test[..., 0]
    summary = micro.micro_bundle(int8, tmp_path, images, name="fashion", arena_margin=0.25)
    assert summary["ops"] == ["CONV_2D", "DEQUANTIZE", "FULLY_CONNECTED", "MEAN", "QUANTIZE"]
    assert summary["flash_bytes"] == int8.stat().st_size
    measured = summary["measured_arena_bytes"]
    assert measured % 16 == 0 and micro._runs(str(int8), measured)[0]
    assert not micro._runs(str(int8), measured - 16)[0]  # the smallest that works
    assert summary["arena_bytes"] == -(-int(np.ceil(measured * 1.25)) // 16) * 16
    agreement = summary["agreement"]
    assert agreement["samples"] == 300 and agreement["top1"] >= 0.99
    assert agreement["max_abs_difference"] < 0.1
    written = json.loads((tmp_path / "micro.json").read_text())
    assert written == summary
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "fashion_data.cc",
        "fashion_data.h",
        "fashion_ops.h",
        "micro.json",
    ]


def test_the_c_files_compile_and_hold_the_model(exported, tmp_path):
    int8, _, _, _ = exported
    summary = micro.micro_bundle(int8, tmp_path, name="fashion")
    stub = tmp_path / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    stub.parent.mkdir(parents=True)
    stub.write_text(RESOLVER_STUB)
    (tmp_path / "main.cc").write_text(MAIN)
    compiler = shutil.which("g++") or shutil.which("c++")
    binary = tmp_path / "check"
    subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Werror", "-I", str(tmp_path), "-o", str(binary),
         str(tmp_path / "main.cc"), str(tmp_path / "fashion_data.cc")],
        check=True,
    )  # fmt: skip
    printed = subprocess.run([binary], capture_output=True, text=True, check=True).stdout.split()
    content = int8.read_bytes()
    checksum = 0
    for byte in content:
        checksum = (checksum * 31 + byte) % 1000000007
    expected = [len(content), checksum, 5, 0, summary["arena_bytes"], 0]
    assert [int(value) for value in printed] == expected


def test_float_models_unknown_ops_and_small_limits_are_refused(exported, tmp_path):
    int8, float32, _, _ = exported
    with pytest.raises(ValueError, match=r"compute in float: \['CONV_2D'"):
        micro.micro_bundle(float32, tmp_path)
    with pytest.raises(ValueError, match="arena_limit=1,000"):
        micro.micro_bundle(int8, tmp_path, arena_limit=1000)
    assert not (tmp_path / "micro.json").exists()
    keras.utils.set_random_seed(0)
    gelu = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="gelu")])
    path = tmp_path / "gelu.tflite"
    data = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    tfkd.export_tflite(gelu, path, quantization="int8", representative_data=data)
    with pytest.raises(
        ValueError, match=r"TFLM has no kernel for these ops of the model: \['GELU'"
    ):
        micro.micro_bundle(path, tmp_path)


def test_data_for_a_file_with_two_inputs_is_refused_before_the_arena(tmp_path):
    # Before: TFLiteModel refused the file itself; it now runs files with several inputs,
    # and the bundle's comparison feeds one.
    first, second = keras.Input((4,), name="first"), keras.Input((4,), name="second")
    two = keras.Model([first, second], keras.layers.Dense(3)(keras.layers.Add()([first, second])))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    path = tmp_path / "two.tflite"
    tfkd.export_tflite(two, path, quantization="int8", representative_data=[x, x])
    with pytest.raises(ValueError, match=r"`data` feeds the file's one input.*has 2"):
        micro.micro_bundle(path, tmp_path / "bundle", x)
    assert micro.micro_bundle(path, tmp_path / "bundle")["arena_bytes"] > 0


def test_flex_ops_are_refused(exported, tmp_path, monkeypatch):
    int8, _, _, _ = exported
    monkeypatch.setattr(micro._interpreter, "list_ops", lambda path: [("FlexErf", ["float32"])])
    with pytest.raises(ValueError, match=r"TensorFlow \(Flex\) ops.*FlexErf.*select_tf_ops"):
        micro.micro_bundle(int8, tmp_path)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "2model"}, ValueError, "name='2model'"),
        ({"name": "a-b"}, ValueError, "C identifier"),
        ({"arena_margin": -0.1}, ValueError, "arena_margin"),
        ({"arena_limit": 0}, ValueError, "arena_limit"),
        ({"data": np.array(["a", "b"])}, ValueError, "numeric array"),
        # Before: NaN examples agreed on both interpreters (argmax 0): top-1 1.0.
        ({"data": np.full((2, 28, 28, 1), np.nan)}, ValueError, "`data` holds 1568 NaN"),
        ({"data": np.zeros((2, 28, 27, 1))}, ValueError, r"input shape \(28, 28, 1\)"),
    ],
)
def test_bad_arguments_are_named(exported, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        micro.micro_bundle(exported[0], tmp_path, **kwargs)
    if kwargs == {"name": "2model"}:  # once: a directory that is a file, refused first
        (tmp_path / "taken").write_text("")
        with pytest.raises(ValueError, match="`directory` must be a folder .* it is a file"):
            micro.micro_bundle(exported[0], tmp_path / "taken")


def test_a_damaged_file_is_an_error_not_a_crash(exported, tmp_path):
    content = bytearray(exported[0].read_bytes())
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(content[: len(content) // 3]))
    with pytest.raises(ValueError):
        micro.micro_bundle(broken, tmp_path / "bundle")
    with pytest.raises(FileNotFoundError):
        micro.micro_bundle(tmp_path / "missing.tflite", tmp_path / "bundle")


def test_cli_writes_the_bundle_and_reports_errors(exported, tmp_path, capsys):
    int8, float32, x_test, _ = exported
    np.save(tmp_path / "x.npy", x_test[:50])
    status = cli.main(
        ["micro", str(int8), "--output", str(tmp_path / "b"), "--data", str(tmp_path / "x.npy")]
    )
    printed = capsys.readouterr().out
    assert status == 0 and "TFLM against LiteRT on 50 examples" in printed
    assert json.loads((tmp_path / "b" / "micro.json").read_text())["agreement"]["samples"] == 50
    assert cli.main(["micro", str(float32), "--output", str(tmp_path / "c")]) == 1
    assert "compute in float" in capsys.readouterr().err
    # Before: a bare "[Errno 2]", and a header declaring 8 TB was allocated.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    (tmp_path / "huge.npy").write_bytes(header.getvalue())
    for name, said in (("missing.npy", "cannot be read"), ("huge.npy", "8000000000000 bytes")):
        arguments = ["micro", str(int8), "--output", str(tmp_path / "d"), "--data"]
        assert cli.main([*arguments, str(tmp_path / name)]) == 1
        assert re.search(f"`--data` must be a .npy .*{said}.*{name}", capsys.readouterr().err)


class _Lookup(keras.layers.Layer):
    """A table looked up with `keras.ops.take`, which wraps negative ids with SELECT_V2."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(50, 8), initializer="uniform")

    def call(self, ids):
        return keras.ops.take(self.table, ids, axis=0)


def _text_model(lookup):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,), dtype="int32")
    x = keras.layers.GlobalMaxPooling1D()(lookup(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_an_op_tflm_cannot_run_is_named_not_taken_for_lack_of_memory(tmp_path):
    # ops.take's int32 SELECT_V2: TFLM's kernel takes int8, int16 and float32 only.
    ids = np.random.default_rng(0).integers(0, 50, size=(64, 12)).astype("int32")
    path = tmp_path / "text.tflite"
    tfkd.export_tflite(_text_model(_Lookup()), path, quantization="int8", representative_data=ids)
    with pytest.raises(
        ValueError, match=r"not for lack of arena memory: .*but got INT32; Node SELECT_V2"
    ):
        micro.micro_bundle(path, tmp_path / "bundle")


def test_embedding_students_run_on_tflm(tmp_path):
    # Export gathers an Embedding's ids as they are (token ids are never negative), so
    # the file has no SELECT_V2, and the text student of the tweets task runs on TFLM.
    original_call, original_take = keras.layers.Embedding.call, tfkd._kernels.take_rows
    rng = np.random.default_rng(0)
    text_cnn = tfkd.text.conv_classifier(500, 3, sequence_length=32, filters=16)
    ids = rng.integers(0, 500, (128, 32)).astype("int32")
    aware = tfkd.quantize.quantize_aware(text_cnn)  # wraps the Embedding: tfkd's lookup
    aware.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    aware.fit(ids, ids[:, 0] % 3, epochs=1, verbose=0)
    for name, model, x in [
        ("embedding", _text_model(keras.layers.Embedding(50, 8)), rng.integers(0, 50, (128, 12))),
        ("text_cnn", text_cnn, ids),
        ("text_cnn_qat", aware, ids),
    ]:
        x = x.astype("int32")
        path = tmp_path / f"{name}.tflite"
        tfkd.export_tflite(model, path, quantization="int8", representative_data=x)
        summary = micro.micro_bundle(path, tmp_path / name, x)
        assert "SELECT_V2" not in summary["ops"] and "GATHER" in summary["ops"]
        assert summary["agreement"]["top1"] >= 0.99
        expected = model.predict(x, verbose=0).argmax(-1)
        assert np.mean(tfkd.TFLiteModel(path).predict(x).argmax(-1) == expected) >= 0.95
    # Put back after tracing.
    assert keras.layers.Embedding.call is original_call
    assert tfkd._kernels.take_rows is original_take


def test_tflm_agreement_of_a_binary_classifier_is_on_its_class(tmp_path, monkeypatch):
    # One score per sample: before, the argmax of one value agreed (1.0) whatever TFLM
    # computed. The stand-in for TFLM here flips every score around 0.5.
    x = np.random.default_rng(0).normal(size=(200, 6)).astype("float32")
    inputs = keras.Input((6,))
    score = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8)(inputs))
    path = tmp_path / "binary.tflite"
    tfkd.export_tflite(keras.Model(inputs, score), path, "int8", representative_data=x)
    arena = micro.micro_bundle(path, tmp_path / "bundle", x)["measured_arena_bytes"]
    assert micro.compare(str(path), x, arena)["top1"] >= 0.95
    runs = micro._runs

    def flipping(path, arena, inputs=None, outputs=None):
        result = runs(path, arena, inputs, outputs)
        np.save(outputs, 1 - np.load(outputs))  # the file's output is float (DEQUANTIZE)
        return result

    monkeypatch.setattr(micro, "_runs", flipping)
    assert micro.compare(str(path), x, arena)["top1"] <= 0.05
