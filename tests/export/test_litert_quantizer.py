"""`tfkd.export.litert_quantize` (issue 20): the bundled Fashion-MNIST CNN teacher quantized by
the LiteRT quantizer with each recipe, measured through `TFLiteModel` on real test images
against the float file and the converter's int8 file, with its per-tensor error report."""

import json

import keras
import numpy as np
import pytest

import tfkd
from tfkd.export import litert_quantizer

TEACHER = "saved_models/fashion_mnist_cnn_teacher/model.keras"


@pytest.fixture(scope="module")
def teacher():
    (x, _), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    model = keras.saving.load_model(TEACHER)
    return model, x[:256], x_test[:1000], y_test[:1000]


@pytest.fixture(scope="module")
def float_file(teacher, tmp_path_factory):
    """The teacher as a float32 file with a signature, which the quantizer runs."""
    from tfkd.export.tflite import float_with_signature

    path = tmp_path_factory.mktemp("float") / "float.tflite"
    path.write_bytes(float_with_signature(teacher[0]))
    return path


def _accuracy(path, teacher):
    return tfkd.TFLiteModel(path).evaluate(teacher[2], teacher[3])["accuracy"]


# Slow (`bash scripts/test.sh -m slow`): 45 s in CI; test_litert_export.py runs a recipe from a
# config.
@pytest.mark.slow
def test_every_recipe_keeps_the_accuracy_and_writes_its_error_report(teacher, float_file, tmp_path):
    floating = _accuracy(float_file, teacher)
    assert floating > 0.9
    converter = tfkd.export_tflite(teacher[0], tmp_path / "converter.tflite", "int8", teacher[1])
    results = {}
    for recipe in litert_quantizer.RECIPES:
        path = tmp_path / f"{recipe}.tflite"
        report = tfkd.export.litert_quantize(float_file, path, recipe, teacher[1])
        written = json.loads(litert_quantizer.error_report_path(path).read_text())
        assert written["recipe"] == recipe and written["samples"] == 32
        assert report.layer_errors["outputs"] == written["outputs"]
        (output,) = written["outputs"]
        assert output["cosine"] > 0.98 and output["mse"] < 2.0
        cosines = [row["cosine"] for row in written["tensors"]]
        assert len(cosines) > 10 and cosines == sorted(cosines)  # worst first
        results[recipe] = report.bytes, _accuracy(path, teacher), report
    float_bytes = float_file.stat().st_size
    for recipe, (size, accuracy, _) in results.items():
        assert size < float_bytes * (0.17 if "int4_weight" in recipe else 0.3), recipe
        loss = 0.025 if recipe == "int4_weight_only" else 0.01
        assert accuracy >= floating - loss, (recipe, accuracy, floating)
    # int4 weights take about half the bytes of int8 ones.
    assert results["int4_weight_only"][0] < 0.6 * results["int8_weight_only"][0]
    # Static int8 computes in int8 only, as the converter's; calibrated on the same
    # images by their minima and maxima, it scores as the converter's file does.
    assert results["static_int8"][2].float_ops == [] and converter.float_ops == []
    converter_accuracy = _accuracy(tmp_path / "converter.tflite", teacher)
    assert abs(results["static_int8"][1] - converter_accuracy) <= 0.005
    # Weight-only files compute in float from dequantized weights.
    assert "DEQUANTIZE[int8]" in results["int8_weight_only"][2].ops


def test_overrides_keep_layers_at_8_bits_and_integer_interfaces(teacher, float_file, tmp_path):
    int4 = tfkd.export.litert_quantize(
        float_file, tmp_path / "int4.tflite", "int4_weight_only", teacher[1]
    )
    kept = tfkd.export.litert_quantize(
        float_file,
        tmp_path / "kept.tflite",
        "int4_weight_only",
        teacher[1],
        overrides=[{"layers": "conv1_|logits", "recipe": "int8_weight_only"}],
    )
    assert int4.bytes < kept.bytes
    assert kept.layer_errors["overrides"][0]["layers"] == "conv1_|logits"

    def weight_error(report, layer):
        tensors = report.layer_errors["tensors"]
        return next(r["mse"] for r in tensors if layer in r["tensor"] and r["kind"] == "weight")

    assert weight_error(kept, "logits") < weight_error(int4, "logits") / 4
    floated = tfkd.export.litert_quantize(
        float_file,
        tmp_path / "floated.tflite",
        "static_int8",
        teacher[1],
        overrides=[{"layers": "logits", "recipe": "float"}],
        io_dtype="int8",
    )
    assert floated.float_ops == ["FULLY_CONNECTED"]
    lite = tfkd.TFLiteModel(tmp_path / "floated.tflite")
    assert lite.input_dtype == "int8"
    assert _accuracy(tmp_path / "floated.tflite", teacher) > 0.9


