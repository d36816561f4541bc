"""`export_tflite` and `TFLiteModel`, checked against the Keras models they came from."""

import os
import pathlib
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_tflite_agrees, random_images, small_cnn, string_op_model

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


@pytest.fixture(scope="module")
def fashion_mnist():
    (x_train, _), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    return (
        x_train[:300, ..., None].astype("float32"),
        x_test[:2000, ..., None].astype("float32"),
        y_test[:2000],
    )


@pytest.fixture(scope="module")
def teacher():
    return keras.saving.load_model(TEACHER)


def test_float_export_matches_keras_on_fashion_mnist(tmp_path, teacher, fashion_mnist):
    _, x_test, y_test = fashion_mnist
    report = tfkd.export_tflite(teacher, tmp_path / "teacher.tflite")
    lite = tfkd.TFLiteModel(report.path)
    assert_tflite_agrees(teacher, lite, x_test[:500], atol=1e-3, top1=1.0)
    keras_accuracy = np.mean(teacher.predict(x_test, verbose=0).argmax(-1) == y_test)
    assert lite.evaluate(x_test, y_test)["accuracy"] == pytest.approx(keras_accuracy, abs=1e-3)
    assert report.keras_agreement["top1_agreement"] == 1.0
    assert report.ops["CONV_2D[float32]"] == 5


def test_a_model_that_outputs_class_ids_exports_with_builtin_ops(tmp_path, teacher, fashion_mnist):
    # Before: "TFLite conversion failed on op(s) tf.BitwiseAnd": Keras's argmax on floats
    # moves -0.0 below +0.0 with a bitwise AND, which only the Flex delegate runs.
    _, x_test, y_test = fashion_mnist
    inputs = keras.Input(teacher.input_shape[1:])
    logits = teacher(inputs)
    ids = keras.Model(inputs, keras.ops.argmax(logits, axis=-1))
    report = tfkd.export_tflite(ids, tmp_path / "ids.tflite", representative_data=x_test[:100])
    assert report.ops["ARG_MAX[float32]"] == 1 and report.keras_agreement["top1_agreement"] == 1
    got = tfkd.TFLiteModel(report.path).predict(x_test)
    np.testing.assert_array_equal(got, ids.predict(x_test, verbose=0))
    with pytest.raises(ValueError, match=r"one value per example \(class ids, or one score\?\)"):
        tfkd.TFLiteModel(report.path).evaluate(x_test, y_test)  # before: about y_pred of shape ()
    # argmin too, with keepdims, over every axis (axis=None) as over one.
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    lowest = keras.Model(
        dense.inputs,
        [
            keras.ops.argmin(dense.outputs[0], axis=1, keepdims=True),
            keras.ops.argmax(dense.outputs[0], keepdims=True),
        ],
    )
    report = tfkd.export_tflite(lowest, tmp_path / "lowest.tflite")
    assert report.ops["ARG_MIN[float32]"] == 1 and report.ops["ARG_MAX[float32]"] == 1
    x = np.random.default_rng(0).normal(size=(1, 6)).astype("float32")
    got = tfkd.TFLiteModel(report.path).predict(x)
    for received, expected in zip(got, lowest.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(received, expected)
    # On half floats, widened first (as Keras does): LiteRT's ARG_MAX takes float32.
    half = keras.Model(dense.inputs, keras.ops.argmax(keras.ops.cast(dense.outputs[0], "float16")))
    report = tfkd.export_tflite(half, tmp_path / "half.tflite")
    assert report.ops["ARG_MAX[float32]"] == 1


def test_flatten_and_reshape_export_as_one_reshape_for_any_batch(tmp_path):
    # Before: Keras's layers read the open batch size from the tensor, so each came with a
    # SHAPE, a STRIDED_SLICE and a PACK (4 of each here; the committed report of the
    # README's main command lists them among its TFLM ops).
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.Reshape((6, 24))(keras.layers.Flatten()(x))
    x = keras.layers.Reshape((2, -1))(x)  # (2, 72): the -1 resolved from the input's size
    outputs = keras.layers.Dense(3)(keras.layers.Reshape((-1,))(x))
    model = keras.Model(inputs, outputs)
    x, _ = random_images(16)
    for quantization in (None, "int8"):
        path = tmp_path / f"{quantization}.tflite"
        report = tfkd.export_tflite(model, path, quantization, representative_data=x)
        ops = {name.split("[")[0] for name in report.ops}
        assert not ops & {"SHAPE", "STRIDED_SLICE", "PACK"}, report.ops
        assert sum(n for name, n in report.ops.items() if name.startswith("RESHAPE")) == 1
        for batch in (1, 7):  # the file keeps an open batch
            got = tfkd.TFLiteModel(path).predict(x[:batch])
            assert got.shape == (batch, 3)
            np.testing.assert_allclose(got, model.predict(x[:batch], verbose=0), atol=0.1)
    # A channels-first Flatten, and sizes left open, keep Keras's own reshaping.
    inputs = keras.Input((4, 5, 6))
    first = keras.layers.Flatten(data_format="channels_first")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(first))
    report = tfkd.export_tflite(model, tmp_path / "first.tflite")
    assert_tflite_agrees(model, report.path, np.arange(240.0, dtype="float32").reshape(2, 4, 5, 6))
    inputs = keras.Input((None, 6))
    model = keras.Model(inputs, keras.layers.Reshape((-1, 3))(inputs))
    report = tfkd.export_tflite(model, tmp_path / "open.tflite")
    x = np.arange(24.0, dtype="float32").reshape(1, 4, 6)
    np.testing.assert_array_equal(tfkd.TFLiteModel(report.path).predict(x), x.reshape(1, 8, 3))


