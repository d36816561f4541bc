"""`export_tflite` and `TFLiteModel` on the models and data a new user passes (issue 14)."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_tflite_agrees, random_images, small_cnn


class Classifier(keras.Model):
    """A subclassed model, as Keras's guides write them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(3)

    def call(self, inputs):
        return self.dense(self.pool(self.conv(inputs)))


def _layers():
    return [
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ]


def _list_form():
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs))
    return keras.Model([inputs], [outputs])


def _called(model, x):
    model(x[:2])
    return model


# Every kind is also in tests/test_model_kinds.py; these are the ones whose inputs or
# outputs export reads differently (no `.inputs`, a list of outputs).
MODEL_KINDS = {
    "sequential_called_once": lambda x: _called(keras.Sequential(_layers()), x),
    "functional_list_form": lambda x: _list_form(),
    "subclassed_called_once": lambda x: _called(Classifier(), x),
}


def _subclassed_off_tensorflow(model, tmp_path):
    """Off TensorFlow, export converts in a subprocess that cannot import a user's class."""
    if not isinstance(model, Classifier) or keras.backend.backend() == "tensorflow":
        return False
    with pytest.raises(ValueError, match="Classifier.*KERAS_BACKEND=tensorflow"):
        tfkd.export_tflite(
            model, tmp_path / "m.tflite", "int8", representative_data=np.zeros((1, 8, 8, 1))
        )
    return True


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_model_kind_exports_and_runs_like_keras(tmp_path, kind):
    x, _ = random_images(32)
    model = MODEL_KINDS[kind](x)
    if _subclassed_off_tensorflow(model, tmp_path):
        return
    report = tfkd.export_tflite(model, tmp_path / "model.tflite")
    assert report.keras_agreement["top1_agreement"] == 1.0
    assert_tflite_agrees(model, report.path, x)


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_a_never_called_model_is_built_on_the_calibration_data(tmp_path, kind):
    x, _ = random_images(64)
    model = keras.Sequential(_layers()) if kind == "sequential" else Classifier()
    if _subclassed_off_tensorflow(model, tmp_path):
        return
    report = tfkd.export_tflite(model, tmp_path / "m.tflite", "int8", representative_data=x)
    assert report.keras_agreement["top1_agreement"] >= 0.9
    assert_tflite_agrees(model, report.path, x, tolerance=None, top1=0.9)


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_a_never_called_model_without_data_is_refused_with_the_fix(tmp_path, kind):
    model = keras.Sequential(_layers()) if kind == "sequential" else Classifier()
    with pytest.raises(ValueError, match=r"no input shape yet.*keras\.Input.*model\(x\[:1\]\)"):
        tfkd.export_tflite(model, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_a_never_called_sequential_with_a_wrapper_is_built_before_it_is_stripped(tmp_path):
    # Before, the strip read the unbuilt wrapper's kernel first: Keras's AttributeError ("You
    # must build the layer before accessing `kernel`") in place of tfkd's error, with or
    # without data to build it on.
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")

    def sequential():
        clustered = tfkd.cluster.ClusteredLayer(keras.layers.Dense(8, activation="relu"), 4)
        return keras.Sequential([clustered, keras.layers.Dense(3)])

    with pytest.raises(ValueError, match=r"no input shape yet"):
        tfkd.export_tflite(sequential(), tmp_path / "unbuilt.tflite")
    model = sequential()
    report = tfkd.export_tflite(model, tmp_path / "m.tflite", representative_data=x)
    assert_tflite_agrees(model, report.path, x)


def test_a_distiller_is_refused_with_export_its_student(tmp_path):
    distiller = tfkd.Distiller(teacher=small_cnn(8, "teacher"), student=small_cnn(4, "student"))
    with pytest.raises(TypeError, match=r"Received: model of type Distiller.*distiller\.student"):
        tfkd.export_tflite(distiller, tmp_path / "m.tflite")


@pytest.mark.parametrize("channel_axis", [True, False])
def test_int8_calibrates_a_float_model_on_uint8_images(tmp_path, channel_axis):
    # What `tfkd.datasets.load` returns: uint8 images, (N, 28, 28) without a channel axis.
    images = np.random.default_rng(0).integers(0, 256, size=(64, 8, 8), dtype=np.uint8)
    x = images[..., None] if channel_axis else images
    model = small_cnn(8, "uint8")
    report = tfkd.export_tflite(model, tmp_path / "m.tflite", "int8", representative_data=x)
    assert report.float_ops == []
    float_images = images[..., None].astype("float32")
    assert_tflite_agrees(
        model, report.path, x, tolerance=None, top1=0.95, keras_inputs=float_images
    )


def test_x_and_y_arrays_calibrate_on_x_alone(tmp_path):
    # Before: the pair was read as two batches; labels as long as a sample's features
    # became one more sample to calibrate on (and other labels a concatenate error).
    x = np.random.default_rng(0).normal(size=(8, 8)).astype("float32")
    y = np.arange(8) * 40  # labels far outside the inputs' range stretch a calibration
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    alone = tfkd.export_tflite(model, tmp_path / "x.tflite", "int8", representative_data=x)
    paired = tfkd.export_tflite(model, tmp_path / "xy.tflite", "int8", representative_data=(x, y))
    assert (tmp_path / "xy.tflite").read_bytes() == (tmp_path / "x.tflite").read_bytes()
    assert paired.bytes == alone.bytes


def test_int8_calibration_keeps_token_ids_integer(tmp_path):
    inputs = keras.Input((6,), dtype="int32")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    ids = np.random.default_rng(0).integers(0, 20, size=(64, 6))  # int64, as numpy makes them
    report = tfkd.export_tflite(model, tmp_path / "ids.tflite", "int8", representative_data=ids)
    lite = tfkd.TFLiteModel(report.path)
    assert lite.input_dtype == "int32"
    assert_tflite_agrees(model, lite, ids, tolerance=None, top1=0.9)


@pytest.mark.parametrize(
    "data, error, match",
    [
        (np.full((4, 8, 8, 1), 1e300), ValueError, r"256 values too large for float32.*1e\+300"),
        (
            np.concatenate([np.zeros((31, 8, 8, 1)), np.full((1, 8, 8, 1), 1e39)]),
            ValueError,
            r"64 values too large for float32.*1e\+39",
        ),
        (np.full((4, 8, 8, 1), None), TypeError, "of numbers.*dtype object"),
    ],
    ids=["huge", "one_huge_sample", "none"],
)
def test_calibration_data_float32_cannot_hold_is_refused(tmp_path, data, error, match):
    # Before: checked for NaN before the cast to the model's float32, so float64 values
    # beyond 3.4e38 became inf there and the converter crashed the process (SIGSEGV); an
    # object array of None was cast to NaN and calibrated on.
    with pytest.raises(error, match=f"`representative_data`.*{match}"):
        tfkd.export_tflite(small_cnn(4, "m"), tmp_path / "m.tflite", "int8", data)
    assert not (tmp_path / "m.tflite").exists()


def _pruned_cnn():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    pruned = tfkd.prune.prune(model, tfkd.prune.ConstantSparsity(0.8, 0))
    x, y = random_images(32)
    pruned.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    pruned.fit(x, y, epochs=1, verbose=0)
    return tfkd.prune.strip(pruned)


def test_a_sparse_int8_file_runs_on_the_builtin_kernels(tmp_path):
    model = _pruned_cnn()
    x, _ = random_images(64)
    report = tfkd.export_tflite(
        model, tmp_path / "sparse.tflite", "int8", representative_data=x, sparsity=True
    )
    lite = tfkd.TFLiteModel(report.path)
    assert lite.xnnpack is False  # XNNPACK cannot run sparse int8 kernels
    # Within 5% of the largest output, however small it is.
    assert_tflite_agrees(model, lite, x, tolerance=0.05, floor=0.0, top1=0.9)
    assert lite.benchmark(num_runs=3, warmup_runs=1)["median_ms"] > 0


def test_evaluate_refuses_labels_of_another_length(tmp_path):
    x, y = random_images(64)
    report = tfkd.export_tflite(small_cnn(4, "lengths"), tmp_path / "m.tflite")
    lite = tfkd.TFLiteModel(report.path)
    with pytest.raises(ValueError, match=r"Received: y of shape \(10,\) for 64 samples"):
        lite.evaluate(x, y[:10])
    with pytest.raises(ValueError, match=r"y of shape \(64, 3\)"):
        lite.evaluate(x, np.eye(3)[y])
    # Before: 0.9 was read as class 0, a batch size of -1 returned no output for 64
    # samples, and "yes" read as from_logits=True.
    with pytest.raises(TypeError, match=r"y with values that are not whole numbers, e\.g\. \[0\.9"):
        lite.evaluate(x, np.full(64, 0.9))
    with pytest.raises(TypeError, match="y with dtype <U1"):
        lite.evaluate(x, np.array(["a"] * 64))
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer.*-1"):
        lite.predict(x, batch_size=-1)
    with pytest.raises(TypeError, match="`from_logits` must be True or False.*'yes'"):
        lite.evaluate(x, y, from_logits="yes")
    import tensorflow as tf

    with pytest.raises(TypeError, match="`x` must be an array of inputs.*np.concatenate"):
        lite.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), None)
    assert lite.evaluate(x, y.astype("float32"))["accuracy"] == lite.evaluate(x, y)["accuracy"]


