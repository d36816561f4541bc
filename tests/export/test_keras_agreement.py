"""`export_tflite` checks the file it made against the Keras model before writing it
(issue 16.11): every refusal is tested with a forced mismatch, and models whose input
sizes are left open are checked on stand-in inputs."""

import importlib

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_tflite_agrees, random_images, small_cnn
from tfkd._stand_ins import fewest_ids

tflite_module = importlib.import_module("tfkd.export.tflite")
check_module = importlib.import_module("tfkd.export._keras_check")


def _disagreeing(monkeypatch, change):
    """Makes the file's outputs, as the check reads them, `change(outputs)`."""
    run = check_module.Runner.run

    def changed(self, batch):
        return [change(output) for output in run(self, batch)]

    monkeypatch.setattr(check_module.Runner, "run", changed)


def test_a_float_file_that_disagrees_is_not_written(tmp_path, monkeypatch):
    model = small_cnn(4, "model")
    path = tmp_path / "model.tflite"
    assert tfkd.export_tflite(model, path).keras_agreement["max_abs_diff"] < 1e-4
    path.unlink()
    _disagreeing(monkeypatch, lambda output: output + 0.01)
    with pytest.raises(ValueError, match="float32 model disagrees with the Keras model"):
        tfkd.export_tflite(model, path)
    assert not path.exists()


def test_a_quantization_aware_file_that_disagrees_is_not_written(tmp_path, monkeypatch):
    x, y = random_images(64)
    model = tfkd.quantize.quantize_aware(small_cnn(4, "model"))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "qat.tflite"
    assert tfkd.export_tflite(model, path, "int8").keras_agreement["top1_agreement"] >= 0.9
    path.unlink()
    _disagreeing(monkeypatch, lambda output: -output)  # every top-1 class changes
    with pytest.raises(ValueError, match="int8 model disagrees with the quantization-aware"):
        tfkd.export_tflite(model, path, "int8")
    assert not path.exists()


def test_a_quantization_aware_file_is_refused_on_a_binary_class_not_on_one_raw_score(
    tmp_path, monkeypatch
):
    # One score after a sigmoid is a binary classifier's: a file flipping its class is
    # refused. One after no activation may be a regression's, whose sign int8 steps can
    # flip near 0: reported and warned about, and written.
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    flips = {"sigmoid": lambda output: 1 - output, None: lambda output: -output}
    for activation, flip in flips.items():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        score = keras.layers.Activation(activation)(keras.layers.Dense(1)(hidden))
        model = tfkd.quantize.quantize_aware(keras.Model(inputs, score))
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, (x[:, :1] > 0).astype("float32"), epochs=1, verbose=0)
        path = tmp_path / f"{activation}.tflite"
        with monkeypatch.context() as patches:
            _disagreeing(patches, flip)
            if activation == "sigmoid":
                with pytest.raises(ValueError, match="disagrees with the quantization-aware"):
                    tfkd.export_tflite(model, path, "int8")
                assert not path.exists()
                continue
            with pytest.warns(UserWarning, match=r"top-1 class on 0\.\d+ of 32 samples"):
                report = tfkd.export_tflite(model, path, "int8")
        assert path.exists() and report.keras_agreement["top1_agreement"] < 0.9


def test_post_training_quantization_reports_its_agreement_without_refusing(tmp_path):
    model = small_cnn(4, "model")
    x, _ = random_images(64)
    report = tfkd.export_tflite(model, tmp_path / "int8.tflite", "int8", representative_data=x)
    agreement = report.keras_agreement
    assert agreement["samples"] == 32 and 0.5 <= agreement["top1_agreement"] <= 1.0


@pytest.mark.parametrize("quantization", [None, "dynamic", "float16", "int8"])
def test_nan_weights_are_refused_before_converting(tmp_path, quantization):
    # Before: a NaN kernel gave dynamic, float16 and int8 files that were written with
    # top-1 agreement 1.0 (the argmax of NaN is 0 on both sides) and max_abs_diff nan.
    model = small_cnn(4, "model")
    kernel, bias = model.get_layer("logits").get_weights()
    kernel[0, 0] = np.nan
    model.get_layer("logits").set_weights([kernel, bias])
    x, _ = random_images(32)
    with pytest.raises(ValueError, match=r"NaN or infinite weights.*\['logits/kernel'\]"):
        tfkd.export_tflite(model, tmp_path / "m.tflite", quantization, representative_data=x)
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("quantization", [None, "dynamic", "float16", "int8"])
def test_a_file_computing_nan_is_not_written_whatever_the_quantization(
    tmp_path, monkeypatch, quantization
):
    # Before: a post-training quantized file computing NaN was written with its agreement
    # in the report (top-1 read from argmax 0, max_abs_diff nan).
    model = small_cnn(4, "model")
    x, _ = random_images(32)
    _disagreeing(monkeypatch, lambda output: np.full_like(output, np.nan))
    path = tmp_path / "m.tflite"
    mode = quantization or "float32"
    with pytest.raises(ValueError, match=f"exported {mode} file computes 96 NaN or infinite"):
        tfkd.export_tflite(model, path, quantization, representative_data=x)
    assert not path.exists()