def test_3d_pools_export_as_2d_pools_without_flex(tmp_path):
    # Before: MaxPooling3D and AveragePooling3D exported TensorFlow's MaxPool3D and
    # AvgPool3D, which LiteRT runs only with the Flex delegate (the export was refused).
    rng = np.random.default_rng(0)
    inputs = keras.Input((9, 12, 10, 3))
    x = keras.layers.MaxPooling3D(2)(inputs)  # (4, 6, 5)
    x = keras.layers.AveragePooling3D((3, 2, 3), strides=(2, 1, 2), padding="same")(x)
    x = keras.layers.MaxPooling3D((2, 3, 1), strides=(1, 2, 1), padding="same")(x)
    x = keras.layers.AveragePooling3D((1, 2, 2), strides=1)(x)  # (2, 2, 2)
    first = keras.layers.MaxPooling3D((1, 2, 2), data_format="channels_first")
    outputs = first(keras.layers.Permute((4, 1, 2, 3))(x))  # (3, 2, 1, 1)
    model = keras.Model(inputs, [x, outputs])
    x = rng.normal(size=(5, 9, 12, 10, 3)).astype("float32")
    for quantization in (None, "int8"):
        path = tmp_path / f"{quantization}.tflite"
        report = tfkd.export_tflite(model, path, quantization, representative_data=x)
        kinds = {name.split("[")[0] for name in report.ops}
        assert {"MAX_POOL_2D", "AVERAGE_POOL_2D"} <= kinds, report.ops
        assert not report.float_ops or quantization is None, report.float_ops
        got, expected = tfkd.TFLiteModel(path).predict(x), model.predict(x, verbose=0)
        for received, wanted in zip(got, expected, strict=True):
            assert received.shape == wanted.shape
            step = (x.max() - x.min()) / 255  # the int8 input's scale
            atol = 1e-5 if quantization is None else 1.5 * step
            np.testing.assert_allclose(received, wanted, atol=atol)
    # As users write it: a Sequential never called, built by export on the data.
    pools = keras.Sequential([keras.layers.MaxPooling3D(2), keras.layers.AveragePooling3D(2)])
    report = tfkd.export_tflite(pools, tmp_path / "sequential.tflite", representative_data=x)
    kinds = {name.split("[")[0] for name in report.ops}
    assert kinds == {"AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE"}, report.ops
    assert_tflite_agrees(pools, report.path, x, atol=1e-5)