def test_predict_and_evaluate_refuse_nan_inputs(tmp_path):
    # Before: NaN examples were scored: their argmax (0) counted in the accuracy, and the
    # loss was nan.
    x, y = random_images(16)
    report = tfkd.export_tflite(small_cnn(4, "nan_inputs"), tmp_path / "m.tflite")
    lite = tfkd.TFLiteModel(report.path)
    with_nan = x.copy()
    with_nan[3, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x` holds 1 NaN or infinite values \(of 1024\)"):
        lite.predict(with_nan)
    with pytest.raises(ValueError, match="`x` holds 1 NaN or infinite values"):
        lite.evaluate(with_nan, y)
    too_large = x.astype("float64")
    too_large[0, 0, 0, 0] = 1e39
    with pytest.raises(ValueError, match=r"`x` holds 1 values too large for float32.*1e\+39"):
        lite.predict(too_large)
    assert lite.predict(x).shape == (16, 3)
    # Before: LiteRT failed to prepare the file ("UnsafeFileError"), and none gave [].
    with pytest.raises(ValueError, match=r"\[None, 8, 8, 1\].*\(8, 8, 1\).*add its batch axis"):
        lite.predict(x[0])
    with pytest.raises(
        ValueError, match=r"one or more inputs .*Received: x of shape \(0, 8, 8, 1\)"
    ):
        lite.predict(x[:0])
    assert lite.predict(x[:, :, :, 0]).shape == (16, 3)  # a channel axis of 1 is added


def test_evaluate_and_compare_refuse_a_file_that_computes_nan(tmp_path):
    # A file from another tool (TensorFlow's converter here) computes log(x): NaN for the
    # negative inputs. Before: evaluate scored their argmax (0), accuracy 1.0 on labels of
    # 0, and compare counted them as agreeing with Keras.
    import tensorflow as tf

    function = tf.function(tf.math.log).get_concrete_function(tf.TensorSpec((None, 3)))
    path = tmp_path / "log.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([function]).convert())
    lite = tfkd.TFLiteModel(path)
    x = np.array([[-1.0, 2.0, 3.0]] * 4 + [[1.0, 2.0, 3.0]] * 4, "float32")
    assert np.isnan(lite.predict(x)).sum() == 4  # predict gives the outputs as they are
    message = r"The file computes 4 NaN or infinite values \(of 24\) in its output 0"
    with pytest.raises(ValueError, match=message):
        lite.evaluate(x, np.zeros(8, int))
    keras_model = keras.Sequential([keras.Input((3,)), keras.layers.Activation("linear")])
    with pytest.raises(ValueError, match=message):
        lite.compare(keras_model, x)
    assert lite.evaluate(x[4:], np.full(4, 2))["accuracy"] == 1.0


def test_a_model_taking_strings_is_refused_with_what_to_export_instead(tmp_path):
    # Keras's "preprocessing inside the model": before, numpy's "data type 'string' not
    # understood", or, given strings to calibrate on, advice to cast them to float32.
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(["a b c", "b c d"])
    text = keras.Input((1,), dtype="string", name="text")
    ids = keras.layers.Flatten()(keras.layers.Embedding(20, 4)(vectorize(text)))
    model = keras.Model(text, keras.layers.Dense(3)(ids))
    message = r"must take numbers.*Received: model .* with string inputs \['text'\]"
    for options in ({}, {"select_tf_ops": True, "representative_data": np.array([["a b"]])}):
        with pytest.raises(ValueError, match=message):
            tfkd.export_tflite(model, tmp_path / "text.tflite", **options)
    assert not (tmp_path / "text.tflite").exists()


def test_io_dtype_takes_numpy_s_dtypes_as_their_names(tmp_path):
    # Before: np.int8 was refused while "int8" and np.dtype("int8") passed.
    x, _ = random_images(32)
    report = tfkd.export_tflite(
        small_cnn(4, "io"), tmp_path / "m.tflite", "int8", representative_data=x, io_dtype=np.int8
    )
    assert tfkd.TFLiteModel(report.path).input_dtype == "int8"
    with pytest.raises(ValueError, match=r"Received: io_dtype='int16'"):
        tfkd.export_tflite(small_cnn(4, "io"), tmp_path / "n.tflite", io_dtype=np.int16)
    # Named as given where it is no numpy dtype (numpy reads None and float as float64).
    for given in (None, float):
        with pytest.raises(ValueError, match=f"Received: io_dtype={given!r}"):
            tfkd.export_tflite(small_cnn(4, "io"), tmp_path / "n.tflite", io_dtype=given)
    # And the pipeline's export stage, which points to export_tflite for it.
    assert tfkd.pipeline.Export(quantization="int8", io_dtype=np.int8).io_dtype == "int8"


def _confident_softmax_model():
    model = small_cnn(8, "confident", softmax=True)
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 30, bias])
    return model


@pytest.mark.parametrize("io_dtype", ["float32", "int8"])
def test_evaluate_reads_an_int8_softmax_as_probabilities(tmp_path, io_dtype):
    x, _ = random_images(64)
    model = _confident_softmax_model()
    keras_probabilities = model.predict(x, verbose=0)
    labels = keras_probabilities.argmax(-1)
    report = tfkd.export_tflite(
        model, tmp_path / "m.tflite", "int8", representative_data=x, io_dtype=io_dtype
    )
    lite = tfkd.TFLiteModel(report.path)
    probabilities = lite.predict(x).astype(np.float64)
    # int8 probabilities are multiples of 1/256: rows sum to 1 only roughly.
    assert np.abs(probabilities.sum(-1) - 1).max() > 1e-3
    normalised = probabilities / probabilities.sum(-1, keepdims=True)
    picked = np.clip(normalised[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    result = lite.evaluate(x, labels)
    assert result["loss"] == pytest.approx(-np.mean(np.log(picked)), rel=1e-9)
    keras_loss = np.mean(-np.log(keras_probabilities[np.arange(len(labels)), labels]))
    assert result["loss"] == pytest.approx(keras_loss, abs=0.03)
    assert result["accuracy"] >= 0.9


def test_a_file_with_several_outputs_gives_them_all(tmp_path):
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = [keras.layers.Dense(3)(hidden), keras.layers.Dense(4, activation="softmax")(hidden)]
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(20, 5)).astype("float32")
    report = tfkd.export_tflite(model, tmp_path / "two.tflite")
    lite = tfkd.TFLiteModel(report.path)
    received = assert_tflite_agrees(model, lite, x, atol=1e-5, batch_size=8)
    assert len(received) == 2
    assert lite.compare(model, x)["max_abs_diff"] < 1e-5
    with pytest.raises(ValueError, match="2 outputs.*predict"):
        lite.evaluate(x, np.zeros(20, int))
    # Before: a raw numpy broadcast error, and agreement computed on NaN.
    other = keras.Model(inputs, [outputs[0], keras.layers.Dense(5)(hidden)])
    with pytest.raises(ValueError, match=r"Output 1 .* differ in shape: \(20, 5\) and \(20, 4\)"):
        lite.compare(other, x)
    broken = keras.Model(inputs, [outputs[0] * np.nan, outputs[1]])
    with pytest.raises(ValueError, match="keras_model's output 0` holds 60 NaN"):
        lite.compare(broken, x)


def test_evaluate_on_a_file_with_one_output_unit_says_to_threshold_predict(tmp_path):
    # Before: "A label or prediction is outside the 1 classes", on labels that were right.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    lite = tfkd.TFLiteModel(tfkd.export_tflite(model, tmp_path / "binary.tflite").path)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    with pytest.raises(ValueError, match="one output unit .*Call `predict\\(x\\)` and threshold"):
        lite.evaluate(x, np.ones(8, "int64"))
    assert lite.predict(x).shape == (8, 1)