def test_keras_outputs_that_overflow_are_refused_before_converting(tmp_path, monkeypatch):
    # Before: inputs near float32's largest value made the Keras outputs inf, and the int8
    # file was written with top-1 agreement 1.0 and max_abs_diff nan.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden), name="overflowing")

    def never(*args, **kwargs):
        raise AssertionError("converted a model whose outputs are not finite")

    monkeypatch.setattr(importlib.import_module("tfkd.export._convert"), "convert", never)
    monkeypatch.setattr(tflite_module, "_convert_in_subprocess", never)
    data = np.full((32, 8), 3e38, "float32") * np.linspace(0.9, 1, 32, dtype="float32")[:, None]
    with pytest.raises(ValueError, match="Keras model 'overflowing' computes 96 NaN or inf"):
        tfkd.export_tflite(model, tmp_path / "m.tflite", "int8", representative_data=data)
    assert not (tmp_path / "m.tflite").exists()


def test_open_input_sizes_are_checked_on_stand_in_inputs(tmp_path, monkeypatch):
    # Before: a model with an input size left open (None) was exported unchecked.
    inputs = keras.Input((None, None, 1))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(features))
    report = tfkd.export_tflite(model, tmp_path / "open.tflite")
    assert report.keras_agreement["samples"] == 32
    assert report.keras_agreement["max_abs_diff"] < 1e-4
    images = np.random.default_rng(1).random((2, 20, 24, 1), dtype=np.float32)
    assert_tflite_agrees(model, report.path, images, atol=1e-4)
    _disagreeing(monkeypatch, lambda output: output * 2.0 + 1.0)
    with pytest.raises(ValueError, match="float32 model disagrees"):
        tfkd.export_tflite(model, tmp_path / "open_bad.tflite")
    assert not (tmp_path / "open_bad.tflite").exists()


def test_an_embedding_inside_a_users_block_leaves_the_stand_in_inputs_normal():
    # A position embedding inside a user's block (keras.io's ViT `PatchEncoder`) reads
    # `arange`, not the model's input: the stand-ins stay normal floats, not token ids.
    class PatchEncoder(keras.layers.Layer):
        def __init__(self, patches, **kwargs):
            super().__init__(**kwargs)
            self.patches = patches
            self.projection = keras.layers.Dense(8)
            self.position = keras.layers.Embedding(patches, 8)

        def call(self, inputs):
            return self.projection(inputs) + self.position(keras.ops.arange(self.patches))

    inputs = keras.Input((16, 4))
    features = keras.layers.GlobalAveragePooling1D()(PatchEncoder(16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(features))
    assert fewest_ids(model) is None  # ids would make the stand-ins 0..15
    ids = keras.Input((16,))
    text = keras.Model(ids, keras.layers.Dense(3)(keras.layers.Embedding(50, 8)(ids)))
    assert fewest_ids(text) == 50


def test_open_sequence_length_of_token_ids_is_checked(tmp_path):
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(50, 8)(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(embedded))
    )
    report = tfkd.export_tflite(model, tmp_path / "text.tflite")
    assert report.keras_agreement is not None and report.keras_agreement["max_abs_diff"] < 1e-4


def test_a_masked_embedding_exports_without_representative_data(tmp_path):
    # The stand-in ids were all 0, all padding for mask_zero=True: the masked mean was
    # 0/0 and export refused the model as overflowing float32.
    inputs = keras.Input((12,), dtype="int32")
    embedded = keras.layers.Embedding(50, 8, mask_zero=True)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(embedded))
    model = keras.Model(inputs, outputs)
    report = tfkd.export_tflite(model, tmp_path / "masked.tflite")
    assert report.keras_agreement["max_abs_diff"] < 1e-4
    ids = np.random.default_rng(1).integers(1, 50, (20, 12))
    ids[:, 8:] = 0
    assert_tflite_agrees(model, tmp_path / "masked.tflite", ids.astype("int32"), tolerance=1e-5)