def test_time_distributed_and_dense_on_sequences_export_once_for_all_steps(tmp_path):
    # Before: TimeDistributed called its layer once per time step (4 CONV_2D here, with
    # STRIDED_SLICE, PACK and TRANSPOSE ops), and a Dense on a rank-3 input read its
    # shape at run time (SHAPE, GATHER, REDUCE_PROD, PACK).
    inputs = keras.Input((4, 8, 8, 1))
    x = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3, activation="relu"))(inputs)
    x = keras.layers.TimeDistributed(keras.layers.Flatten())(x)  # (4, 144)
    x = keras.layers.Dense(8, activation="relu")(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(5))(x)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(16, 4, 8, 8, 1)).astype("float32")
    for quantization in (None, "int8"):
        path = tmp_path / f"{quantization}.tflite"
        report = tfkd.export_tflite(model, path, quantization, representative_data=x)
        kinds = {name.split("[")[0]: n for name, n in report.ops.items()}
        assert kinds.get("CONV_2D") == 1 and kinds.get("FULLY_CONNECTED") == 3, report.ops
        assert not {"STRIDED_SLICE", "PACK", "TRANSPOSE", "SHAPE", "GATHER"} & set(kinds)
        for batch in (1, 7):  # the file keeps an open batch
            got, expected = tfkd.TFLiteModel(path).predict(x[:batch]), model(x[:batch])
            assert got.shape == (batch, 3)
            scale = 1e-5 if quantization is None else 0.05  # int8: about 6 output steps
            np.testing.assert_allclose(got, expected, atol=scale * np.abs(expected).max())
    # As users write it: a Sequential never called, built by export on the data.
    frames = keras.Sequential(
        [keras.layers.TimeDistributed(keras.layers.Conv2D(2, 3)), keras.layers.Dense(4)]
    )
    report = tfkd.export_tflite(frames, tmp_path / "sequential.tflite", representative_data=x)
    assert report.ops["CONV_2D[float32]"] == 1 and report.ops["FULLY_CONNECTED[float32]"] == 1
    assert_tflite_agrees(frames, report.path, x, atol=1e-5)

    # A layer of the user's own may mix the examples of its batch: it keeps Keras's call,
    # once per step (folded, this one's file disagreed with Keras and was refused).
    class Centered(keras.layers.Layer):
        def call(self, inputs):
            return inputs - keras.ops.mean(inputs, axis=0, keepdims=True)

        def compute_output_shape(self, input_shape):
            return input_shape

    inputs = keras.Input((4, 6))
    centered = keras.Model(inputs, keras.layers.TimeDistributed(Centered())(inputs))
    x = np.random.default_rng(1).normal(size=(5, 4, 6)).astype("float32")
    report = tfkd.export_tflite(centered, tmp_path / "centered.tflite")
    assert_tflite_agrees(centered, report.path, x, atol=1e-5)
    # Keras's own layers and ops mix them where told to: those keep Keras's call too
    # (folded, both files disagreed with Keras and were refused), where the same block
    # over its last axis folds.
    rows = keras.Input((6,))
    for axis, folds in ((0, False), (-1, True)):
        centered = keras.ops.mean(rows, axis=axis, keepdims=True)
        block = keras.Model(rows, keras.layers.Dense(5)(rows - centered))
        for wrapped in (block, keras.layers.Softmax(axis=axis)):
            model = keras.Model(inputs, keras.layers.TimeDistributed(wrapped)(inputs))
            report = tfkd.export_tflite(model, tmp_path / "mixing.tflite")
            assert ("STRIDED_SLICE[float32]" not in report.ops) is folds, report.ops
            assert_tflite_agrees(model, report.path, x, atol=1e-5)
    # At training (a thread that trains while another exports), Keras's call: a
    # BatchNormalization's statistics are each step's.
    from tfkd.export import _tracing

    norm = keras.layers.TimeDistributed(keras.layers.BatchNormalization())
    frames = x * np.arange(1, 5, dtype="float32")[:, None]  # steps of unlike scales
    keras_own = keras.ops.convert_to_numpy(norm(frames, training=True))
    with _tracing._time_steps_in_the_batch():
        folding = keras.ops.convert_to_numpy(norm(frames, training=True))
    np.testing.assert_allclose(folding, keras_own, atol=1e-5)


def test_tracing_for_the_converter_holds_off_other_threads(tmp_path):
    # While a model is traced, export replaces Keras's Embedding lookup and argmax in the
    # whole process; before, a second thread could export (and undo them) meanwhile.
    from tfkd import _kernels
    from tfkd.export import _tracing

    held = []

    class Probe(keras.layers.Layer):
        def call(self, inputs):
            def try_to_take():
                taken = _tracing._TRACING.acquire(blocking=False)
                held.append(not taken)
                if taken:
                    _tracing._TRACING.release()

            other = threading.Thread(target=try_to_take)
            other.start()
            other.join()
            return inputs

    from keras.src.backend.tensorflow import numpy as backend_numpy

    def replaced():
        return [
            keras.layers.Embedding.call,
            _kernels.take_rows,
            backend_numpy.argmax,
            backend_numpy.argmin,
            keras.layers.Flatten.call,
            keras.layers.Reshape.call,
            keras.layers.MaxPooling3D.call,
            keras.layers.AveragePooling3D.call,
            keras.layers.TimeDistributed.call,
            keras.layers.Dense.call,
        ]

    keras_own = replaced()
    model = keras.Sequential([keras.Input((6,)), Probe(), keras.layers.Dense(3)])
    tfkd.export_tflite(model, tmp_path / "probed.tflite")
    assert True in held  # while traced for the converter (Keras's own calls come after)
    assert replaced() == keras_own
    # The pools inherit their call: inherited again, not a copy set on the class.
    assert "call" not in vars(keras.layers.MaxPooling3D)
    assert "call" not in vars(keras.layers.AveragePooling3D)