def test_a_keras_model_is_exported_with_a_signature_first(teacher, tmp_path):
    report = tfkd.export.litert_quantize(
        teacher[0], tmp_path / "m.tflite", "dynamic_int8", teacher[1][:64]
    )
    assert report.quantization == "litert_quantizer:dynamic_int8"
    assert _accuracy(tmp_path / "m.tflite", teacher) > 0.9


def test_files_it_cannot_quantize_are_refused(teacher, float_file, tmp_path):
    plain = tmp_path / "plain.tflite"
    tfkd.export_tflite(teacher[0], plain)  # tfkd's files have no signature
    with pytest.raises(ValueError, match="Pass the Keras model as `source`"):
        tfkd.export.litert_quantize(plain, tmp_path / "q.tflite", "dynamic_int8", teacher[1])
    quantized = tmp_path / "int8.tflite"
    tfkd.export_tflite(teacher[0], quantized, "int8", teacher[1])
    with pytest.raises(ValueError, match="this one is quantized already"):
        tfkd.export.litert_quantize(quantized, tmp_path / "q.tflite", "dynamic_int8", teacher[1])
    with pytest.raises(ValueError, match="names no op of the model. Received: 'conv9'"):
        tfkd.export.litert_quantize(
            float_file,
            tmp_path / "q.tflite",
            "int4_weight_only",
            teacher[1],
            overrides=[{"layers": "conv9", "recipe": "float"}],
        )
    assert not (tmp_path / "q.tflite").exists()
    # Before: the quantization ran, then writing to a folder failed (Device or resource busy).
    with pytest.raises(ValueError, match=r"`path` must name a file to write.*a directory"):
        tfkd.export.litert_quantize(float_file, tmp_path, "dynamic_int8", teacher[1])
    with pytest.raises(ValueError, match=r"`path` must name a file to write.*a directory"):
        tfkd.export.auto_quantize(teacher[0], tmp_path, teacher[2], teacher[3], teacher[1])
    with pytest.raises(TypeError, match=r"`path` must be the path of the \.tflite file.*int"):
        tfkd.export.auto_quantize(teacher[0], 5, teacher[2], teacher[3], teacher[1])


def test_a_sequential_never_called_is_built_on_the_data(tmp_path):
    model = keras.Sequential(
        [
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    x = np.random.default_rng(0).uniform(0, 1, (64, 28, 28, 1)).astype("float32")
    report = tfkd.export.litert_quantize(model, tmp_path / "q.tflite", "int8_weight_only", x)
    assert report.layer_errors["outputs"][0]["cosine"] > 0.99
    np.testing.assert_allclose(
        tfkd.TFLiteModel(tmp_path / "q.tflite").predict(x), model.predict(x, verbose=0), atol=0.05
    )
    fresh = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)])
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    summary = tfkd.export.auto_quantize(
        fresh, tmp_path / "auto.tflite", x, y, x, candidates=["int8", "float32"], latency_runs=2
    )
    assert set(summary["candidates"]) == {"float32", "int8"}
    assert (tmp_path / "auto.tflite").stat().st_size == summary["candidates"][summary["chosen"]][
        "bytes"
    ]


def test_a_text_model_with_float_inputs_is_checked_on_its_token_ids(tmp_path):
    # Never called, so Keras gives the Embedding float32 inputs; stand-in inputs (random
    # floats) would be negative ids, which LiteRT's gather refuses.
    model = keras.Sequential(
        [
            keras.layers.Embedding(500, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    ids = np.random.default_rng(0).integers(0, 500, (64, 20)).astype("int32")
    report = tfkd.export.litert_quantize(model, tmp_path / "q.tflite", "dynamic_int8", ids)
    assert report.layer_errors["outputs"][0]["cosine"] > 0.99
    np.testing.assert_allclose(
        tfkd.TFLiteModel(tmp_path / "q.tflite").predict(ids),
        model.predict(ids, verbose=0),
        atol=0.05,
    )


def test_a_model_with_several_outputs_keeps_their_order(tmp_path):
    # The file made through a SavedModel lists the outputs in another order than Keras
    # returned them (PartitionedCall:1, :3, :0, :2); read in file order, the check against
    # Keras refused every such model as a converter problem.
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    heads = [keras.layers.Dense(4, name=f"head_{name}")(hidden) for name in "zyxw"]
    model = keras.Model(inputs, heads)
    path = tmp_path / "heads.tflite"
    tfkd.export.litert_quantize(model, path, "dynamic_int8", x)
    expected = model.predict(x, verbose=0)
    got = tfkd.TFLiteModel(path).predict(x)
    assert len(got) == len(expected) == 4
    for position, ours in enumerate(got):
        errors = [np.abs(ours - other).max() for other in expected]
        assert int(np.argmin(errors)) == position and errors[position] < 0.05, errors