def test_token_ids_in_a_float_input_export_without_representative_data(tmp_path):
    # Keras's default Input dtype is float32; the check's normal stand-ins gave negative
    # ids, LiteRT's GATHER failed ("gather index out of bounds") and export refused.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Embedding(50, 8), keras.layers.GlobalAveragePooling1D()]
        + [keras.layers.Dense(3)]
    )
    report = tfkd.export_tflite(model, tmp_path / "text.tflite")
    assert report.keras_agreement["samples"] == 32
    assert report.keras_agreement["max_abs_diff"] < 1e-4
    ids = np.random.default_rng(1).integers(0, 50, (20, 10)).astype("float32")
    assert_tflite_agrees(model, tmp_path / "text.tflite", ids, tolerance=1e-5)


def _two_in_three_out():
    """Inputs named out of alphabetical order; outputs the converter lists in another order."""
    first, second = keras.Input((4,), name="zeta"), keras.Input((3,), name="alpha")
    joined = keras.layers.Concatenate()([first, second])
    outputs = [
        keras.layers.Dense(2, name="second_head")(joined),
        keras.layers.Dense(5, name="a_head")(joined),
        keras.layers.Dense(2, name="third")(joined),
    ]
    return keras.Model([first, second], outputs)


def test_several_inputs_and_outputs_are_checked_in_the_models_order(tmp_path, monkeypatch):
    # Before: skipped for several inputs; several outputs were compared in the file's
    # order, which is not always the model's.
    model = _two_in_three_out()
    report = tfkd.export_tflite(model, tmp_path / "multi.tflite")
    assert report.keras_agreement["samples"] == 32
    assert report.keras_agreement["max_abs_diff"] < 1e-4
    # The file is fed by input name, the model in its inputs' order.
    x = {"zeta": np.ones((2, 4), "float32"), "alpha": np.full((2, 3), 2.0, "float32")}
    received = assert_tflite_agrees(model, tmp_path / "multi.tflite", x, atol=1e-5)
    assert [r.shape for r in received] == [(2, 2), (2, 5), (2, 2)]
    _disagreeing(monkeypatch, lambda output: output + 0.5)
    with pytest.raises(ValueError, match="float32 model disagrees"):
        tfkd.export_tflite(model, tmp_path / "multi_bad.tflite")
    assert not (tmp_path / "multi_bad.tflite").exists()


def test_a_model_built_on_a_dict_of_inputs_exports_and_compares(tmp_path):
    # `keras.Model({"zeta": ..., "alpha": ...}, outputs)`, as named inputs are often
    # written. Before: the export called it on a list, which Keras refuses for a dict
    # ("The structure of `inputs` doesn't match"), with or without data.
    first, second = keras.Input((4,), name="zeta"), keras.Input((3,), name="alpha")
    joined = keras.layers.Concatenate()([keras.layers.Dense(5)(first), second])
    model = keras.Model({"zeta": first, "alpha": second}, keras.layers.Dense(3)(joined))
    rng = np.random.default_rng(0)
    x = {"zeta": rng.normal(size=(64, 4)), "alpha": rng.normal(size=(64, 3))}
    x = {name: array.astype("float32") for name, array in x.items()}
    expected = keras.ops.convert_to_numpy(model(x))
    for quantization, data in ((None, None), ("int8", x)):
        path = tmp_path / f"{quantization}.tflite"
        report = tfkd.export_tflite(model, path, quantization, representative_data=data)
        assert report.keras_agreement["top1_agreement"] >= 0.9
        lite = tfkd.TFLiteModel(path)
        atol = 1e-5 if quantization is None else 0.2
        np.testing.assert_allclose(lite.predict(x), expected, atol=atol)
        assert lite.compare(model, x)["max_abs_diff"] < atol