def test_agreement_of_binary_scores_and_class_ids_is_on_the_class(tmp_path):
    # Before: the argmax of one score is 0 on both sides, so a binary classifier's file
    # always agreed (1.0), and ids of shape (samples,) agreed on all or none.
    x = np.random.default_rng(0).normal(size=(200, 6)).astype("float32")
    inputs = keras.Input((6,))
    logit = keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(inputs))
    sigmoid = keras.ops.sigmoid(logit)
    ids = keras.ops.argmax(keras.ops.concatenate([-logit, logit], -1), -1, keepdims=True)
    flipped_ids = keras.ops.argmax(keras.ops.concatenate([logit, -logit], -1), -1, keepdims=True)
    files = {}
    for name, output in (("logit", logit), ("sigmoid", sigmoid), ("ids", ids)):
        report = tfkd.export_tflite(keras.Model(inputs, output), tmp_path / f"{name}.tflite")
        files[name] = tfkd.TFLiteModel(report.path)
        assert report.keras_agreement["top1_agreement"] == 1.0, name
    flipped = [
        (files["logit"], keras.Model(inputs, -logit)),
        (files["sigmoid"], keras.Model(inputs, 1 - sigmoid)),
        (files["ids"], keras.Model(inputs, flipped_ids)),
    ]
    for lite, model in flipped:
        assert lite.compare(model, x)["top1_agreement"] == 0.0, model.outputs
    # The helper on its own: ids, scores after a sigmoid and after none (logits), where
    # the model does not say, several classes.
    same = tfkd.export._interpreter.top1_agreement
    assert same(np.array([1, 2, 3, 4]), np.array([1.0, 2.0, 0.0, 4.0])) == 0.75
    assert same(np.array([[0.2], [0.9]]), np.array([[0.6], [0.8]]), "sigmoid") == 0.5
    logits = np.array([0.1, 0.2, 0.3])  # in [0, 1], but logits: read at 0, not 0.5
    assert same(logits, -logits, None) == 0.0
    assert same(np.array([-1.0, 2.0, 0.3]), np.array([1.0, 2.0, -0.3])) == 1 / 3
    assert same(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0.4, 0.6], [0.4, 0.6]])) == 0.5


def test_int8_export_is_fully_integer_and_keeps_accuracy(tmp_path, teacher, fashion_mnist):
    x_train, x_test, y_test = fashion_mnist
    float_report = tfkd.export_tflite(teacher, tmp_path / "float.tflite")
    report = tfkd.export_tflite(
        teacher, tmp_path / "int8.tflite", quantization="int8", representative_data=x_train
    )
    assert report.float_ops == []
    assert report.ops["CONV_2D[int8]"] == 5 and report.ops["FULLY_CONNECTED[int8]"] == 1
    assert report.bytes < 0.3 * float_report.bytes
    float_accuracy = tfkd.TFLiteModel(float_report.path).evaluate(x_test, y_test)["accuracy"]
    int8_accuracy = tfkd.TFLiteModel(report.path).evaluate(x_test, y_test)["accuracy"]
    assert int8_accuracy >= float_accuracy - 0.01


def test_int8_inputs_and_outputs(tmp_path, teacher, fashion_mnist):
    x_train, x_test, y_test = fashion_mnist
    report = tfkd.export_tflite(
        teacher, tmp_path / "io.tflite", "int8", representative_data=x_train, io_dtype="int8"
    )
    lite = tfkd.TFLiteModel(report.path)
    assert lite.input_dtype == "int8"
    assert "QUANTIZE[float32]" not in report.ops
    assert lite.evaluate(x_test[:500], y_test[:500])["accuracy"] > 0.88


def test_int8_data_for_an_int8_input_is_not_quantized_again(tmp_path):
    x, y = random_images(64)
    model = small_cnn(4, "int8_io")
    path = tmp_path / "io.tflite"
    tfkd.export_tflite(model, path, "int8", representative_data=x, io_dtype="int8")
    lite = tfkd.TFLiteModel(path)
    scale, zero_point = lite._input["quantization"]
    quantized = np.clip(np.round(x / scale + zero_point), -128, 127).astype("int8")
    expected = lite.predict(x)
    # Before: the int8 values were divided by the scale again, and saturated.
    np.testing.assert_array_equal(lite.predict(quantized), expected)
    scores, expected_scores = lite.evaluate(quantized, y), lite.evaluate(x, y)
    assert (scores["accuracy"], scores["loss"]) == (
        expected_scores["accuracy"],
        expected_scores["loss"],
    )
    # Integers of another dtype are values, as Keras casts them: quantized as floats are.
    pixels = np.round(np.abs(x) * 2).astype("uint8")
    np.testing.assert_array_equal(lite.predict(pixels), lite.predict(pixels.astype("float32")))
    # compare gives Keras the values the int8 data stand for (before: the raw integers).
    dequantized = (quantized.astype("float32") - zero_point) * scale
    assert lite.compare(model, quantized) == lite.compare(model, dequantized)
    assert lite.compare(model, quantized)["top1_agreement"] >= 0.9


def test_benchmark_refuses_a_sample_that_is_not_one_example(tmp_path):
    x, _ = random_images(8)
    path = tmp_path / "m.tflite"
    tfkd.export_tflite(small_cnn(4, "m"), path)
    lite = tfkd.TFLiteModel(path)
    # Before: numpy's "cannot reshape array of size 512 into shape (1,8,8,1)".
    with pytest.raises(ValueError, match=r"`sample` must be one example .* shape \(8, 8, 8, 1\)"):
        lite.benchmark(num_runs=1, warmup_runs=0, sample=x)
    assert lite.benchmark(num_runs=1, warmup_runs=0, sample=x[0])["num_runs"] == 1


def test_every_mode_converts_and_shrinks_as_expected(tmp_path):
    x, _ = random_images(64, shape=(16, 16, 3))
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    sizes = {}
    for quantization in tfkd.export.QUANTIZATIONS:
        report = tfkd.export_tflite(
            model, tmp_path / f"{quantization}.tflite", quantization, representative_data=x
        )
        sizes[quantization] = report.bytes
        agreement = report.keras_agreement
        assert agreement["top1_agreement"] >= 0.9, (quantization, agreement)
    assert sizes["float16"] < 0.6 * sizes[None]
    assert sizes["dynamic"] < 0.4 * sizes[None]
    assert sizes["int8"] < 0.4 * sizes[None]
    assert sizes["int16x8"] < 0.4 * sizes[None]
    assert sorted(os.listdir(tmp_path)) == sorted(f"{q}.tflite" for q in tfkd.export.QUANTIZATIONS)


def test_representative_data_forms_give_the_same_file(tmp_path):
    import tensorflow as tf

    model = small_cnn(8, "calibrate")
    x, y = random_images(64)

    def generator():
        for start in range(0, 64, 16):
            yield x[start : start + 16]

    forms = {
        "numpy": x,
        "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
        "generator": generator(),
        "unbatched": tf.data.Dataset.from_tensor_slices(x),
    }
    contents = {}
    for name, data in forms.items():
        path = tmp_path / f"{name}.tflite"
        tfkd.export_tflite(model, path, "int8", representative_data=data)
        contents[name] = path.read_bytes()
    assert len(set(contents.values())) == 1


def test_verbose_prints_each_step_and_the_calibration_progress(tmp_path, capfd):
    model = small_cnn(8, "progress")
    x, _ = random_images(40)
    quiet = tfkd.export_tflite(model, tmp_path / "quiet.tflite", "int8", representative_data=x)
    assert capfd.readouterr().out == ""
    report = tfkd.export_tflite(
        model, tmp_path / "shown.tflite", "int8", representative_data=x, verbose=2
    )
    out = capfd.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("] ")[1].split(" ")[0] for line in steps] == [
        "Converting",
        "Converted:",
        "Checked:",
        "Written",
    ]
    assert "Calibrating on 40 samples" in out and "40/40" in out
    assert f"Converted: {report.bytes:,} bytes" in out
    assert (tmp_path / "shown.tflite").read_bytes() == (tmp_path / "quiet.tflite").read_bytes()
    assert quiet.bytes == report.bytes