def test_tflitemodel_runs_a_file_with_several_inputs_fed_by_name(tmp_path):
    # Before: TFLiteModel refused any file with more than one input ("runs single-input
    # models"), so a two-input model's file could be exported but not evaluated.
    first, second = keras.Input((4,), name="zeta"), keras.Input((3,), name="alpha")
    joined = keras.layers.Concatenate()([first, second])
    model = keras.Model([first, second], keras.layers.Dense(3)(joined))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(40, 4)).astype("float32"), rng.normal(size=(40, 3)).astype("float32")]
    y = keras.ops.convert_to_numpy(keras.ops.argmax(model(x), -1))
    by_name = {"alpha": x[1], "zeta": x[0]}
    for quantization, io_dtype in ((None, "float32"), ("int8", "int8")):
        path = tmp_path / f"{quantization}.tflite"
        tfkd.export_tflite(model, path, quantization, representative_data=x, io_dtype=io_dtype)
        lite = tfkd.TFLiteModel(path)
        assert sorted(lite.input_names) == ["alpha", "zeta"]
        assert lite.input_dtype == [io_dtype, io_dtype]
        expected = keras.ops.convert_to_numpy(model(x))
        predicted = lite.predict(by_name, batch_size=16)  # batches across both inputs
        np.testing.assert_allclose(predicted, expected, atol=1e-5 if quantization is None else 0.1)
        accuracy = lite.evaluate(by_name, y)["accuracy"]
        assert accuracy == 1.0 if quantization is None else accuracy >= 0.85
        for given in (x, by_name):  # a list in the Keras model's order, or by name
            agreement = lite.compare(model, given)["top1_agreement"]
            assert agreement == 1.0 if quantization is None else agreement >= 0.85
        assert lite.benchmark(num_runs=3, warmup_runs=0)["num_runs"] == 3
        sample = {"zeta": x[0][0], "alpha": x[1][:1]}  # with or without the batch axis
        assert lite.benchmark(num_runs=3, warmup_runs=0, sample=sample)["median_ms"] > 0

    # Names TensorFlow does not keep (a space) or that a subclassed model lacks: the
    # file's names are its own, and a list is matched to them by position.
    class Joined(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(keras.ops.concatenate(inputs, axis=-1))

    spaced = [keras.Input((4,), name="z eta"), keras.Input((3,), name="alpha")]
    renamed = keras.Model(spaced, model(spaced))
    subclassed = Joined()
    subclassed(x)
    for other in (renamed, subclassed):
        other_lite = tfkd.TFLiteModel(tfkd.export_tflite(other, tmp_path / "other.tflite").path)
        assert other_lite.compare(other, x)["max_abs_diff"] < 1e-5
        named = dict(zip(other_lite.input_names, x))
        expected = keras.ops.convert_to_numpy(other(x))
        np.testing.assert_allclose(other_lite.predict(named), expected, atol=1e-5)
    # A file with one input takes a dict of its one name too.
    only = keras.Input((4,), name="only")
    single = keras.Model(only, keras.layers.Dense(2)(only))
    single_lite = tfkd.TFLiteModel(tfkd.export_tflite(single, tmp_path / "single.tflite").path)
    np.testing.assert_allclose(single_lite.predict({"only": x[0]}), single_lite.predict(x[0]))
    with pytest.raises(
        TypeError, match=r"dict from input name.*\['(alpha|zeta)', '(alpha|zeta)'\]"
    ):
        lite.predict(x)
    with pytest.raises(ValueError, match=r"one array for each input.*keys \['zeta'\]"):
        lite.predict({"zeta": x[0]})
    with pytest.raises(ValueError, match=r"as many examples.*'alpha': 39"):
        lite.evaluate({"zeta": x[0], "alpha": x[1][:39]}, y)
    with pytest.raises(ValueError, match=r"x\['alpha'\]. holds 40 NaN"):
        lite.predict({"zeta": x[0], "alpha": np.where(np.arange(3) == 1, np.nan, x[1])})


def test_a_quantized_file_that_mostly_disagrees_on_the_class_is_written_with_a_warning(tmp_path):
    # One output far below the others stretches the int8 output scale to about 4, and the
    # other logits (about 0.03) all round to 0: the file's top-1 class is the first one.
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(4)
    model = keras.Model(inputs, dense(inputs))
    kernel = np.random.default_rng(1).normal(size=(8, 4)).astype("float32") * 0.01
    dense.set_weights([kernel, np.array([0, 0, 0, -500.0], "float32")])
    with pytest.warns(UserWarning, match=r"gives the Keras model's top-1 class on 0\.\d+ of 32"):
        report = tfkd.export_tflite(model, tmp_path / "int8.tflite", "int8", x)
    assert report.keras_agreement["top1_agreement"] < 0.5  # before: written without a word
    assert (tmp_path / "int8.tflite").is_file()