def test_pruned_models_export_stripped_and_sparse(tmp_path):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256), keras.layers.Dense(10)])
    pruned = tfkd.prune.prune(model, tfkd.prune.ConstantSparsity(0.9, frequency=1))
    x = np.random.default_rng(0).normal(size=(32, 64)).astype("float32")
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit(x, np.zeros((32, 10)), epochs=1, verbose=0)
    sparse = tfkd.export_tflite(pruned, tmp_path / "sparse.tflite")
    dense_format = tfkd.export_tflite(pruned, tmp_path / "dense.tflite", sparsity=False)
    assert sparse.bytes < 0.5 * dense_format.bytes
    assert "DENSIFY[float32]" in sparse.ops or any(op.startswith("DENSIFY") for op in sparse.ops)
    stripped = tfkd.prune.strip(pruned)
    for path in (sparse.path, dense_format.path):
        assert_tflite_agrees(stripped, path, x, atol=1e-4)
    int8 = tfkd.export_tflite(pruned, tmp_path / "int8.tflite", "int8", representative_data=x)
    assert int8.float_ops == []


@pytest.mark.slow  # 97 s in CI; the JAX jobs export through the subprocess in test_qat.py
def test_export_from_the_jax_backend_runs_the_converter_in_a_subprocess(tmp_path):
    script = f"""
import numpy as np, keras, tfkd
from tests.helpers import assert_tflite_agrees
assert keras.backend.backend() == "jax"
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(3)])
x = np.random.default_rng(0).normal(size=(40, 6)).astype("float32")
report = tfkd.export_tflite(model, {str(tmp_path / "jax.tflite")!r})
assert_tflite_agrees(model, report.path, x, atol=1e-4)
print("AGREES")
"""
    environment = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,  # ends a hung run: 97 s in CI, 3.5 times that on slower machines
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "AGREES" in result.stdout


def test_bad_arguments_fail_early_with_clear_messages(tmp_path):
    model = small_cnn(4, "bad")
    with pytest.raises(ValueError, match=r"quantization.*Received: quantization='int4'"):
        tfkd.export_tflite(model, tmp_path / "m.tflite", quantization="int4")
    with pytest.raises(ValueError, match="representative_data=None"):
        tfkd.export_tflite(model, tmp_path / "m.tflite", quantization="int8")
    with pytest.raises(ValueError, match=r"io_dtype.*'float32'.*Received: io_dtype='int8'"):
        tfkd.export_tflite(model, tmp_path / "m.tflite", io_dtype="int8")
    with pytest.raises(TypeError, match="Keras 3 model"):
        tfkd.export_tflite("model.keras", tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        tfkd.TFLiteModel(tmp_path / "missing.tflite")
    assert not list(tmp_path.iterdir())


def test_a_python_lambda_off_tensorflow_is_refused_with_the_fix(tmp_path, monkeypatch):
    # Off TensorFlow the conversion subprocess reloads the model safely, so it cannot load
    # a Python lambda. Before: a minute later, Keras's advice to pass `safe_mode=False`,
    # which export_tflite does not take. The backend's name is all the check reads.
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda x: x * 2.0, name="double")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(doubled), name="with_lambda")
    with pytest.raises(
        ValueError,
        match=r"'jax' backend.*Received: model 'with_lambda' with Lambda layers \['double'\]"
        r".*KERAS_BACKEND=tensorflow",
    ):
        tfkd.export_tflite(model, tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())


def test_a_failed_reload_off_tensorflow_names_the_layers_it_cannot_load():
    from tfkd.export import tflite

    class Double(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((4,))
    named = keras.layers.Lambda(keras.ops.negative, name="negate")(Double(name="twice")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(named))
    # Before: no hint; Keras's own advice was to register the class, which the
    # subprocess would not import either.
    hint = tflite._subprocess_hint(model)
    assert "layers ['twice', 'negate']" in hint and "KERAS_BACKEND=tensorflow" in hint
    assert tflite._subprocess_hint(small_cnn(4, "plain")) == ""


def test_a_layer_without_a_builtin_kernel_is_named(tmp_path):
    model = string_op_model()
    with pytest.raises(ValueError, match=r"tf\.(AsString|StringToNumber).*select_tf_ops=True"):
        tfkd.export_tflite(model, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()
